// One process of the PostgreSQL engine bench (see workers.mjs), on the database in
// WORKFLOW_POSTGRES_URL:
//
//   node bench/pg/worker-child.mjs worker   → a worker (startWorker); "READY" on stdout;
//                                             stdin "stop" drains and exits
//   node bench/pg/worker-child.mjs client <runs> → starts <runs> runs of `three` at once (no
//                                             worker here), waits for every returnValue,
//                                             prints one JSON line of timings
//   node bench/pg/worker-child.mjs one <tag> → starts one run of `blocking` (its step prints
//                                             "IN <tag>"), prints its id
process.env.WORKFLOW_TARGET_WORLD = '@workflow/world-postgres'
import readline from 'node:readline'
import { performance } from 'node:perf_hooks'

const { start } = (await import('../../index.js')).default
const { workflow, step, startWorker } = (await import('../../workflow.js')).default

const say = (line) => process.stdout.write(`${line}\n`)
const inc = step('inc', async (x) => x + 1)
export const three = workflow('bench-pg-three', async (x) => inc(await inc(await inc(x))))
const hold = step('hold', async (tag) => {
  say(`IN ${tag}`)
  await new Promise(() => {}) // until killed
})
const after = step('after', async () => 1)
export const blocking = workflow('bench-pg-blocking', async (tag) => {
  await hold(tag)
  return after()
})

const role = process.argv[2]
if (role === 'worker') {
  const worker = startWorker({ concurrency: Infinity, leaseMs: Number(process.env.LEASE_MS || 30000), pollMs: 200 })
  await worker.ready
  say('READY')
  readline.createInterface({ input: process.stdin }).on('line', async (line) => {
    if (line === 'stop') {
      await worker.stop()
      process.exit(0)
    }
  })
} else if (role === 'client') {
  const n = Number(process.argv[3])
  const t0 = performance.now()
  const lat = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const s = performance.now()
      const run = await start(three, [i])
      const v = await run.returnValue
      if (v !== i + 3) throw new Error(`run ${run.runId}: ${v}`)
      return performance.now() - s
    }),
  )
  say(JSON.stringify({ ms: performance.now() - t0, lat }))
  process.exit(0)
} else if (role === 'one') {
  const run = await start(blocking, [process.argv[3]])
  say(`RUN ${run.runId}`)
  process.exit(0)
}
