// Shared by the live-read ordering tests (streams-order-*.test.mjs): integer chunks, the
// readers, and the audit of what they got. Import after harness.mjs.
import assert from 'node:assert/strict'
import { ours } from './harness.mjs'

/** Stream length of the ordering tests. */
export const N = 100_000

/** The frame `getWritable()` / the official serializer writes for integer `i`. */
export function intFrame(i) {
  const body = Buffer.from(`devl[${i}]`)
  const frame = Buffer.alloc(4 + body.length)
  frame.writeUInt32BE(body.length, 0)
  body.copy(frame, 4)
  return frame
}

/** A promise opened from outside. */
export function gate() {
  let open
  const p = new Promise((resolve) => (open = resolve))
  return { p, open }
}

async function readAll(stream) {
  const out = []
  for await (const v of stream) out.push(v)
  return out
}

/**
 * What a reader got against the integers `first..n-1` in order: positions holding a smaller
 * value than the one before (inversions), values missing, values delivered twice, positions
 * holding the wrong value.
 */
export function audit(values, first, n) {
  let inversions = 0
  let wrong = 0
  let duplicates = 0
  const seen = new Set()
  for (let i = 0; i < values.length; i++) {
    if (i > 0 && values[i] < values[i - 1]) inversions++
    if (values[i] !== first + i) wrong++
    if (seen.has(values[i])) duplicates++
    seen.add(values[i])
  }
  let missing = 0
  for (let v = first; v < n; v++) if (!seen.has(v)) missing++
  return { count: values.length, inversions, missing, duplicates, wrong }
}

/**
 * Live readers of a run's stream (ours): one from the start, opened now (before the first
 * write), and one opened when `halfway` resolves, from `startIndex: -10`.
 */
export function readers(runId, halfway) {
  const fromStart = readAll(ours.getRun(runId).getReadable())
  const late = halfway.then(() => readAll(ours.getRun(runId).getReadable({ startIndex: -10 })))
  return { fromStart, late }
}

/** Both readers got every chunk once, in order (the late one from where it started). */
export async function assertInOrder({ fromStart, late }, label, n = N) {
  const all = await fromStart
  assert.deepEqual(
    audit(all, 0, n),
    { count: n, inversions: 0, missing: 0, duplicates: 0, wrong: 0 },
    `${label}: reader from the start`,
  )
  const tail = await late
  const first = tail[0]
  assert.ok(Number.isInteger(first) && first > 0 && first < n, `${label}: late reader started at ${first}`)
  assert.deepEqual(
    audit(tail, first, n),
    { count: n - first, inversions: 0, missing: 0, duplicates: 0, wrong: 0 },
    `${label}: reader from the middle`,
  )
}
