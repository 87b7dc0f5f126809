// Writes a small data directory with the OFFICIAL packages, for tests that cannot load
// the (ESM-only) official packages themselves, e.g. under Jest. Prints the run ids as JSON.
//   node make-fixture.mjs <dataDir>
import { createLocalWorld } from '@workflow/world-local'
import { monotonicFactory } from 'ulid'
import {
  dehydrateWorkflowArguments,
  dehydrateWorkflowReturnValue,
  getSerializeStream,
  getExternalReducers,
} from '@workflow/core/serialization'

const [dataDir] = process.argv.slice(2)
const world = createLocalWorld({ dataDir })
const ulid = monotonicFactory()
const WORKFLOW_NAME = 'workflow//./src/workflows/jest//realmWorkflow'

async function create(status, value) {
  const runId = `wrun_${ulid()}`
  await world.events.create(runId, {
    eventType: 'run_created',
    specVersion: 3,
    eventData: {
      deploymentId: 'dpl_local@4.4.1',
      workflowName: WORKFLOW_NAME,
      input: await dehydrateWorkflowArguments([], runId, undefined),
      executionContext: { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } },
    },
  })
  await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  if (status === 'completed') {
    await world.events.create(runId, {
      eventType: 'run_completed',
      specVersion: 3,
      eventData: { output: await dehydrateWorkflowReturnValue(value, runId, undefined) },
    })
  } else if (status === 'failed') {
    await world.events.create(runId, {
      eventType: 'run_failed',
      specVersion: 3,
      eventData: { error: { message: 'boom', stack: 'Error: boom' }, errorCode: 'USER_ERROR' },
    })
  }
  return runId
}

const completed = await create('completed', {
  when: new Date('2024-01-02T03:04:05.006Z'),
  map: new Map([['k', new Date(0)]]),
  set: new Set([1, 2]),
  list: [new Date(1), { deep: new Map([[1, [2]]]) }],
  bytes: new Uint8Array([1, 2, 3]),
  re: /x+/g,
  big: 12n,
  err: new TypeError('bad'),
})
const failed = await create('failed')
const streaming = await create('running')
const name = `strm_${streaming.slice(5)}_user`
const ts = getSerializeStream(getExternalReducers(globalThis, [], streaming, undefined), undefined)
const writer = ts.writable.getWriter()
const reader = ts.readable.getReader()
for (const v of [new Date(42), new Map([[1, 2]]), { n: 1 }]) {
  writer.write(v)
  await world.writeToStream(name, streaming, (await reader.read()).value)
}
await world.closeStream(name, streaming)
process.stdout.write(JSON.stringify({ completed, failed, streaming }))
