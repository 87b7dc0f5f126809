'use strict'
// Plumbing between JS streams inside serialized values and World streams.

const { binding } = require('./native.js')
const { nativeReadable } = require('./readable.js')
const { externalRevivers, unflatten } = require('./hydrate.js')

/**
 * A live ReadableStream for a serialized stream reference `{ name, type?, framing?,
 * startIndex? }`. `open(name, startIndex, mode)` returns the native reader; object chunks
 * are decoded with the client revivers (nested stream references become live streams too).
 */
function refReadable(global, open, ref, endWithRun, beforeFirstChunk) {
  const start = Number.isFinite(Number(ref.startIndex)) ? Math.trunc(Number(ref.startIndex)) : 0
  const mode = ref.type === 'bytes' ? (ref.framing === 'framed-v1' ? 'bytes-framed' : 'bytes') : 'objects'
  const revivers = mode === 'objects' ? clientRevivers(global, open) : undefined
  // `endWithRun`: a run's own stream also ends once the run is terminal and every chunk
  // written is delivered (nested stream references end at their close marker).
  const openReader = endWithRun === undefined ? () => open(ref.name, start, mode) : () => open(ref.name, start, mode, endWithRun)
  return nativeReadable(global, openReader, (flat) => unflatten(flat, revivers), beforeFirstChunk)
}

/** The client-side revivers, with stream references read through `open`. */
function clientRevivers(global, open) {
  return externalRevivers(global, (ref) => refReadable(global, open, ref))
}

/** How Node's own argument errors show a received value (`Received type string ('2')`). */
function describeReceived(value) {
  if (value === null || value === undefined) return `Received ${value}`
  if (typeof value === 'function') return `Received function ${value.name || '<anonymous>'}`
  if (typeof value === 'object') {
    const ctor = value.constructor && value.constructor.name
    return ctor ? `Received an instance of ${ctor}` : 'Received an object without a prototype'
  }
  let shown = typeof value === 'bigint' ? `${value}n` : typeof value === 'string' ? `'${value}'` : String(value)
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`
  return `Received type ${typeof value} (${shown})`
}

/**
 * `getReadable({ startIndex })` as a chunk index: `undefined`/`null` read from the first
 * chunk, as do `NaN` and `-Infinity` (what the official reader does with them); other
 * integers as given (negative: from the end). Anything else throws at once — the official
 * reader coerces it (`'2'` reads from chunk 20, `true` from 1) or never delivers anything
 * (`1.5`, `Infinity`, `3n`).
 */
function startIndexOption(value) {
  if (value === undefined || value === null) return 0
  if (typeof value !== 'number') {
    const e = new TypeError(`The "startIndex" option must be of type number. ${describeReceived(value)}`)
    e.code = 'ERR_INVALID_ARG_TYPE'
    throw e
  }
  if (Number.isNaN(value) || value === -Infinity) return 0
  if (!Number.isInteger(value)) {
    const e = new RangeError(`The value of "startIndex" is out of range. It must be an integer. Received ${value}`)
    e.code = 'ERR_OUT_OF_RANGE'
    throw e
  }
  return Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, value))
}

/**
 * The stream of a run for `getReadable({ namespace })`: as the official does it, a falsy
 * namespace is the default stream, anything else is taken by `Buffer.from(namespace,
 * 'utf-8')` (strings, arrays of bytes, buffers; other types throw Node's TypeError) and
 * appended as unpadded base64url.
 */
function runStreamOf(runId, namespace) {
  const base = binding.runStreamName(runId, undefined)
  if (!namespace) return base
  return `${base}_${Buffer.from(namespace, 'utf-8').toString('base64url')}`
}

const FLUSH_BATCH = 64

/** The abort handle of each pipe started by `pipeOut`, by destination writable. */
const pipes = new WeakMap()

/** Stops the pipe feeding `writable` (and releases its native reader). */
function stopPipeInto(writable) {
  const ac = pipes.get(writable)
  if (ac) ac.abort()
}

/** Streams helper bound to one native World, as the reducers need it. */
function worldStreams(world, global) {
  const open = (name, start, mode) => world.openStream(name, start, mode)
  return {
    newName: () => `strm_${binding.newUlid()}`,
    /** Writes every chunk of `stream` (encoded) to World stream `name`, then closes it. */
    pipeIn: async (name, runId, stream, encode) => {
      const reader = stream.getReader()
      let pending = []
      const flush = async () => {
        if (pending.length === 0) return
        const chunks = pending
        pending = []
        await world.writeStreamChunks(name, runId, chunks)
      }
      try {
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          const encoded = encode(value)
          if (encoded.length > 0) pending.push(encoded)
          if (pending.length >= FLUSH_BATCH) await flush()
        }
        await flush()
        await world.closeStream(name, runId)
      } finally {
        reader.releaseLock()
      }
    },
    /** Reads World object stream `name` into `writable` (values decoded). */
    pipeOut: (name, writable) => {
      const ac = new AbortController()
      pipes.set(writable, ac)
      return refReadable(global, open, { name }).pipeTo(writable, { signal: ac.signal })
    },
  }
}

module.exports = { worldStreams, stopPipeInto, refReadable, clientRevivers, startIndexOption, runStreamOf }
