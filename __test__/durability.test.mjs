// Durability (issue 12): nothing is acknowledged before its sync returned, and a failed
// sync fails loudly. Syncs are made to fail with the test hook
// WORKFLOW_NATIVE_TEST_FAIL_SYNC=<text>[@<n>] (directory syncs whose path holds <text>
// fail with EIO, from the n-th on). On this project's disk (ext4) each commit syncs the
// directory changed last: for every write of the engine that is `events/`, so @n is the
// n-th commit: 1 = start()'s run creation, 2 = the first step's completion (its attempt —
// step_created + step_started — and run_started are answered before their sync and made
// durable by this same commit), 3 = the second step's completion.
import { dataDir } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'engine', 'durable-child.mjs')
const FAULT = /A storage fault stopped run/

/**
 * Runs the child on its own data directory; resolves with its stdout and stderr lines once
 * it exits — or once its stderr reports the storage fault that stops the run (then it is
 * killed: the run is parked in it, nothing more will happen).
 */
function runChild(dir, args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, ...args], {
      env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = []
    const err = []
    readline.createInterface({ input: p.stdout }).on('line', (l) => out.push(l))
    readline.createInterface({ input: p.stderr }).on('line', (l) => {
      err.push(l)
      if (FAULT.test(l)) p.kill('SIGKILL')
    })
    p.on('error', reject)
    p.on('close', (code, signal) => resolve({ out, err, code, signal }))
  })
}

function fresh(name) {
  const dir = path.join(dataDir, name)
  fs.mkdirSync(dir, { recursive: true })
  return { dir, side: path.join(dataDir, `${name}.side`) }
}
const sideLines = (side) => (fs.existsSync(side) ? fs.readFileSync(side, 'utf8').trim().split('\n').filter(Boolean) : [])
const runIdOf = (r) => r.out.find((l) => l.startsWith('STARTED '))?.slice(8)

async function statusOf(dir, runId) {
  const runFile = JSON.parse(fs.readFileSync(path.join(dir, 'runs', `${runId}.json`), 'utf8'))
  return runFile.status
}

test('start() rejects when the run it created cannot be synced: EIO naming the events directory', async () => {
  const { dir, side } = fresh('create-fails')
  const r = await runChild(dir, ['start'], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: 'events' })
  const line = r.out.find((l) => l.startsWith('START FAILED '))
  assert.ok(line, [...r.out, ...r.err].join('\n'))
  const e = JSON.parse(line.slice('START FAILED '.length))
  assert.equal(e.code, 'EIO')
  assert.equal(e.path, path.join(dir, 'events'))
  assert.match(e.message, /events/)
  assert.equal(runIdOf(r), undefined)
  assert.deepEqual(sideLines(side), [])
})

test("a step's completion that cannot be synced: the workflow never sees the result; a resume finishes the run", async () => {
  const { dir, side } = fresh('completion-fails')
  const a = await runChild(dir, ['start'], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: 'events@2' })
  const runId = runIdOf(a)
  assert.ok(runId, [...a.out, ...a.err].join('\n'))
  assert.ok(a.err.some((l) => FAULT.test(l)), a.err.join('\n'))
  assert.deepEqual(sideLines(side), ['ran 1'])
  assert.ok(!a.out.some((l) => l.startsWith('AFTER')), 'the workflow acted on an outcome that was not durable')
  assert.ok(!a.out.some((l) => l.startsWith('RESULT')))
  assert.equal(await statusOf(dir, runId), 'running')

  const b = await runChild(dir, ['resume', runId], { SIDE_LOG: side })
  assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
  assert.ok(b.out.includes('RESULT 3'), b.out.join('\n'))
  // the completion was written (only its sync failed), so the step is not run again
  assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
  assert.equal(await statusOf(dir, runId), 'completed')
})

test("the second step's completion that cannot be synced: the run stops after the first, the resume runs only the second", async () => {
  const { dir, side } = fresh('second-fails')
  const a = await runChild(dir, ['start'], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: 'events@3' })
  const runId = runIdOf(a)
  assert.ok(runId, [...a.out, ...a.err].join('\n'))
  assert.ok(a.err.some((l) => FAULT.test(l) || l.includes(path.join(dir, 'events'))), a.err.join('\n'))
  assert.ok(a.out.includes('AFTER 2'), a.out.join('\n'))
  assert.ok(!a.out.some((l) => l.startsWith('RESULT')), 'a result was reported although it was not durable')
  assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
  assert.equal(await statusOf(dir, runId), 'running')

  const b = await runChild(dir, ['resume', runId], { SIDE_LOG: side })
  assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
  assert.ok(b.out.includes('RESULT 3'), b.out.join('\n'))
  assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
})

test('WORKFLOW_NATIVE_SYNC=off: nothing is synced (the failing sync is never reached)', async () => {
  const { dir, side } = fresh('sync-off')
  const r = await runChild(dir, ['start'], {
    SIDE_LOG: side,
    WORKFLOW_NATIVE_SYNC: 'off',
    WORKFLOW_NATIVE_TEST_FAIL_SYNC: 'events',
  })
  assert.equal(r.code, 0, [...r.out, ...r.err].join('\n'))
  assert.ok(r.out.includes('RESULT 3'), r.out.join('\n'))
})
