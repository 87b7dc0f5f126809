// returnValue of a run that is still pending when it is asked for: it must resolve
// once the completion is written later, by this process or by another process.
import {
  createRun,
  completeRun,
  fingerprint,
  official,
  ours,
  world,
  dataDir,
  settle,
} from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const CHILD = fileURLToPath(new URL('./helpers/complete-run-child.mjs', import.meta.url))

function runChild(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`))))
  })
}

/** Tracks whether a promise has settled, without waiting for it. */
function track(promise) {
  const state = { settled: false }
  state.promise = promise.then(
    (v) => ((state.settled = true), { ok: true, value: v }),
    (e) => ((state.settled = true), { ok: false, error: e }),
  )
  return state
}

test('pending run completed later in this process (official world events.create)', async () => {
  const id = await createRun({ status: 'pending' })
  const mine = track(ours.getRun(id).returnValue)
  const theirs = track(official.getRun(id).returnValue)
  // A full round trip through ours: the pending run must not have settled returnValue.
  assert.equal(await ours.getRun(id).status, 'pending')
  assert.equal(mine.settled, false, 'returnValue settled while the run was still pending')

  const value = { done: true, at: new Date(5), list: [1, 'x', new Map([[1, new Set([2n])]])] }
  await world.events.create(id, { eventType: 'run_started', specVersion: 3 })
  assert.equal(await ours.getRun(id).status, 'running')
  assert.equal(mine.settled, false, 'returnValue settled while the run was only running')
  await completeRun(id, { value })

  const [m, t] = await Promise.all([mine.promise, theirs.promise])
  assert.equal(m.ok, true, `ours rejected: ${m.error}`)
  assert.equal(t.ok, true)
  assert.deepStrictEqual(fingerprint(m.value), fingerprint(t.value))
  assert.deepStrictEqual(fingerprint(m.value), fingerprint(value))
})

test('pending run completed later by a separate node process', { timeout: 30_000 }, async () => {
  const id = await createRun({ status: 'pending' })
  const mine = track(ours.getRun(id).returnValue)
  assert.equal(await ours.getRun(id).status, 'pending')
  assert.equal(mine.settled, false)

  await runChild(id, 'complete')
  const m = await mine.promise
  assert.equal(m.ok, true, `ours rejected: ${m.error}`)
  const theirs = await official.getRun(id).returnValue
  assert.deepStrictEqual(fingerprint(m.value), fingerprint(theirs))
  assert.equal(m.value.from, 'child process')
  assert.equal(m.value.n, 2n ** 70n)
  assert.ok(m.value.at instanceof Date)
})

test('pending run failed later by a separate node process rejects with WorkflowRunFailedError', { timeout: 30_000 }, async () => {
  const id = await createRun({ status: 'running' })
  const mine = track(ours.getRun(id).returnValue)
  assert.equal(await ours.getRun(id).status, 'running')
  assert.equal(mine.settled, false)
  await runChild(id, 'fail')
  const m = await mine.promise
  assert.equal(m.ok, false)
  assert.equal(m.error.name, 'WorkflowRunFailedError')
  assert.equal(m.error.message, `Workflow run "${id}" failed: failed in child`)
  assert.equal(m.error.cause.code, 'USER_ERROR')
})

test('pending run cancelled later rejects with WorkflowRunCancelledError', async () => {
  const id = await createRun({ status: 'running' })
  const mine = track(ours.getRun(id).returnValue)
  const theirs = track(official.getRun(id).returnValue)
  assert.equal(await ours.getRun(id).status, 'running')
  assert.equal(mine.settled, false)
  await world.events.create(id, { eventType: 'run_cancelled', specVersion: 3 })
  const [m, t] = await Promise.all([mine.promise, theirs.promise])
  assert.equal(m.ok, false)
  assert.equal(m.error.name, 'WorkflowRunCancelledError')
  assert.equal(m.error.message, t.error.message)
})

test('many concurrent waiters on the same pending run all resolve', async () => {
  const id = await createRun({ status: 'running' })
  const waiters = Array.from({ length: 25 }, () => track(ours.getRun(id).returnValue))
  const sameRun = ours.getRun(id)
  waiters.push(track(sameRun.returnValue), track(sameRun.returnValue))
  assert.equal(await sameRun.status, 'running')
  assert.ok(waiters.every((w) => !w.settled))
  await completeRun(id, { value: 'all of you' })
  const results = await Promise.all(waiters.map((w) => w.promise))
  for (const r of results) assert.deepEqual(r, { ok: true, value: 'all of you' })
})

test('a run that is deleted/unknown while waiting is not silently resolved', async () => {
  // Sanity: an unknown run rejects immediately (no endless wait) like the official.
  const r = await settle(() => ours.getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV').returnValue)
  assert.equal(r.ok, false)
  assert.equal(r.error.name, 'WorkflowRunNotFoundError')
})
