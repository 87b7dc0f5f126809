// The workflows of the PostgreSQL engine tests (__test__/pg-engine.test.mjs) and, run as a
// script, a worker process executing them on the database named by the environment
// (WORKFLOW_TARGET_WORLD=@workflow/world-postgres, WORKFLOW_POSTGRES_URL).
//
// Imported: only the declarations (`steps`, `hooked`, `sleepy`), for a client process that
// starts runs and has no worker.
//
// Run: `node pg-worker-child.mjs` → startWorker({ leaseMs: LEASE_MS (1000), pollMs:
// POLL_MS (200) }), then "READY <ids resumed by the first pass>". Lines on stdin:
//   finish <runId>   → the step `hangAt` of that run (see below) may return, in this
//                      process, now and from then on
//   running          → prints "RUNNING <worker.running>"
//   stop             → worker.stop(), prints "STOPPED", exits 0
// Every attempt of a step of `steps` appends "<runId> <stepIndex> <LABEL>" to SIDE_LOG and
// prints "STEP <runId> <stepIndex>"; an attempt of the step `hangAt` (a workflow argument)
// prints "IN <runId> <stepIndex>" and waits for "finish <runId>" (a killed or stopped
// process never gets it); with FAIL_HANG=1 it then throws (a retryable error).
// onError prints "ERROR <name> <message>".
import fs from 'node:fs'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import wf from '../../workflow.js'

const main = process.argv[1] === fileURLToPath(import.meta.url)
const label = process.env.LABEL || String(process.pid)
const say = (line) => fs.writeSync(1, `${line}\n`)

const waiting = new Map() // stdin line -> [resolve]
const seen = new Set() // stdin lines received
const lineIs = (l) =>
  new Promise((r) => {
    if (!waiting.has(l)) waiting.set(l, [])
    waiting.get(l).push(r)
  })
/** Resolves once the line `l` was received (at once if it was already). */
const hadLine = (l) => (seen.has(l) ? Promise.resolve() : lineIs(l))

const st = wf.step('pg-engine-st', async (runId, acc, i, hangAt) => {
  fs.appendFileSync(process.env.SIDE_LOG, `${runId} ${i} ${label}\n`)
  say(`STEP ${runId} ${i}`)
  if (i === hangAt) {
    say(`IN ${runId} ${i}`)
    await hadLine(`finish ${runId}`)
    if (process.env.FAIL_HANG === '1') throw new Error(`attempt of step ${i} failed in ${label}`)
  } else {
    // a step takes a little while: the kill finds some in flight
    await new Promise((r) => setTimeout(r, 25))
  }
  return acc + i
})

/** `steps(n, hangAt?)`: four steps; returns n * 100 + 10. */
export const steps = wf.workflow(
  'pg-engine-steps',
  async (n, hangAt = 0) => {
    const runId = wf.getWorkflowMetadata().workflowRunId
    let acc = n * 100
    for (let i = 1; i <= 4; i++) acc = await st(runId, acc, i, hangAt)
    return acc
  },
)

const after = wf.step('pg-engine-after', async (what) => {
  fs.appendFileSync(process.env.SIDE_LOG, `after ${what} ${label}\n`)
  return what
})

/** `hooked(token)`: waits for a payload on the hook `token`; returns `{ token, payload }`. */
export const hooked = wf.workflow(
  'pg-engine-hooked',
  async (token) => {
    const hook = wf.createHook({ token })
    const payload = await hook
    await after(`hook ${token}`)
    return { token, payload }
  },
)

/** `sleepy(tag)`: sleeps an hour (wakeUp() ends it); returns `woke <tag>`. */
export const sleepy = wf.workflow(
  'pg-engine-sleepy',
  async (tag) => {
    await wf.sleep('1h')
    return await after(`woke ${tag}`)
  },
)

if (main) {
  const worker = wf.startWorker({
    leaseMs: Number(process.env.LEASE_MS || 1000),
    pollMs: Number(process.env.POLL_MS || 200),
    onError: (e) => say(`ERROR ${e.name} ${e.message}`),
  })
  readline.createInterface({ input: process.stdin }).on('line', (l) => {
    seen.add(l)
    for (const r of waiting.get(l) || []) r()
    waiting.delete(l)
    if (l === 'running') say(`RUNNING ${worker.running}`)
  })
  lineIs('stop').then(async () => {
    await worker.stop()
    say('STOPPED')
    process.exit(0)
  })
  say(`READY ${(await worker.ready).join(',')}`)
  // the worker's timers are unref'd: stdin keeps the process alive until it is killed
}
