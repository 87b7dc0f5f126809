'use strict'
// Plumbing between JS streams inside serialized values and World streams.

const { binding, fromNative } = require('./native.js')
const { nativeReadable } = require('./readable.js')

const FLUSH_BATCH = 64

/** The abort handle of each pipe started by `pipeOut`, by destination writable. */
const pipes = new WeakMap()

/** Stops the pipe feeding `writable` (and releases its native reader). */
function stopPipeInto(writable) {
  const ac = pipes.get(writable)
  if (ac) ac.abort()
}

/** Streams helper bound to one native World, as the reducers need it. */
function worldStreams(world, global, makeRevivers, parse) {
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
      } catch (e) {
        throw fromNative(e)
      } finally {
        reader.releaseLock()
      }
    },
    /** Reads World object stream `name` into `writable` (values decoded). */
    pipeOut: (name, writable) => {
      const revivers = makeRevivers()
      const ac = new AbortController()
      pipes.set(writable, ac)
      return nativeReadable(global, () => world.openStream(name, 0, 'objects'), (t) => parse(t, revivers)).pipeTo(
        writable,
        { signal: ac.signal },
      )
    },
  }
}

module.exports = { worldStreams, stopPipeInto }
