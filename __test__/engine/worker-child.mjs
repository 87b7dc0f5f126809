// A child process for the worker tests (__test__/worker.test.mjs): workflows on the data
// directory in WORKFLOW_LOCAL_DATA_DIR, executed by startWorker().
//
//   node worker-child.mjs start [n]        → a worker, then `n` (default 1) runs of `relay`
//                                            started here: "STARTED <id>" each, then "RESULT <id> <v>"
//   node worker-child.mjs worker <id>...   → a worker: "READY <claimed ids>", then
//                                            "RESULT <id> <v>" for each id given
//
// Every attempt of a step appends "ran <i> <LABEL>" to SIDE_LOG. With HANG_AT=<i>, step i
// prints "IN <i>" and waits for a "finish" line on stdin (a killed process never gets it).
// A "stop" line on stdin calls worker.stop(), prints "STOPPED" once it resolved and exits.
// LEASE_MS sets the worker's lease time to live (default 1000); WORKER_CONCURRENCY its concurrency; each step records the most attempts
// running at once in this process as "max <k>" lines in SIDE_LOG.
import fs from 'node:fs'
import readline from 'node:readline'
import wf from '../../workflow.js'
import api from '../../index.js'

const say = (line) => fs.writeSync(1, `${line}\n`)
const label = process.env.LABEL || String(process.pid)
const lines = readline.createInterface({ input: process.stdin })
const waiting = new Map() // line -> [resolve]
lines.on('line', (l) => {
  for (const r of waiting.get(l) || []) r()
  waiting.delete(l)
})
const lineIs = (l) =>
  new Promise((r) => {
    if (!waiting.has(l)) waiting.set(l, [])
    waiting.get(l).push(r)
  })

let active = 0
const st = wf.step('st', async (acc, i) => {
  fs.appendFileSync(process.env.SIDE_LOG, `ran ${i} ${label}\n`)
  active++
  fs.appendFileSync(process.env.SIDE_LOG, `max ${active}\n`)
  try {
    if (String(i) === process.env.HANG_AT) {
      say(`IN ${i}`)
      await lineIs('finish')
    } else {
      await new Promise((r) => setTimeout(r, 5))
    }
  } finally {
    active--
  }
  return acc + i
})
const relay = wf.workflow('worker-relay', async () => {
  let acc = 0
  for (let i = 1; i <= 3; i++) acc = await st(acc, i)
  return acc
})

const worker = wf.startWorker({
  leaseMs: Number(process.env.LEASE_MS || 1000),
  pollMs: 50,
  concurrency: process.env.WORKER_CONCURRENCY ? Number(process.env.WORKER_CONCURRENCY) : undefined,
  onError: (e) => say(`ERROR ${e.name} ${e.message}`),
})
lineIs('stop').then(async () => {
  await worker.stop()
  say('STOPPED')
  // a server shutting down: the runs not finished here continue in another worker
  process.exit(0)
})

if (process.argv[2] === 'start') {
  await worker.ready
  const n = Number(process.argv[3] || 1)
  const runs = []
  for (let k = 0; k < n; k++) {
    const run = await api.start(relay, [])
    say(`STARTED ${run.runId}`)
    runs.push(run)
  }
  await Promise.all(runs.map(async (run) => say(`RESULT ${run.runId} ${await run.returnValue}`)))
} else {
  const claimed = await worker.ready
  say(`READY ${claimed.join(',')}`)
  await Promise.all(process.argv.slice(3).map(async (id) => say(`RESULT ${id} ${await api.getRun(id).returnValue}`)))
}
// a clean shutdown: leases released before the process ends
await worker.stop()
process.exit(0)
