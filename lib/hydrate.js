'use strict'
// Decoding of stored payloads, as `hydrateWorkflowReturnValue` and the stream
// deserializer of @workflow/core do it for the client side ("external" revivers):
// `"devl" + devalue text` parsed with the workflow type extensions, built with the
// constructors of the caller's realm (`global`), so `instanceof Date` holds under Jest.

const { parse, unflatten } = require('./vendor/devalue.cjs')
const { WorkflowRuntimeError, RuntimeDecryptionError } = require('../errors.js')

const CLASS_REGISTRY = Symbol.for('workflow-class-registry')
const WORKFLOW_DESERIALIZE = Symbol.for('workflow-deserialize')

function base64ToArrayBuffer(global, value) {
  const bytes = Buffer.from(value === '.' ? '' : value, 'base64')
  const ab = new global.ArrayBuffer(bytes.length)
  new global.Uint8Array(ab).set(bytes)
  return ab
}

function lookupClass(global, classId) {
  const registry = global[CLASS_REGISTRY]
  const cls = registry && typeof registry.get === 'function' ? registry.get(classId) : undefined
  if (!cls) {
    throw new Error(`Class "${classId}" not found. Make sure the class is registered with registerSerializationClass.`)
  }
  return cls
}

/**
 * The client-side revivers. `openStream(ref)` turns a serialized stream reference
 * into a live ReadableStream (supplied by the caller, which knows the World).
 */
function externalRevivers(global, openStream) {
  const typed = (Ctor) => (value) => new global[Ctor](base64ToArrayBuffer(global, value))
  return {
    ArrayBuffer: (value) => base64ToArrayBuffer(global, value),
    BigInt: (value) => global.BigInt(value),
    BigInt64Array: typed('BigInt64Array'),
    BigUint64Array: typed('BigUint64Array'),
    Date: (value) => new global.Date(value),
    DOMException: (value) => {
      const error = new global.DOMException(value.message, value.name)
      if (value.stack !== undefined) error.stack = value.stack
      if ('cause' in value) error.cause = value.cause
      return error
    },
    Error: (value) => {
      const error = new global.Error(value.message)
      error.name = value.name
      error.stack = value.stack
      return error
    },
    Float32Array: typed('Float32Array'),
    Float64Array: typed('Float64Array'),
    Headers: (value) => new global.Headers(value),
    Int8Array: typed('Int8Array'),
    Int16Array: typed('Int16Array'),
    Int32Array: typed('Int32Array'),
    Map: (value) => new global.Map(value),
    RegExp: (value) => new global.RegExp(value.source, value.flags),
    Class: (value) => lookupClass(global, value.classId),
    Instance: (value) => {
      const cls = lookupClass(global, value.classId)
      const deserialize = cls[WORKFLOW_DESERIALIZE]
      if (typeof deserialize !== 'function') {
        throw new Error(`Class "${value.classId}" does not have a static ${String(WORKFLOW_DESERIALIZE)} method.`)
      }
      return deserialize.call(cls, value.data)
    },
    Set: (value) => new global.Set(value),
    URL: (value) => new global.URL(value),
    URLSearchParams: (value) => new global.URLSearchParams(value === '.' ? '' : value),
    Uint8Array: typed('Uint8Array'),
    Uint8ClampedArray: typed('Uint8ClampedArray'),
    Uint16Array: typed('Uint16Array'),
    Uint32Array: typed('Uint32Array'),
    StepFunction: () => {
      throw new Error(
        'Step functions cannot be deserialized in client context. Step functions should not be returned from workflows.',
      )
    },
    Request: (value) =>
      new global.Request(value.url, {
        method: value.method,
        headers: new global.Headers(value.headers),
        body: value.body,
        duplex: value.duplex,
      }),
    Response: (value) =>
      new global.Response(value.body, {
        status: value.status,
        statusText: value.statusText,
        headers: new global.Headers(value.headers),
      }),
    ReadableStream: (value) => {
      if ('bodyInit' in value) return new global.Response(value.bodyInit).body
      return openStream(value)
    },
    WritableStream: () => {
      throw new WorkflowRuntimeError(
        'workflow-native cannot yet revive a WritableStream returned by a workflow; read it with the official package.',
      )
    },
  }
}

const ENCRYPTED_NO_KEY =
  'Encrypted data encountered but no encryption key is available. ' +
  'Encryption is not configured or no key was provided for this run.'

/** Decodes a format-prefixed payload (`Uint8Array`/Buffer) or a legacy JSON value. */
function hydratePayload(bytes, legacyJson, hasValue, revivers) {
  if (bytes === undefined || bytes === null) {
    // Legacy spec-1 data is the flattened devalue array itself (or nothing at all,
    // which devalue rejects as the official reader does).
    return unflatten(hasValue ? JSON.parse(legacyJson) : undefined, revivers)
  }
  if (bytes.length < 4) {
    throw new Error(`Data too short to contain format prefix: expected at least 4 bytes, got ${bytes.length}`)
  }
  const format = Buffer.from(bytes.buffer, bytes.byteOffset, 4).toString('utf8')
  if (format === 'devl') {
    return parse(Buffer.from(bytes.buffer, bytes.byteOffset + 4, bytes.length - 4).toString('utf8'), revivers)
  }
  if (format === 'encr') {
    throw new RuntimeDecryptionError(ENCRYPTED_NO_KEY, {
      context: { operation: 'decrypt', byteLength: bytes.byteLength, formatPrefix: 'encr' },
    })
  }
  throw new WorkflowRuntimeError(`Unknown serialization format: "${format}". Known formats: devl, encr`)
}

module.exports = { externalRevivers, hydratePayload, parse, unflatten }
