'use strict'
// The ReadableStream wrapper over a native stream reader: `pull` asks the addon for a
// batch (one native call for many chunks), `cancel` closes the native reader at once.
// Nothing is read before the first pull; after it the addon reads ahead into a bounded
// buffer (2048 chunks / 4 MiB), so a slow reader never makes it hold the whole stream.

const BATCH = 512

/**
 * @param openReader () => native reader (called lazily on first pull)
 * @param decode  (parsed JSON of one devalue text) => value, for object streams (a batch's
 *   texts come as one JSON array, parsed at once); byte streams get Uint8Arrays
 */
function nativeReadable(global, openReader, decode, beforeFirstChunk) {
  let reader = null
  let finished = false
  // `beforeFirstChunk`: awaited once, when the first chunk is there to deliver; a
  // rejection errors the stream before it delivers anything (a run's stream: its run
  // must exist, as the official reader needs the run to decode a chunk)
  let gate = beforeFirstChunk
  const Readable = global.ReadableStream || ReadableStream
  const U8 = global.Uint8Array || Uint8Array
  return new Readable(
    {
      async pull(controller) {
        if (finished) return
        try {
          if (!reader) reader = openReader()
          // The addon reads ahead into a bounded buffer: take what is ready without a
          // thread hop, wait only when nothing is.
          const batch = reader.nextManySync(BATCH) || (await reader.nextMany(BATCH))
          if (finished) return
          if (gate && (batch.text || batch.buffers.length > 0)) {
            const check = gate
            gate = undefined
            await check()
            if (finished) return
          }
          if (batch.text) {
            for (const flat of JSON.parse(batch.text)) controller.enqueue(decode(flat))
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
          controller.error(e)
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
