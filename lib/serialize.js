'use strict'
// Encoding of values the client sends into a run (workflow arguments, hook payloads), in
// the format the WDK runtime reads: "devl" + devalue text with the workflow type
// extensions. Streams inside a value are written to their own World stream in the
// background and referenced by name, as the runtime does.

const { stringify, DevalueError } = require('./vendor/devalue.cjs')
const { types } = require('node:util')
const { WorkflowRuntimeError } = require('../errors.js')

const WORKFLOW_SERIALIZE = Symbol.for('workflow-serialize')
const STREAM_NAME = Symbol.for('WORKFLOW_STREAM_NAME')
const STREAM_TYPE = Symbol.for('WORKFLOW_STREAM_TYPE')
const STREAM_FRAMING = Symbol.for('WORKFLOW_STREAM_FRAMING')
const STREAM_SERVER_RUN_ID = Symbol.for('WORKFLOW_STREAM_SERVER_RUN_ID')
const STREAM_SERVER_DEPLOYMENT_ID = Symbol.for('WORKFLOW_STREAM_SERVER_DEPLOYMENT_ID')
const WEBHOOK_RESPONSE_WRITABLE = Symbol.for('WEBHOOK_RESPONSE_WRITABLE')

function base64OfView(buffer, offset, length) {
  if (length === 0) return '.' // devalue treats '' as "not handled"
  return Buffer.from(new Uint8Array(buffer, offset, length)).toString('base64')
}
const viewBase64 = (v) => base64OfView(v.buffer, v.byteOffset, v.byteLength)

/** The reducers both sides of the runtime share (first match wins, in this order). */
function commonReducers(global) {
  const view = (Ctor) => (v) => global[Ctor] !== undefined && v instanceof global[Ctor] && viewBase64(v)
  return {
    ArrayBuffer: (v) => v instanceof global.ArrayBuffer && base64OfView(v, 0, v.byteLength),
    BigInt: (v) => typeof v === 'bigint' && v.toString(),
    BigInt64Array: view('BigInt64Array'),
    BigUint64Array: view('BigUint64Array'),
    Class: (v) => typeof v === 'function' && typeof v.classId === 'string' && { classId: v.classId },
    Instance: (v) => {
      if (v === null || typeof v !== 'object') return false
      const cls = v.constructor
      if (typeof cls !== 'function' || typeof cls[WORKFLOW_SERIALIZE] !== 'function') return false
      if (typeof cls.classId !== 'string') {
        throw new Error(`Class "${cls.name}" with ${String(WORKFLOW_SERIALIZE)} must have a static "classId" property.`)
      }
      return { classId: cls.classId, data: cls[WORKFLOW_SERIALIZE].call(cls, v) }
    },
    Date: (v) => v instanceof global.Date && (Number.isNaN(v.getDate()) ? '.' : v.toISOString()),
    DOMException: (v) => {
      if (!types.isNativeError(v) || (v.constructor && v.constructor.name) !== 'DOMException') return false
      const out = { message: v.message, name: v.name, stack: v.stack }
      if ('cause' in v) out.cause = v.cause
      return out
    },
    Error: (v) => types.isNativeError(v) && { name: v.name, message: v.message, stack: v.stack },
    Float32Array: view('Float32Array'),
    Float64Array: view('Float64Array'),
    Headers: (v) => v instanceof global.Headers && Array.from(v),
    Int8Array: view('Int8Array'),
    Int16Array: view('Int16Array'),
    Int32Array: view('Int32Array'),
    Map: (v) => v instanceof global.Map && Array.from(v),
    RegExp: (v) => v instanceof global.RegExp && { source: v.source, flags: v.flags },
    Request: (v) => {
      if (!(v instanceof global.Request)) return false
      const out = { method: v.method, url: v.url, headers: v.headers, body: v.body, duplex: v.duplex }
      if (v[WEBHOOK_RESPONSE_WRITABLE]) out.responseWritable = v[WEBHOOK_RESPONSE_WRITABLE]
      return out
    },
    Response: (v) =>
      v instanceof global.Response && {
        type: v.type,
        url: v.url,
        status: v.status,
        statusText: v.statusText,
        headers: v.headers,
        body: v.body,
        redirected: v.redirected,
      },
    Set: (v) => v instanceof global.Set && Array.from(v),
    StepFunction: (v) => {
      if (typeof v !== 'function' || typeof v.stepId !== 'string') return false
      const out = { stepId: v.stepId }
      const closure = typeof v.__closureVarsFn === 'function' ? v.__closureVarsFn() : undefined
      if (closure !== undefined) out.closureVars = closure
      if ('__boundThis' in v) out.boundThis = v.__boundThis
      if (Array.isArray(v.__boundArgs) && v.__boundArgs.length > 0) out.boundArgs = v.__boundArgs
      return out
    },
    URL: (v) => v instanceof global.URL && v.href,
    URLSearchParams: (v) => v instanceof global.URLSearchParams && (v.size === 0 ? '.' : String(v)),
    Uint8Array: view('Uint8Array'),
    Uint8ClampedArray: view('Uint8ClampedArray'),
    Uint16Array: view('Uint16Array'),
    Uint32Array: view('Uint32Array'),
  }
}

function isByteStream(stream) {
  try {
    stream.getReader({ mode: 'byob' }).releaseLock()
    return true
  } catch {
    return false
  }
}

function frame(bytes) {
  const out = Buffer.allocUnsafe(4 + bytes.length)
  out.writeUInt32BE(bytes.length, 0)
  out.set(bytes, 4)
  return out
}

/**
 * Reducers for values leaving this process into a run.
 * @param ctx { global, runId, ops, framedByteStreams, streams }
 *   `streams` = { newName(), pipeIn(name, stream, encode), pipeOut(name, writable) }
 */
function clientReducers(ctx) {
  const { global, runId, ops, framedByteStreams, streams, stepSide } = ctx
  const reducers = {
    ...commonReducers(global),
    ReadableStream: (v) => {
      if (!(v instanceof global.ReadableStream)) return false
      if (v.locked) throw new Error('ReadableStream is locked')
      let name = stepSide ? v[STREAM_NAME] : undefined
      let type = stepSide ? v[STREAM_TYPE] : undefined
      let framing = stepSide ? v[STREAM_FRAMING] : undefined
      if (!name) {
        name = streams.newName()
        type = isByteStream(v) ? 'bytes' : undefined
        if (type === 'bytes') {
          if (framedByteStreams) framing = 'framed-v1'
          ops.push(streams.pipeIn(name, runId, v, (chunk) => (framing ? frame(chunk) : Buffer.from(chunk))))
        } else {
          ops.push(
            streams.pipeIn(name, runId, v, (value) =>
              frame(Buffer.from(`devl${stringify(value, reducers)}`, 'utf8')),
            ),
          )
        }
      }
      const ref = { name }
      if (type) ref.type = type
      if (framing) ref.framing = framing
      return ref
    },
    WritableStream: (v) => {
      if (!(v instanceof global.WritableStream)) return false
      const existing = v[STREAM_NAME]
      const existingRun = v[STREAM_SERVER_RUN_ID]
      if (typeof existing === 'string' && (stepSide || typeof existingRun === 'string')) {
        const ref = { name: existing }
        if (typeof existingRun === 'string') ref.runId = existingRun
        if (typeof v[STREAM_SERVER_DEPLOYMENT_ID] === 'string') ref.deploymentId = v[STREAM_SERVER_DEPLOYMENT_ID]
        return ref
      }
      const name = streams.newName()
      ops.push(streams.pipeOut(name, v))
      return { name }
    },
  }
  return skipPlainValues(reducers)
}

/**
 * The reducers that only recognise instances of a class (`v instanceof global.X`): no
 * primitive, plain object or plain array is one of them.
 */
const INSTANCE_REDUCERS = [
  'ArrayBuffer',
  'BigInt64Array',
  'BigUint64Array',
  'Date',
  'Float32Array',
  'Float64Array',
  'Headers',
  'Int8Array',
  'Int16Array',
  'Int32Array',
  'Map',
  'RegExp',
  'Request',
  'Response',
  'Set',
  'URL',
  'URLSearchParams',
  'Uint8Array',
  'Uint8ClampedArray',
  'Uint16Array',
  'Uint32Array',
  'ReadableStream',
  'WritableStream',
]

/**
 * devalue asks every reducer about every value, and each asks the global for its class
 * (several of those are getters): for the primitives, plain objects and plain arrays most
 * values are, the instance reducers answer "no" without asking. Same answers, same order;
 * a serialization of a small value costs a fraction.
 */
function skipPlainValues(reducers) {
  for (const key of INSTANCE_REDUCERS) {
    const fn = reducers[key]
    if (typeof fn !== 'function') continue
    reducers[key] = (v) => {
      if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return false
      const proto = Object.getPrototypeOf(v)
      if (proto === Object.prototype || proto === Array.prototype || proto === null) return false
      return fn(v)
    }
  }
  return reducers
}

/**
 * Whether `value` holds only strings, numbers, booleans, undefined, null, plain arrays and
 * plain objects (this realm's `Object.prototype` or none, no own `constructor`) — values no
 * reducer recognises (see `commonReducers`, `clientReducers`): devalue writes the same
 * bytes for them with or without the reducers, and without them it does not ask ~30
 * reducers about every value. Shared and circular references are fine (devalue keeps them).
 * (A getter of a plain object is read here and again by devalue.)
 */
function isPlainTree(value, seen) {
  if (value === null) return true
  const t = typeof value
  if (t !== 'object') return t === 'string' || t === 'number' || t === 'boolean' || t === 'undefined'
  // (the set of objects met is made only once there is an object: a primitive costs none)
  if (seen === undefined) seen = new Set()
  else if (seen.has(value)) return true
  const proto = Object.getPrototypeOf(value)
  if (proto === Array.prototype) {
    if (value.constructor !== Array) return false
    seen.add(value)
    for (let i = 0; i < value.length; i++) {
      if (!isPlainTree(value[i], seen)) return false
    }
    return true
  }
  if (proto !== Object.prototype && proto !== null) return false
  if (proto === Object.prototype && value.constructor !== Object) return false
  seen.add(value)
  for (const key of Object.keys(value)) {
    if (!isPlainTree(value[key], seen)) return false
  }
  return true
}

/** `"devl" + devalue` bytes of a value, or the plain devalue JSON for legacy (spec 1). */
function serializeValue(value, reducers, context, legacy) {
  let text
  try {
    text = isPlainTree(value) ? stringify(value) : stringify(value, reducers)
  } catch (error) {
    const verb = context.includes('return value') ? 'returning' : 'passing'
    let message = `Failed to serialize ${context}`
    if (error instanceof DevalueError && error.path) message += ` at path "${error.path}"`
    message += `. Ensure you're ${verb} serializable types (plain objects, arrays, primitives, Date, RegExp, Map, Set).`
    throw new WorkflowRuntimeError(message, { slug: 'serialization-failed', cause: error })
  }
  if (legacy) return { json: text }
  return { bytes: Buffer.from(`devl${text}`, 'utf8') }
}

module.exports = { clientReducers, commonReducers, serializeValue, frame, isPlainTree }
