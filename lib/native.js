'use strict'
// Loads the generated binding and turns the core's error data into the JS classes.

const binding = require('../binding.js')
const errors = require('../errors.js')

const MARKER = '\u0001WFN:'

/** Builds the JS error for `{ name, message, ...fields }` produced by the core. */
function errorFromData(data) {
  const { name, message } = data
  let err
  switch (name) {
    case 'WorkflowRunNotFoundError':
      err = new errors.WorkflowRunNotFoundError(data.runId)
      break
    case 'UnsafeEntityIdError':
      err = new errors.UnsafeEntityIdError(message)
      break
    case 'EntityConflictError':
      err = new errors.EntityConflictError(message)
      break
    case 'RunExpiredError':
      err = new errors.RunExpiredError(message)
      break
    case 'TooEarlyError':
      err = new errors.TooEarlyError(message, { retryAfter: data.retryAfter })
      break
    case 'HookNotFoundError':
      err = new errors.HookNotFoundError(data.token)
      break
    case 'RunNotSupportedError':
      err = new errors.RunNotSupportedError(data.runSpecVersion, data.worldSpecVersion)
      break
    case 'WorkflowRuntimeError':
      err = new errors.WorkflowRuntimeError(message)
      break
    case 'RuntimeDecryptionError':
      err = new errors.RuntimeDecryptionError(message)
      break
    case 'WorkflowWorldError':
      err = new errors.WorkflowWorldError(message, { code: data.code })
      break
    case 'TypeError':
      err = new TypeError(message)
      break
    default:
      err = new Error(message)
  }
  for (const key of ['code', 'path']) {
    if (data[key] !== undefined && err[key] === undefined) err[key] = data[key]
  }
  return err
}

/** Converts an error thrown by the binding; anything else passes through unchanged. */
function fromNative(e) {
  if (e && typeof e.message === 'string' && e.message.startsWith(MARKER)) {
    try {
      return errorFromData(JSON.parse(e.message.slice(MARKER.length)))
    } catch {
      return e
    }
  }
  return e
}

/** Runs `fn` (sync or async) and rethrows binding errors as JS error classes. */
async function call(fn) {
  try {
    return await fn()
  } catch (e) {
    throw fromNative(e)
  }
}

module.exports = { binding, fromNative, errorFromData, call }
