// Live reads deliver a stream's chunks in index order at any length (issue 11), with the
// OFFICIAL writer: world-local 4.4.1's `writeToStream()`, each write awaited, 100,000
// chunks. Readers (ours) start before the first write and in the middle. The chunk
// directory holds 100,000 files, so a directory listing takes many `getdents` calls while
// files are being published (what made readers reorder chunks past ~2,900). One writer per
// file (= per data directory): ext4 creates files much more slowly in a directory that
// already holds 100,000.
import { createRun, frameValue, streamName, world } from './helpers/harness.mjs'
import { N, assertInOrder, gate, intFrame, readers } from './helpers/order.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'

test('the integer frames used here are what the official serializer writes', async () => {
  for (const i of [0, 7, 99_999]) assert.deepEqual(Buffer.from(await frameValue(i)), intFrame(i))
})

test(`${N.toLocaleString('en')}-chunk live reads are in index order with the official writer`, { timeout: 240_000 }, async () => {
  const runId = await createRun({ status: 'running' })
  const half = gate()
  const r = readers(runId, half.p)
  const name = streamName(runId)
  for (let i = 0; i < N; i++) {
    await world.writeToStream(name, runId, intFrame(i))
    if (i === N / 2) half.open()
  }
  await world.closeStream(name, runId)
  await assertInOrder(r, 'official writer')
})
