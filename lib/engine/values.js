'use strict'
// Small shared pieces of the engine: world-local's JSON encoding of bytes, error text,
// and the marker an invocation returns once its run stopped executing here.

/** What an invocation gets once the run stopped here (cancelled, failed, finished elsewhere). */
const HALT = Symbol('workflow-native halt')

/** `{"__type":"Uint8Array","data":<base64>}`: how world-local encodes bytes in JSON. */
function tagged(buf) {
  return { __type: 'Uint8Array', data: Buffer.from(buf).toString('base64') }
}

function untag(v) {
  if (v && typeof v === 'object' && v.__type === 'Uint8Array' && typeof v.data === 'string') {
    return Buffer.from(v.data, 'base64')
  }
  return undefined
}

function errorText(err) {
  if (err instanceof Error) return err.message
  if (typeof err === 'string') return err
  try {
    return JSON.stringify(err)
  } catch {
    return String(err)
  }
}

module.exports = { HALT, tagged, untag, errorText }
