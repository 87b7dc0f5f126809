'use strict'
// Plumbing between JS streams inside serialized values and World streams.

const { binding } = require('./native.js')
const { nativeReadable } = require('./readable.js')
const { externalRevivers, parse } = require('./hydrate.js')

/**
 * A live ReadableStream for a serialized stream reference `{ name, type?, framing?,
 * startIndex? }`. `open(name, startIndex, mode)` returns the native reader; object chunks
 * are decoded with the client revivers (nested stream references become live streams too).
 */
function refReadable(global, open, ref) {
  const start = Number.isFinite(Number(ref.startIndex)) ? Math.trunc(Number(ref.startIndex)) : 0
  const mode = ref.type === 'bytes' ? (ref.framing === 'framed-v1' ? 'bytes-framed' : 'bytes') : 'objects'
  const revivers = mode === 'objects' ? clientRevivers(global, open) : undefined
  return nativeReadable(global, () => open(ref.name, start, mode), (text) => parse(text, revivers))
}

/** The client-side revivers, with stream references read through `open`. */
function clientRevivers(global, open) {
  return externalRevivers(global, (ref) => refReadable(global, open, ref))
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

module.exports = { worldStreams, stopPipeInto, refReadable, clientRevivers }
