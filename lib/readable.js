'use strict'
// The ReadableStream wrapper over a native stream reader: `pull` asks the addon for a
// batch (one native call for many chunks), `cancel` closes the native reader at once.
// The addon reads only when the consumer pulls, so a slow reader never makes it buffer
// the stream: at most one batch is held.

const { fromNative } = require('./native.js')

const BATCH = 256

/**
 * @param openReader () => native reader (called lazily on first pull)
 * @param decode  (text) => value for object streams; byte streams get Uint8Arrays
 */
function nativeReadable(global, openReader, decode) {
  let reader = null
  let finished = false
  // One batch read ahead while the consumer handles the current one: the addon reads
  // files while JS decodes. Never more than that is held.
  let ahead = null
  const readAhead = () => {
    ahead = reader.nextMany(BATCH)
    ahead.catch(() => {})
  }
  const Readable = global.ReadableStream || ReadableStream
  const U8 = global.Uint8Array || Uint8Array
  return new Readable(
    {
      async pull(controller) {
        if (finished) return
        try {
          if (!reader) reader = openReader()
          const batch = await (ahead || reader.nextMany(BATCH))
          ahead = null
          if (finished) return
          if (!batch.done) readAhead()
          let start = 0
          for (const end of batch.ends) {
            controller.enqueue(decode(batch.text.slice(start, end)))
            start = end
          }
          for (const buf of batch.buffers) controller.enqueue(U8.from(buf))
          if (batch.done) {
            finished = true
            reader = null
            controller.close()
          }
        } catch (e) {
          finished = true
          if (reader) reader.close()
          reader = null
          controller.error(fromNative(e))
        }
      },
      cancel() {
        finished = true
        if (reader) reader.close()
        reader = null
      },
    },
    // 0: nothing is read until the consumer asks (getReadable().getTailIndex() reads
    // no chunks); reading ahead starts with the first read.
    { highWaterMark: 0 },
  )
}

module.exports = { nativeReadable }
