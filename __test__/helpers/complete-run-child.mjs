// Child process: completes (or fails) a run through the OFFICIAL world-local, as a
// workflow server process would. Usage:
//   node complete-run-child.mjs <dataDir> <runId> complete|fail|stream <streamName>
import { createLocalWorld } from '@workflow/world-local'
import { dehydrateWorkflowReturnValue, getSerializeStream, getExternalReducers } from '@workflow/core/serialization'

const [dataDir, runId, action = 'complete', streamName] = process.argv.slice(2)
const world = createLocalWorld({ dataDir })

const CHILD_VALUE = () => ({
  from: 'child process',
  at: new Date('2030-01-02T03:04:05.006Z'),
  n: 2n ** 70n,
  tags: new Set(['a', 'b']),
  nested: new Map([['k', [1, 2, 3]]]),
})

if (action === 'complete') {
  await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  await world.events.create(runId, {
    eventType: 'run_completed',
    specVersion: 3,
    eventData: { output: await dehydrateWorkflowReturnValue(CHILD_VALUE(), runId, undefined) },
  })
} else if (action === 'fail') {
  await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  await world.events.create(runId, {
    eventType: 'run_failed',
    specVersion: 3,
    eventData: { error: { message: 'failed in child', stack: 'Error: failed in child\n    at child' }, errorCode: 'USER_ERROR' },
  })
} else if (action === 'stream') {
  const ts = getSerializeStream(getExternalReducers(globalThis, [], runId, undefined), undefined)
  const writer = ts.writable.getWriter()
  const reader = ts.readable.getReader()
  for (const v of ['from-child-1', { i: 2, at: new Date(2) }, 3n]) {
    writer.write(v)
    const { value } = await reader.read()
    await world.writeToStream(streamName, runId, value)
  }
  await world.closeStream(streamName, runId)
}
process.stdout.write('done\n')
