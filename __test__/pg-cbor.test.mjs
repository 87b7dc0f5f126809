// The CBOR of world-postgres's bytea columns: our encoder against cbor-x 1.6 (what
// world-postgres 4.3.7 writes with), value by value, and our decoder on cbor-x's bytes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { encode } from 'cbor-x'

const { binding } = await import('../lib/native.js')

function toJson(v) {
  if (v instanceof Uint8Array) return { __type: 'Uint8Array', data: Buffer.from(v).toString('base64') }
  if (v instanceof Date) return v.toISOString()
  if (Array.isArray(v)) return v.map(toJson)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]))
  return v
}

const long = 'x'.repeat(300)
const manyKeys = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, i]))
const CASES = {
  'small ints': [0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295],
  'negative ints': [-1, -24, -25, -256, -257, -65536, -65537, -2147483648],
  'outside 32 bits': [4294967296, -2147483649, 2 ** 53 - 1, -(2 ** 53)],
  floats: [1.5, -0.25, 3.141592653589793, 1e300, 1e-300],
  strings: ['', 'a', 'x'.repeat(23), 'x'.repeat(24), long, 'ünïcødé ✓ 𝄞'],
  'nested objects and arrays': { a: [1, [2, [3]]], b: { c: { d: null } }, e: true, f: false, many: manyKeys, empty: {}, none: [] },
  binary: { input: new Uint8Array([0x64, 0x65, 0x76, 0x6c, 1, 2, 3]), empty: new Uint8Array(0), big: new Uint8Array(70000).fill(7) },
  'dates (millisecond and whole second)': { resumeAt: new Date(Date.UTC(2030, 0, 1, 0, 0, 0, 250)), retryAfter: new Date(Date.UTC(2030, 0, 1)) },
  'an event payload': {
    stepName: 'step//./src/x//add',
    input: new Uint8Array([1, 2, 3]),
    error: { message: 'boom', stack: 'Error: boom\n    at x (y.js:1:1)' },
  },
}

for (const [name, value] of Object.entries(CASES)) {
  test(`cbor-x bytes: ${name}`, () => {
    const theirs = Buffer.from(encode(value)).toString('hex')
    const mine = binding.pgCborEncodeForTest(JSON.stringify(toJson(value)), ['resumeAt', 'retryAfter']).toString('hex')
    assert.equal(mine, theirs)
    assert.deepEqual(JSON.parse(binding.pgCborDecodeForTest(Buffer.from(encode(value)))), toJson(value))
  })
}

test('undefined inside an object (cbor-x writes 0xf7) is dropped when read', () => {
  const bytes = Buffer.from(encode({ message: 'm', stack: undefined, code: undefined }))
  assert.ok(bytes.includes(0xf7))
  assert.deepEqual(JSON.parse(binding.pgCborDecodeForTest(bytes)), { message: 'm' })
})

test('bytes that are not CBOR are an error, not a crash', () => {
  for (const b of [[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0xb9], [0x1c], [1, 2]]) {
    assert.throws(() => binding.pgCborDecodeForTest(Buffer.from(b)))
  }
})
