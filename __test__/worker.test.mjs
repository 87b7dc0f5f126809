// startWorker() on the local data directory: several worker processes share one data
// directory; a killed worker's runs continue in another one with no completed step run
// again; stop() drains (the attempt in flight finishes and is written, no new attempt
// starts, the lease is released); concurrency bounds the runs a worker claims at once.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const child = path.join(here, 'engine', 'worker-child.mjs')
let root

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-worker-'))
})
after(() => fs.rmSync(root, { recursive: true, force: true }))

/** A child process with line-based output: `waitFor(re, n)` resolves with the n-th matching line. */
function spawnChild(dir, side, args, env = {}) {
  const p = spawn(process.execPath, [child, ...args], {
    env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dir, SIDE_LOG: side, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const out = []
  const err = []
  const waiters = []
  const check = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const lines = out.filter((l) => waiters[i].re.test(l))
      if (lines.length >= waiters[i].count) {
        waiters[i].resolve(lines[waiters[i].count - 1])
        waiters.splice(i, 1)
      }
    }
  }
  readline.createInterface({ input: p.stdout }).on('line', (l) => {
    out.push(l)
    check()
  })
  readline.createInterface({ input: p.stderr }).on('line', (l) => err.push(l))
  const closed = new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal })))
  closed.then(() => {
    for (const w of waiters.splice(0)) {
      w.reject(new Error(`child exited before printing ${w.re}:\n${[...out, ...err].join('\n')}`))
    }
  })
  return {
    proc: p,
    out,
    err,
    closed,
    send: (line) => p.stdin.write(`${line}\n`),
    /** The `count`-th line matching `re` (the first by default), once printed. */
    waitFor: (re, count = 1) =>
      new Promise((resolve, reject) => {
        waiters.push({ re, count, resolve, reject })
        check()
      }),
  }
}

function fresh(name) {
  const dir = path.join(root, name)
  fs.mkdirSync(dir, { recursive: true })
  return { dir, side: path.join(root, `${name}.side`) }
}
const ranLines = (side) =>
  fs
    .readFileSync(side, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('ran '))

function events(dir, runId) {
  const d = path.join(dir, 'events')
  return fs
    .readdirSync(d)
    .filter((f) => f.startsWith(`${runId}-`))
    .map((f) => JSON.parse(fs.readFileSync(path.join(d, f), 'utf8')))
    .sort((a, b) => (a.eventId < b.eventId ? -1 : 1))
}
const leaseFile = (dir, runId) => path.join(dir, '.workflow-native', 'leases', `${runId}.json`)

test('a SIGKILLed worker: its run continues in another worker from its log, no completed step run again', async () => {
  const { dir, side } = fresh('kill')
  const a = spawnChild(dir, side, ['start'], { LABEL: 'A', HANG_AT: '2' })
  const runId = (await a.waitFor(/^STARTED /)).slice(8)
  await a.waitFor(/^IN 2$/)
  // B starts while A is alive and executing: A's lease is live, B does not take the run
  const b = spawnChild(dir, side, ['worker', runId], { LABEL: 'B' })
  const ready = await b.waitFor(/^READY/)
  assert.equal(ready, 'READY ', 'a run leased by a live process is not claimed')
  a.proc.kill('SIGKILL')
  await a.closed
  // B claims it on a later pass (A's lease names a process that no longer exists)
  assert.equal(await b.waitFor(/^RESULT /), `RESULT ${runId} 6`)
  await b.closed
  // step 1 completed in A and is not run again; step 2 was in flight at the kill
  assert.deepEqual(ranLines(side), ['ran 1 A', 'ran 2 A', 'ran 2 B', 'ran 3 B'])
  const evs = events(dir, runId)
  assert.equal(evs.filter((e) => e.eventType === 'step_completed').length, 3)
  assert.equal(evs.filter((e) => e.eventType === 'step_started').length, 4)
  assert.equal(evs.at(-1).eventType, 'run_completed')
  assert.ok(!fs.existsSync(leaseFile(dir, runId)), 'the lease is released when the run ends')
  assert.ok(!b.out.some((l) => l.startsWith('ERROR')), b.out.join('\n'))
})

test('stop() drains: the attempt in flight finishes and is written, no new attempt starts, the lease is released', async () => {
  const { dir, side } = fresh('drain')
  const a = spawnChild(dir, side, ['start'], { LABEL: 'A', HANG_AT: '2' })
  const runId = (await a.waitFor(/^STARTED /)).slice(8)
  await a.waitFor(/^IN 2$/)
  a.send('stop')
  a.send('finish')
  await a.waitFor(/^STOPPED$/)
  assert.equal((await a.closed).code, 0)
  let evs = events(dir, runId)
  const types = evs.map((e) => e.eventType)
  // step 2's outcome was written; step 3 was never created
  assert.equal(types.filter((t) => t === 'step_completed').length, 2)
  assert.equal(types.filter((t) => t === 'step_created').length, 2)
  assert.ok(!types.includes('run_completed'))
  assert.ok(!fs.existsSync(leaseFile(dir, runId)), 'the lease was released on stop()')
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'runs', `${runId}.json`), 'utf8')).status, 'running')
  // another worker claims it at once (no lease to wait for) and finishes it
  const b = spawnChild(dir, side, ['worker', runId], { LABEL: 'B' })
  assert.equal(await b.waitFor(/^READY/), `READY ${runId}`)
  assert.equal(await b.waitFor(/^RESULT /), `RESULT ${runId} 6`)
  await b.closed
  assert.deepEqual(ranLines(side), ['ran 1 A', 'ran 2 A', 'ran 3 B'])
  evs = events(dir, runId)
  assert.equal(evs.at(-1).eventType, 'run_completed')
})

test('a process taken over while stopped writes nothing more for the run once it resumes (fencing)', async () => {
  const { dir, side } = fresh('fence')
  // A renews its lease only every 20 s: once it is stopped, nothing but the lease check
  // before each batch keeps it from writing when it resumes
  const a = spawnChild(dir, side, ['start'], { LABEL: 'A', HANG_AT: '2', LEASE_MS: '60000' })
  const runId = (await a.waitFor(/^STARTED /)).slice(8)
  await a.waitFor(/^IN 2$/)
  a.proc.kill('SIGSTOP')
  // B judges A's lease stale after its own 1 s without a heartbeat, takes the run over,
  // and is itself inside step 2
  const b = spawnChild(dir, side, ['worker', runId], { LABEL: 'B', HANG_AT: '2' })
  await b.waitFor(/^IN 2$/)
  // A resumes and its step 2 finishes: its outcome must not be written
  a.send('finish')
  a.proc.kill('SIGCONT')
  b.send('finish')
  assert.equal(await b.waitFor(/^RESULT /), `RESULT ${runId} 6`)
  assert.equal(await a.waitFor(/^RESULT /), `RESULT ${runId} 6`)
  await Promise.all([a.closed, b.closed])
  const ran = ranLines(side)
  assert.deepEqual(ran.slice(0, 3), ['ran 1 A', 'ran 2 A', 'ran 2 B'])
  assert.deepEqual(ran.slice(3), ['ran 3 B'], 'A went on after losing its lease')
  const evs = events(dir, runId)
  const started2 = evs.filter((e) => e.eventType === 'step_started').length
  assert.equal(started2, 4)
  assert.equal(evs.filter((e) => e.eventType === 'step_completed').length, 3)
  assert.equal(evs.at(-1).eventType, 'run_completed')
})

test('concurrency bounds the runs a worker claims at once; every run is finished', async () => {
  const { dir, side } = fresh('concurrency')
  // A starts 5 runs, each stuck in step 2, and is killed
  const a = spawnChild(dir, side, ['start', '5'], { LABEL: 'A', HANG_AT: '2' })
  await a.waitFor(/^STARTED /, 5)
  const ids = a.out.filter((l) => l.startsWith('STARTED ')).map((l) => l.slice(8))
  await a.waitFor(/^IN 2$/, 5)
  a.proc.kill('SIGKILL')
  await a.closed
  fs.writeFileSync(side, '') // count only B's attempts
  const b = spawnChild(dir, side, ['worker', ...ids], { LABEL: 'B', WORKER_CONCURRENCY: '2' })
  const ready = await b.waitFor(/^READY/)
  assert.ok(ready.slice(6).split(',').filter(Boolean).length <= 2, ready)
  for (const id of ids) assert.ok(await b.waitFor(new RegExp(`^RESULT ${id} 6$`)))
  await b.closed
  const lines = fs.readFileSync(side, 'utf8').split('\n')
  const max = Math.max(...lines.filter((l) => l.startsWith('max ')).map((l) => Number(l.slice(4))))
  assert.ok(max <= 2, `at most 2 runs at once, saw ${max}`)
  // each run: step 2 again (in flight at the kill) and step 3, never step 1
  const ran = lines.filter((l) => l.startsWith('ran '))
  assert.equal(ran.filter((l) => l === 'ran 1 B').length, 0)
  assert.equal(ran.filter((l) => l === 'ran 2 B').length, 5)
  assert.equal(ran.filter((l) => l === 'ran 3 B').length, 5)
})

test('startWorker(): options are checked; one worker per process', async () => {
  const { default: wf } = await import('../workflow.js')
  assert.throws(() => wf.startWorker({ concurrency: 0 }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => wf.startWorker({ concurrency: 1.5 }), { name: 'RangeError' })
  assert.throws(() => wf.startWorker({ leaseMs: 50 }), { name: 'RangeError' })
  assert.throws(() => wf.startWorker({ leaseMs: '1000' }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' })
  assert.throws(() => wf.startWorker({ onError: 1 }), { name: 'TypeError' })
  assert.throws(() => wf.startWorker(5), { name: 'TypeError' })
  const dir = fresh('options').dir
  process.env.WORKFLOW_LOCAL_DATA_DIR = dir
  const w = wf.startWorker({ concurrency: Infinity, leaseMs: 1000 })
  assert.throws(() => wf.startWorker(), { name: 'WorkflowRuntimeError' })
  assert.deepEqual(await w.ready, [])
  await w.stop()
  await w.stop() // idempotent
  const again = wf.startWorker()
  await again.stop()
})
