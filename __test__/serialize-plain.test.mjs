// Values made only of primitives, plain arrays and plain objects are serialized without
// the reducers (no reducer recognises them): the bytes must be exactly those devalue
// writes with the reducers, for any such value, and anything else must still go through
// them.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { prng } from './helpers/prng.mjs'

const require = createRequire(import.meta.url)
const { serializeValue, clientReducers, isPlainTree } = require('../lib/serialize.js')
const { stringify } = require('../lib/vendor/devalue.cjs')

const reducers = clientReducers({
  global: globalThis,
  runId: 'wrun_test',
  ops: [],
  framedByteStreams: true,
  streams: { newName: () => 'strm_test', pipeIn: () => Promise.resolve(), pipeOut: () => Promise.resolve() },
  stepSide: true,
})

/** What the reducers path writes: the bytes serializeValue must give. */
function viaReducers(value) {
  return Buffer.from(`devl${stringify(value, reducers)}`, 'utf8')
}

function outcome(fn) {
  try {
    return { ok: fn() }
  } catch (e) {
    return { err: `${e.name}: ${e.message}` }
  }
}

function same(value, label) {
  const fast = outcome(() => serializeValue(value, reducers, 'step return value', false).bytes)
  const slow = outcome(() => viaReducers(value))
  if (slow.err) {
    assert.ok(fast.err, `${label}: the reducers path throws (${slow.err}), the fast one did not`)
    return
  }
  assert.ok(fast.ok, `${label}: ${fast.err}`)
  assert.equal(fast.ok.toString('utf8'), slow.ok.toString('utf8'), label)
}

const STRINGS = ['', 'a', 'text with spaces', '</script><script>', 'quote " and \\ backslash', 'line\nbreak\ttab', '\u2028\u2029', 'émoji 🎉', '\u0000\u001f', '__proto__']
const NUMBERS = [0, -0, 1, -1, 1.5, 1e21, -1e-7, Number.MAX_SAFE_INTEGER, NaN, Infinity, -Infinity]

function randomPlain(next, depth) {
  const r = next()
  if (depth <= 0 || r < 0.45) {
    const k = Math.floor(next() * 5)
    if (k === 0) return STRINGS[Math.floor(next() * STRINGS.length)]
    if (k === 1) return NUMBERS[Math.floor(next() * NUMBERS.length)]
    if (k === 2) return next() < 0.5
    if (k === 3) return null
    return undefined
  }
  if (r < 0.7) {
    const n = Math.floor(next() * 5)
    const arr = []
    for (let i = 0; i < n; i++) arr.push(randomPlain(next, depth - 1))
    if (next() < 0.1) arr[n + 2] = 1 // holes
    return arr
  }
  const obj = next() < 0.1 ? Object.create(null) : {}
  const n = Math.floor(next() * 5)
  for (let i = 0; i < n; i++) obj[next() < 0.2 ? STRINGS[i] : `k${i}`] = randomPlain(next, depth - 1)
  return obj
}

test('random plain values: the same bytes as through the reducers', () => {
  const next = prng(20261206)
  for (let i = 0; i < 3000; i++) {
    const v = randomPlain(next, 4)
    assert.ok(isPlainTree(v))
    same(v, `value ${i}: ${JSON.stringify(v)}`)
  }
})

test('shared and circular references, holes, null-prototype objects', () => {
  const shared = { s: 1 }
  same({ a: shared, b: shared, c: [shared, shared] }, 'shared')
  const cyc = { name: 'loop' }
  cyc.self = cyc
  cyc.list = [cyc, { back: cyc }]
  assert.ok(isPlainTree(cyc))
  same(cyc, 'circular')
  const arr = [1]
  arr.push(arr)
  same(arr, 'circular array')
  // eslint-disable-next-line no-sparse-arrays
  same([1, , 3, , , undefined], 'holes')
  const bare = Object.create(null)
  bare.x = { y: Object.create(null) }
  same(bare, 'null prototype')
})

test('values a reducer recognises go through the reducers', () => {
  class Point {
    static classId = 'test/Point'
    static [Symbol.for('workflow-serialize')](p) {
      return { x: p.x }
    }
    constructor(x) {
      this.x = x
    }
  }
  const cases = {
    date: { at: new Date(0) },
    bigint: [10n],
    map: new Map([[1, { a: 1 }]]),
    set: { s: new Set([1]) },
    bytes: { b: new Uint8Array([1, 2, 3]) },
    url: [new URL('https://example.com/x')],
    regexp: /a+/g,
    error: { e: new TypeError('boom') },
    instance: { p: new Point(3) },
    'own constructor pointing at a serializable class': { constructor: Point, x: 1 },
    'array subclass': new (class extends Array {})(),
  }
  for (const [label, v] of Object.entries(cases)) {
    assert.equal(isPlainTree(v), false, label)
    same(v, label)
  }
})

test('what devalue refuses is refused the same way (symbols, functions, symbol keys)', () => {
  for (const [label, v] of [
    ['symbol', { s: Symbol('x') }],
    ['function', { f() {} }],
    ['symbol key', { [Symbol('k')]: 1 }],
  ]) {
    const fast = outcome(() => serializeValue(v, reducers, 'step return value', false))
    const slow = outcome(() => viaReducers(v))
    assert.ok(slow.err, label)
    assert.ok(fast.err, label)
    assert.match(fast.err, /WorkflowRuntimeError: Failed to serialize step return value/, label)
  }
})
