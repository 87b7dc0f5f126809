'use strict'
// The one boundary to the generated binding. Every export is wrapped once, here: functions,
// class constructors, methods and getters, the promises they return and the native objects
// they hand out (a NativeStreamReader from openStream). Whatever native code throws or
// rejects with leaves this module as a real JS error of the right class, so no call site
// converts errors itself.

// The addon for this platform: a local build or the installed platform package.
const raw = require('./loader.js').loadNative()
const errors = require('../errors.js')

// Defined once, in the binding (src/lib.rs).
const MARKER = raw.errorMarker()

// napi statuses of an argument napi could not convert (wrong type, unknown enum value):
// the caller's mistake, so a TypeError, as Node's own argument checks throw.
const ARGUMENT_STATUSES = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
  'DateExpected',
  'ArrayBufferExpected',
  'DetachableArraybufferExpected',
])

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
  for (const key of ['code', 'path', 'sqlstate']) {
    if (data[key] !== undefined && err[key] === undefined) err[key] = data[key]
  }
  return err
}

/**
 * The JS error for an error thrown by the binding (`label` names the export, for napi's
 * own argument errors); anything else, including an error already converted, passes
 * through unchanged.
 */
function fromNative(e, label) {
  if (!e || typeof e.message !== 'string') return e
  if (e.message.startsWith(MARKER)) {
    try {
      return errorFromData(JSON.parse(e.message.slice(MARKER.length)))
    } catch {
      return e
    }
  }
  if (e.name === 'Error' && ARGUMENT_STATUSES.has(e.code)) {
    const t = new TypeError(label ? `${label}: ${e.message}` : e.message)
    t.code = e.code
    return t
  }
  return e
}

/** The instance wrapper of each native class, by the native class's prototype. */
const wrappers = new Map()
/** The native object behind a wrapper instance. */
const NATIVE = Symbol('workflow-native.native')

/** A native class instance as its wrapper; any other value unchanged. */
function adopt(value) {
  if (value === null || typeof value !== 'object') return value
  const Wrapper = wrappers.get(Object.getPrototypeOf(value))
  if (!Wrapper) return value
  const w = Object.create(Wrapper.prototype)
  w[NATIVE] = value
  return w
}

/** A call's result, with native objects wrapped and a rejection converted. */
function settle(result, label) {
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    return result.then(adopt, (e) => {
      throw fromNative(e, label)
    })
  }
  return adopt(result)
}

/** `fn` called on the wrapper's native object (`native`) or as is, errors and results converted. */
function wrapCall(fn, label, native) {
  return function (...args) {
    let result
    try {
      result = fn.apply(native ? this[NATIVE] : this, args)
    } catch (e) {
      throw fromNative(e, label)
    }
    return settle(result, label)
  }
}

/** A JS class standing for native class `Native`: same methods and getters, wrapped. */
function wrapClass(name, Native) {
  const Wrapper = {
    [name]: class {
      constructor(...args) {
        try {
          this[NATIVE] = new Native(...args)
        } catch (e) {
          throw fromNative(e, `new ${name}`)
        }
      }
    },
  }[name]
  for (const key of Object.getOwnPropertyNames(Native.prototype)) {
    if (key === 'constructor') continue
    const d = Object.getOwnPropertyDescriptor(Native.prototype, key)
    const label = `${name}#${key}`
    const wrapped = { configurable: true, enumerable: d.enumerable }
    if (typeof d.value === 'function') {
      wrapped.value = wrapCall(d.value, label, true)
      wrapped.writable = true
    } else if (d.get || d.set) {
      if (d.get) wrapped.get = wrapCall(d.get, label, true)
      if (d.set) wrapped.set = wrapCall(d.set, label, true)
    } else {
      continue
    }
    Object.defineProperty(Wrapper.prototype, key, wrapped)
  }
  for (const key of Object.getOwnPropertyNames(Native)) {
    const d = Object.getOwnPropertyDescriptor(Native, key)
    if (typeof d.value === 'function') Wrapper[key] = wrapCall(d.value, `${name}.${key}`, false)
  }
  wrappers.set(Native.prototype, Wrapper)
  return Wrapper
}

/** A native class has methods or accessors on its prototype; a plain function has none. */
function isClass(v) {
  return typeof v === 'function' && v.prototype && Object.getOwnPropertyNames(v.prototype).some((k) => k !== 'constructor')
}

const binding = {}
for (const [name, value] of Object.entries(raw)) {
  if (isClass(value)) binding[name] = wrapClass(name, value)
  else if (typeof value === 'function') binding[name] = wrapCall(value, name, false)
  else binding[name] = value
}
Object.freeze(binding)

module.exports = { binding, fromNative, errorFromData }
