// Live reads deliver a stream's chunks in index order at any length (issue 11), with OUR
// writer: the native World's `writeStreamChunks()` (what the engine's `getWritable()`
// calls), each call awaited, 100,000 chunks — 10 per call (published one after the other)
// to keep the run time down — and a smaller run through `getWritable()` itself (one chunk
// per write). Readers (ours) start before the first write and in the middle. See
// streams-order-official.test.mjs for the official writer.
import { createRun, dataDir, ours, streamName } from './helpers/harness.mjs'
import { N, assertInOrder, gate, intFrame, readers } from './helpers/order.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import wf from '../workflow.js'

const { workflow, step, getWritable } = wf
const { binding } = createRequire(import.meta.url)('../lib/native.js')

const BATCH = 10

test(`${N.toLocaleString('en')}-chunk live reads are in index order with our writer`, { timeout: 240_000 }, async () => {
  const runId = await createRun({ status: 'running' })
  const half = gate()
  const r = readers(runId, half.p)
  const native = new binding.NativeWorld(dataDir)
  const name = streamName(runId)
  for (let i = 0; i < N; i += BATCH) {
    const chunks = []
    for (let j = i; j < i + BATCH; j++) chunks.push(intFrame(j))
    await native.writeStreamChunks(name, runId, chunks)
    if (i === N / 2) half.open()
  }
  await native.closeStream(name, runId)
  await assertInOrder(r, 'our writer')
})

test("live reads are in index order with the engine's getWritable()", { timeout: 120_000 }, async () => {
  const n = 10_000
  const half = gate()
  const produce = step('produce', async (count) => {
    const writer = getWritable().getWriter()
    for (let i = 0; i < count; i++) {
      await writer.write(i)
      if (i === count / 2) half.open()
    }
    await writer.close()
  })
  const producer = workflow('orderedProducer', async (count) => {
    await produce(count)
    return 'written'
  })
  const run = await ours.start(producer, [n])
  const r = readers(run.runId, half.p)
  assert.equal(await run.returnValue, 'written')
  await assertInOrder(r, 'getWritable()', n)
})
