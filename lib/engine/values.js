'use strict'
const { types } = require('node:util')
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
  if (types.isNativeError(err)) return err.message
  if (typeof err === 'string') return err
  try {
    return JSON.stringify(err)
  } catch {
    return String(err)
  }
}

function isThenable(v) {
  return typeof v === 'object' && v !== null && 'then' in v && typeof v.then === 'function'
}

/**
 * `{ message, stack }` of a thrown value as the official records it: an Error's (a real
 * one: `types.isNativeError`), a string as is, anything else as JSON; a thrown promise
 * (or thenable) is awaited and its outcome reported as "Promise rejection: …".
 */
async function normalizeError(v) {
  if (isThenable(v)) {
    let inner
    try {
      inner = await normalizeError(await v)
    } catch (rejection) {
      inner = await normalizeError(rejection)
    }
    return { ...inner, message: `Promise rejection: ${inner.message}` }
  }
  return { message: errorText(v), stack: types.isNativeError(v) ? (v.stack ?? '') : '' }
}

module.exports = { HALT, tagged, untag, errorText, normalizeError }
