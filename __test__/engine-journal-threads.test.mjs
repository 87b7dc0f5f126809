// The engine's journal writer with more threads than this machine has cores
// (WORKFLOW_NATIVE_JOURNAL_THREADS=3): runs are spread over the threads by id. Every run
// still completes with its value, its events in the order the workflow made them, as the
// official World reads them; runs racing for one hook token from different threads leave
// exactly one holder.
import { official, ours, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import wf from '../workflow.js'

// read when the first journal writer starts (the first run below)
process.env.WORKFLOW_NATIVE_JOURNAL_THREADS = '3'

const { workflow, step, createHook } = wf

/** The run's events as the official World lists them (a run here has fewer than 20). */
const events = async (runId) => (await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc' } })).data

/** Names of this process's threads (Linux). */
function threadNames() {
  return fs.readdirSync('/proc/self/task').map((t) => {
    try {
      return fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim()
    } catch {
      return ''
    }
  })
}

test('many runs at once over three journal threads: values, per-run event order, the official reading', async () => {
  const add = step('add', async (acc, i) => acc + i)
  const sum = workflow('threads-sum', async (id, n) => {
    let acc = id * 1000
    for (let i = 1; i <= n; i++) acc = await add(acc, i)
    return acc
  })
  const n = 4
  const runs = await Promise.all(Array.from({ length: 150 }, (_, id) => ours.start(sum, [id, n])))
  const values = await Promise.all(runs.map((r) => r.returnValue))
  assert.deepEqual(
    values,
    runs.map((_, id) => id * 1000 + 10),
  )
  if (process.platform === 'linux') {
    const journals = threadNames().filter((t) => /^wfn-journal-\d+$/.test(t))
    assert.equal(journals.length, 3, `journal threads: ${journals.join(', ')}`)
  }
  // every run, as the official World lists it: the workflow's order, nothing else
  for (const run of runs) {
    const evs = await events(run.runId)
    const seq = evs.map((e) => e.eventType)
    const want = ['run_created', 'run_started']
    for (let i = 0; i < n; i++) want.push('step_created', 'step_started', 'step_completed')
    want.push('run_completed')
    assert.deepEqual(seq, want, run.runId)
    const steps = evs.filter((e) => e.eventType.startsWith('step_'))
    for (let i = 0; i < n; i++) {
      const [c, s, d] = steps.slice(3 * i, 3 * i + 3)
      assert.equal(c.correlationId, s.correlationId)
      assert.equal(c.correlationId, d.correlationId)
    }
    assert.equal(new Set(steps.map((e) => e.correlationId)).size, n)
  }
  const sample = await official.getRun(runs[77].runId)
  assert.equal(await sample.status, 'completed')
  assert.equal(await sample.returnValue, 77 * 1000 + 10)
})

test('runs racing for one hook token from different journal threads: exactly one holds it', async () => {
  const pairs = 12
  const waiter = workflow('threads-hook', async (token) => {
    const h = createHook({ token })
    try {
      return { got: await h }
    } catch (e) {
      return { error: e.name }
    }
  })
  for (let p = 0; p < pairs; p++) {
    const token = `threads-${process.pid}-${p}`
    const [a, b] = await Promise.all([ours.start(waiter, [token]), ours.start(waiter, [token])])
    let hook
    while (!(hook = await ours.getHookByToken(token).catch(() => undefined))) await new Promise((r) => setImmediate(r))
    assert.ok([a.runId, b.runId].includes(hook.runId))
    // the other run's hook conflicts
    const loser = hook.runId === a.runId ? b : a
    assert.deepEqual(await loser.returnValue, { error: 'HookConflictError' })
    await ours.resumeHook(token, { p })
    const winner = hook.runId === a.runId ? a : b
    assert.deepEqual(await winner.returnValue, { got: { p } })
  }
})

test('a WORKFLOW_NATIVE_JOURNAL_THREADS that is not 1–16 is reported, and the engine runs on the default', () => {
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-threads-env-'))
  try {
    const script = `
      const { start } = require('./index.js')
      const { workflow, step } = require('./workflow.js')
      const twice = step('twice', async (x) => x * 2)
      const w = workflow('threads-env', async (x) => twice(x))
      start(w, [21]).then((r) => r.returnValue).then((v) => console.log('value', v))
    `
    for (const bad of ['zero', '0', '17']) {
      const out = spawnSync(process.execPath, ['-e', script], {
        cwd: root,
        env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dir, WORKFLOW_NATIVE_JOURNAL_THREADS: bad },
        encoding: 'utf8',
      })
      assert.equal(out.status, 0, out.stderr)
      assert.match(out.stdout, /value 42/)
      assert.match(out.stderr, new RegExp(`WORKFLOW_NATIVE_JOURNAL_THREADS="${bad}" is not a number from 1 to 16`))
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
