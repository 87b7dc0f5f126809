// workflow-native's embedded engine, end to end in one process: no compiler, no server.
// An order workflow with steps (one fails once and is retried), a live progress stream,
// a one-hour durable sleep skipped with wakeUp(), and an approval hook resumed from
// "outside" with resumeHook(). Everything is written to a local data directory in
// world-local's format: `npx workflow inspect runs` (official CLI) can read it.
//
//   npm run demo

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'workflow-native-engine-demo-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir // read at first use

const { workflow, step, sleep, createHook, getWritable, getStepMetadata, RetryableError, nextSleep } = (
  await import('../workflow.js')
).default
const { start, resumeHook } = (await import('../index.js')).default

const t0 = performance.now()
const stamp = () => `+${(performance.now() - t0).toFixed(1).padStart(7)} ms`

// ---------------------------------------------------------------- the workflow
const progress = step('progress', async (message) => {
  const writer = getWritable().getWriter()
  await writer.write({ message, at: new Date() })
  writer.releaseLock()
})

const reserveStock = step('reserve-stock', async (items) => {
  const { attempt } = getStepMetadata()
  if (attempt === 1) throw new RetryableError('warehouse busy', { retryAfter: 50 })
  return items.map((i) => ({ ...i, reserved: true }))
})

const charge = step('charge', async (amount) => ({ chargeId: `ch_${amount * 100}`, amount }))

const closeStream = step('close-stream', async () => {
  await getWritable().close()
})

const order = workflow('order', async (orderId, items) => {
  await progress(`order ${orderId}: reserving stock`)
  const reserved = await reserveStock(items)
  await progress(`reserved ${reserved.length} item(s) (after a retry); waiting one hour before charging`)
  await sleep('1h')
  await progress('woke up; waiting for approval')
  const approval = createHook({ token: `approve-${orderId}` })
  const { approved, by } = await approval
  if (!approved) return { orderId, status: 'rejected' }
  await progress(`approved by ${by}; charging`)
  const payment = await charge(reserved.reduce((s, i) => s + i.price * i.qty, 0))
  await progress('done')
  await closeStream()
  return { orderId, status: 'paid', payment, items: reserved.length }
})

// ---------------------------------------------------------------- drive it
console.log(`data directory: ${dataDir}`)
const run = await start(order, ['A-17', [{ sku: 'tea', qty: 2, price: 4.5 }, { sku: 'cup', qty: 1, price: 9 }]])
console.log(`${stamp()} started ${run.runId}`)

// Print the run's stream live, as steps write to it.
const printing = (async () => {
  for await (const chunk of run.getReadable()) console.log(`${stamp()}   stream: ${chunk.message}`)
})()

await nextSleep(run) // the workflow is now in its one-hour sleep
console.log(`${stamp()} status=${await run.status}; skipping the sleep with wakeUp()`)
console.log(`${stamp()} wakeUp ->`, await run.wakeUp())

// the hook exists once the workflow reached it
const token = 'approve-A-17'
for (;;) {
  try {
    await resumeHook(token, { approved: true, by: 'ops@example.com' })
    break
  } catch (e) {
    if (e.name !== 'HookNotFoundError') throw e
    await new Promise((r) => setTimeout(r, 5))
  }
}
console.log(`${stamp()} resumed hook ${token}`)

const result = await run.returnValue
await printing
console.log(`${stamp()} returnValue:`, result)
console.log(`${stamp()} status=${await run.status}`)
console.log(`\nInspect it with the official CLI: WORKFLOW_LOCAL_DATA_DIR=${dataDir} npx workflow inspect runs`)
