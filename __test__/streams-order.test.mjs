// Live reads deliver a stream's chunks in index order at any length (issue 11): readers
// started before the first write and in the middle of the stream, while a writer appends
// 100,000 chunks one awaited write at a time. Two writers run at once on the same data
// directory (so the chunk directory holds 200,000 files, and a directory listing takes
// many `getdents` calls while files are being published): the engine's `getWritable()`
// (our writer) and the official world-local `writeToStream()`.
import { createRun, frameValue, ours, streamName, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'

const { workflow, step, getWritable } = wf

const N = 100_000

/** Reads `stream` to its end; values must be the integers of the stream. */
async function readAll(stream) {
  const out = []
  for await (const v of stream) out.push(v)
  return out
}

/**
 * What a reader got against the integers `first..N-1` in order: positions that hold a
 * smaller value than the one before (inversions), values missing, values delivered twice,
 * positions holding the wrong value.
 */
function audit(values, first = 0) {
  let inversions = 0
  let wrong = 0
  const seen = new Set()
  let duplicates = 0
  for (let i = 0; i < values.length; i++) {
    if (i > 0 && values[i] < values[i - 1]) inversions++
    if (values[i] !== first + i) wrong++
    if (seen.has(values[i])) duplicates++
    seen.add(values[i])
  }
  let missing = 0
  for (let v = first; v < N; v++) if (!seen.has(v)) missing++
  return { count: values.length, inversions, missing, duplicates, wrong }
}

/** The frame `getWritable()` / the official serializer writes for integer `i`. */
function intFrame(i) {
  const body = Buffer.from(`devl[${i}]`)
  const frame = Buffer.alloc(4 + body.length)
  frame.writeUInt32BE(body.length, 0)
  body.copy(frame, 4)
  return frame
}

test('the integer frames used below are what the official serializer writes', async () => {
  for (const i of [0, 7, 99_999]) assert.deepEqual(Buffer.from(await frameValue(i)), intFrame(i))
})

test(
  `${N.toLocaleString('en')}-chunk live reads are in index order, with our writer and with the official writer`,
  { timeout: 300_000 },
  async () => {
    // The official writer: world-local's writeToStream, each write awaited.
    const officialRun = await createRun({ status: 'running' })
    const officialStream = streamName(officialRun)
    const written = { official: 0, ours: 0 }
    let midway
    const halfway = new Promise((resolve) => (midway = resolve))
    const officialWriter = (async () => {
      for (let i = 0; i < N; i++) {
        await world.writeToStream(officialStream, officialRun, intFrame(i))
        written.official = i + 1
        if (i === N / 2) midway()
      }
      await world.closeStream(officialStream, officialRun)
    })()

    // Our writer: a step writing through getWritable(), each write awaited.
    const produce = step('produce', async (n) => {
      const writer = getWritable().getWriter()
      for (let i = 0; i < n; i++) {
        await writer.write(i)
        written.ours = i + 1
      }
      await writer.close()
    })
    const producer = workflow('orderedProducer', async (n) => {
      await produce(n)
      return 'written'
    })
    const run = await ours.start(producer, [N])

    // Readers from the start, begun before (or just as) the first chunk lands.
    const fromStart = {
      official: readAll(ours.getRun(officialRun).getReadable()),
      ours: readAll(run.getReadable()),
    }
    // Readers begun in the middle: the last 10 chunks at that moment, then everything after.
    await halfway
    const lateStart = {
      official: readAll(ours.getRun(officialRun).getReadable({ startIndex: -10 })),
      ours: readAll(ours.getRun(run.runId).getReadable({ startIndex: -10 })),
    }
    const startedAt = { ...written }

    await officialWriter
    assert.equal(await run.returnValue, 'written')
    for (const writer of ['official', 'ours']) {
      const all = await fromStart[writer]
      assert.deepEqual(
        audit(all),
        { count: N, inversions: 0, missing: 0, duplicates: 0, wrong: 0 },
        `reader from the start, ${writer} writer`,
      )
      const late = await lateStart[writer]
      const first = late[0]
      assert.ok(
        first >= startedAt[writer] - 10 && first < N,
        `late reader (${writer}) started at ${first}, writer was at ${startedAt[writer]}`,
      )
      assert.deepEqual(
        audit(late, first),
        { count: N - first, inversions: 0, missing: 0, duplicates: 0, wrong: 0 },
        `reader from the middle, ${writer} writer`,
      )
    }
  },
)
