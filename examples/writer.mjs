// The "workflow" side of the demo: the official @workflow/world-local writes a run, a
// stream of values (framed exactly as the WDK runtime frames them) and the completion.

import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { dehydrateWorkflowReturnValue } from '@workflow/core/serialization'
import { createLocalWorld } from '@workflow/world-local'
import { monotonicFactory } from 'ulid'

const dataDir = process.argv[2]
const world = createLocalWorld({ dataDir })
const runId = `wrun_${monotonicFactory()()}`
const enc = new TextEncoder()

await world.events.create(runId, {
  eventType: 'run_created',
  specVersion: 3,
  eventData: {
    deploymentId: 'dpl_local@4.4.1',
    workflowName: 'workflow//./examples/demo//countdown',
    input: await dehydrateWorkflowReturnValue([5], runId, undefined),
    executionContext: { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } },
  },
})
await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
process.send({ runId })

const stream = runId.replace('wrun_', 'strm_') + '_user'
async function frame(value) {
  const body = await dehydrateWorkflowReturnValue(value, runId, undefined) // "devl" + devalue
  const out = new Uint8Array(4 + body.length)
  new DataView(out.buffer).setUint32(0, body.length, false)
  out.set(body, 4)
  return out
}

await sleep(300)
const words = ['five', 'four', 'three', 'two', 'one', 'lift-off']
for (let n = 0; n < words.length; n++) {
  await world.writeToStream(stream, runId, await frame({ n, text: words[n], at: new Date() }))
  await sleep(200)
}
await world.closeStream(stream, runId)
await sleep(200)

const output = await dehydrateWorkflowReturnValue(
  { launched: true, at: new Date(), stages: new Map([['booster', 'separated']]), tries: 1n },
  runId,
  undefined,
)
const before = performance.now()
await world.events.create(runId, { eventType: 'run_completed', specVersion: 3, eventData: { output } })
process.send({ completedAt: before, timeOrigin: performance.timeOrigin })
await world.close?.()
