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

/** How long a thrown promise is waited for before it is recorded unsettled. */
const THROWN_PROMISE_WAIT_MS = 1000

/**
 * `{ message, stack }` of a thrown value as the official records it: an Error's (a real
 * one: `types.isNativeError`), a string as is, anything else as JSON; a thrown promise is
 * awaited and its outcome reported as "Promise rejection: …". Unlike the official (whose
 * serverless invocation would time out), a promise still pending after a second, or
 * nested more than twice, is recorded as it is (`{}`), so the step or run still ends.
 */
async function normalizeError(v, depth = 0) {
  if (types.isPromise(v) && depth < 2) {
    let timer
    const pending = Symbol('pending')
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ outcome: pending }), THROWN_PROMISE_WAIT_MS)
    })
    const settled = await Promise.race([
      v.then(
        (value) => ({ outcome: value }),
        (rejection) => ({ outcome: rejection }),
      ),
      late,
    ])
    clearTimeout(timer)
    if (settled.outcome !== pending) {
      const inner = await normalizeError(settled.outcome, depth + 1)
      return { ...inner, message: `Promise rejection: ${inner.message}` }
    }
  }
  return { message: errorText(v), stack: types.isNativeError(v) ? (v.stack ?? '') : '' }
}

module.exports = { HALT, tagged, untag, errorText, normalizeError }
