'use strict'
// Argument checks for the public functions, where `workflow/api` 4.8.9 has none of its own
// (it would pass the value on and fail deep inside, or write it to disk). The errors are
// shaped like Node's own argument errors: a TypeError (ERR_INVALID_ARG_TYPE) or a
// RangeError (ERR_OUT_OF_RANGE) whose message names the argument and what it received.

const { inspect } = require('node:util')

/** ` Received …` as Node's argument errors describe a value. */
function received(value) {
  if (value === null || value === undefined) return ` Received ${value}`
  if (typeof value === 'function') return ` Received function ${value.name || '<anonymous>'}`
  if (typeof value === 'object') {
    const ctor = safe(() => value.constructor && value.constructor.name)
    if (typeof ctor === 'string' && ctor) return ` Received an instance of ${ctor}`
    return ` Received ${safe(() => inspect(value, { depth: -1 })) || 'an object'}`
  }
  let shown = safe(() => inspect(value, { colors: false })) || String(typeof value)
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`
  return ` Received type ${typeof value} (${shown})`
}

function safe(fn) {
  try {
    return fn()
  } catch {
    return undefined
  }
}

/** `argument` for a plain name, `property` for a dotted or indexed one (as Node words it). */
function kind(name) {
  return /[.[]/.test(name) ? 'property' : 'argument'
}

/** A TypeError with code ERR_INVALID_ARG_TYPE: `name` must be `expected`. */
function invalidArgType(name, expected, value) {
  const e = new TypeError(`The "${name}" ${kind(name)} must be ${expected}.${received(value)}`)
  e.code = 'ERR_INVALID_ARG_TYPE'
  return e
}

/** A RangeError with code ERR_OUT_OF_RANGE. */
function outOfRange(name, range, value) {
  const shown = typeof value === 'string' ? JSON.stringify(value) : safe(() => inspect(value)) || String(value)
  const e = new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${shown}`)
  e.code = 'ERR_OUT_OF_RANGE'
  return e
}

function requireString(name, value) {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value)
  return value
}

/** `undefined`/`null` → undefined; a string as is; anything else a TypeError. */
function optionalString(name, value) {
  if (value === undefined || value === null) return undefined
  return requireString(name, value)
}

/** `undefined`/`null` → `{}`; an object as is; anything else a TypeError. */
function optionsObject(name, value) {
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object') throw invalidArgType(name, 'of type object', value)
  return value
}

/** Text for a value in a message, whatever it is (a Symbol cannot go through `${}`). */
function display(value) {
  if (typeof value === 'symbol') return value.toString()
  const s = safe(() => `${value}`)
  return s === undefined ? (safe(() => inspect(value)) ?? typeof value) : s
}

module.exports = {
  invalidArgType,
  outOfRange,
  requireString,
  optionalString,
  optionsObject,
  display,
  received,
}
