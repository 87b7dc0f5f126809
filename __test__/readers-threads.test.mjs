// Live stream readers cost no thread each: 1,000 readers opened at once on open streams,
// then waiting, then woken all at once by a chunk on every stream, read through a few blocking threads
// (a bounded blocking pool, src/lib.rs; crates/core/src/stream/cursor.rs lets 4 read at a time). The process's thread count
// (/proc/self/status) is sampled throughout and must stay within a small constant of
// the count before the readers opened; every reader gets its own stream's value.
import { createRun, frameValue, ours, streamName, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'

const READERS = 1000
/** Threads allowed above the count before the readers opened: the blocking pool is
 * bounded at 8 threads (src/lib.rs), plus a spare. */
const SLACK = 10

function threads() {
  return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1])
}

test(
  `${READERS} live readers woken at once hold no thread each`,
  { skip: !existsSync('/proc/self/status') && 'needs /proc/self/status' },
  async () => {
    const runIds = []
    for (let i = 0; i < READERS; i++) runIds.push(await createRun({ status: 'running' }))
    // one value on each stream first, read back: every reader is open and warmed up
    for (const runId of runIds) await world.writeToStream(streamName(runId), runId, await frameValue(`first ${runId}`, runId))
    const before = threads()
    let most = before
    const sampler = setInterval(() => (most = Math.max(most, threads())), 5)
    const readers = runIds.map((runId) => ours.getRun(runId).getReadable().getReader())
    try {
      // all open at once, each reading its first value
      const first = await Promise.all(readers.map((r) => r.read()))
      most = Math.max(most, threads())
      first.forEach((r, i) => assert.equal(r.value, `first ${runIds[i]}`))
      // every reader now waits for its second value
      const pending = readers.map((r) => r.read())
      most = Math.max(most, threads())
      // all at once: the change feed wakes the readers together
      const frames = await Promise.all(runIds.map((runId) => frameValue(`second ${runId}`, runId)))
      await Promise.all(runIds.map((runId, i) => world.writeToStream(streamName(runId), runId, frames[i])))
      const second = await Promise.all(pending)
      most = Math.max(most, threads())
      second.forEach((r, i) => assert.equal(r.value, `second ${runIds[i]}`))
    } finally {
      clearInterval(sampler)
    }
    assert.ok(most <= before + SLACK, `threads went from ${before} to ${most} with ${READERS} live readers`)
    await Promise.all(readers.map((r) => r.cancel()))
  },
)
