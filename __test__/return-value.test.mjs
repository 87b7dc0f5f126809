// `run.returnValue` side by side with the official `workflow/api`: completed runs whose
// output was encoded by the official serializer (dehydrateWorkflowReturnValue), failed
// and cancelled runs, and payload errors.
import {
  createRun,
  completeRun,
  describeError,
  encodeReturnValue,
  fingerprint,
  official,
  officialErrors,
  ours,
  ourErrors,
  readJson,
  readText,
  file,
  settle,
  newRunId,
  world,
} from './helpers/harness.mjs'
import { registerSerializationClass } from '@workflow/core/class-serialization'
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'

class Point {
  constructor(x, y) {
    this.x = x
    this.y = y
  }
  norm() {
    return Math.hypot(this.x, this.y)
  }
  static [Symbol.for('workflow-serialize')](p) {
    return { x: p.x, y: p.y }
  }
  static [Symbol.for('workflow-deserialize')](d) {
    return new Point(d.x, d.y)
  }
}
registerSerializationClass('compat//Point', Point)

class MyError extends Error {
  constructor(message) {
    super(message)
    this.name = 'MyError'
  }
}

const shared = { shared: true, list: [1, 2] }
const cyclic = { name: 'cyclic' }
cyclic.self = cyclic
cyclic.children = [cyclic, { parent: cyclic }]
const selfSet = new Set()
selfSet.add(selfSet)
const cyclicArray = [1]
cyclicArray.push(cyclicArray)
const nullProto = Object.assign(Object.create(null), { k: 1, nested: Object.create(null) })
const sparse = [1, , 3] // eslint-disable-line no-sparse-arrays
const mostlyHoles = new Array(20)
mostlyHoles[3] = 'three'
mostlyHoles[17] = { seventeen: 17 }
const respBody = 'hello from a workflow Response'
function workflowResponse() {
  // Inside the workflow VM a Response's body is a fake stream that carries its BodyInit.
  const res = new Response(respBody, {
    status: 201,
    statusText: 'Created',
    headers: { 'x-compat': 'yes', 'content-type': 'text/plain' },
  })
  res.body[Symbol.for('BODY_INIT')] = respBody
  return res
}

const CASES = {
  'number 42': 42,
  'number 1.5e300': 1.5e300,
  'number MIN_VALUE': Number.MIN_VALUE,
  'number MAX_SAFE_INTEGER': Number.MAX_SAFE_INTEGER,
  'zero': 0,
  'negative zero': -0,
  NaN: NaN,
  Infinity: Infinity,
  '-Infinity': -Infinity,
  'empty string': '',
  'unicode string': 'héllo ✓ 𝄞 \u2028\u2029 "quoted" \\ </script>',
  true: true,
  false: false,
  null: null,
  undefined: undefined,
  'bigint 10n': 10n,
  'bigint huge negative': -(2n ** 130n) + 7n,
  'bigint 0n': 0n,
  'Date epoch': new Date(0),
  'Date with ms': new Date('2024-02-29T12:34:56.789Z'),
  'Date min': new Date(-8.64e15),
  'Date max': new Date(8.64e15),
  'invalid Date': new Date(NaN),
  Map: new Map([
    [1, 'a'],
    ['k', { x: 1 }],
    [{ obj: 'key' }, [1, 2]],
    [NaN, -0],
  ]),
  'empty Map': new Map(),
  Set: new Set([1, 'a', { b: 2 }, 10n]),
  'empty Set': new Set(),
  RegExp: /a.b/gi,
  'RegExp unicode/sticky/dotAll': /[\u{1F600}-\u{1F64F}]+.$/suy,
  'RegExp with slashes': new RegExp('a/b\\/c', 'm'),
  URL: new URL('https://user:pw@example.com:8080/p/a%20th?q=1&r=%20x#frag'),
  URLSearchParams: new URLSearchParams('a=1&b=2&a=3&sp=a+b'),
  'empty URLSearchParams': new URLSearchParams(),
  Uint8Array: new Uint8Array([1, 2, 3, 255]),
  'empty Uint8Array': new Uint8Array(0),
  'Uint8Array subarray view': new Uint8Array([0, 1, 2, 3, 4, 5]).subarray(2, 5),
  Uint8ClampedArray: new Uint8ClampedArray([0, 128, 255]),
  Int8Array: new Int8Array([-128, -1, 0, 127]),
  Int16Array: new Int16Array([-32768, 12345, 32767]),
  Uint16Array: new Uint16Array([0, 65535]),
  Int32Array: new Int32Array([-2147483648, 2147483647]),
  Uint32Array: new Uint32Array([0, 4294967295]),
  Float32Array: new Float32Array([1.5, NaN, -0, Infinity]),
  Float64Array: new Float64Array([Math.PI, -Infinity, Number.EPSILON]),
  BigInt64Array: new BigInt64Array([-1n, 2n ** 63n - 1n, -(2n ** 63n)]),
  BigUint64Array: new BigUint64Array([0n, 2n ** 64n - 1n]),
  ArrayBuffer: new Uint8Array([9, 8, 7]).buffer,
  'empty ArrayBuffer': new ArrayBuffer(0),
  Error: new Error('plain error'),
  TypeError: new TypeError('bad type'),
  RangeError: new RangeError('out of range'),
  'custom Error subclass': new MyError('mine'),
  AggregateError: new AggregateError([new Error('inner')], 'several'),
  Headers: new Headers({ a: '1', 'X-Multi': 'x', 'set-cookie': 'c=1' }),
  'nested object': { a: { b: { c: [1, { d: new Date(0), e: [new Map([[1, new Set([2])]])] }] } } },
  'object with odd keys': { '': 1, 'a b': 2, 1: 3, constructor: 4, toString: 5, 'ü': 6 },
  'null-prototype object': nullProto,
  'boxed primitives': [Object('s'), Object(5), Object(false)],
  'sparse array': sparse,
  'mostly holes': mostlyHoles,
  'array of undefined': [undefined, undefined],
  'empty array and object': [[], {}],
  'shared references': { a: shared, b: shared, arr: [shared, shared], m: new Map([[shared, shared]]) },
  'cyclic object': cyclic,
  // devalue cannot rebuild a cycle that runs through a reducer payload: the official
  // reader yields a Set holding `undefined`; ours must yield the same.
  'Set containing itself': selfSet,
  'array containing itself': cyclicArray,
  'registered class instance': { p: new Point(3, 4), list: [new Point(1, 2)] },
  'registered class itself': Point,
  'workflow Response': workflowResponse(),
  'large string (4 MB)': 'ü'.repeat(2_000_000),
  'large array (20k items)': Array.from({ length: 20_000 }, (_, i) => (i % 3 ? i : { i })),
  'kitchen sink': {
    when: new Date('2020-01-01T00:00:00Z'),
    big: 12345678901234567890n,
    bytes: new Uint8Array([1, 2]),
    url: new URL('http://x/'),
    re: /x/g,
    err: new TypeError('t'),
    list: [1, 'two', null, undefined, NaN, -0],
  },
}

const runIds = {}
async function runFor(name) {
  if (!runIds[name]) {
    runIds[name] = await createRun({ status: 'completed', value: CASES[name] })
  }
  return runIds[name]
}

describe('returnValue of completed runs deep-equals the official', () => {
  for (const name of Object.keys(CASES)) {
    test(name, async () => {
      const id = await runFor(name)
      const theirs = await official.getRun(id).returnValue
      const mine = await settle(() => ours.getRun(id).returnValue)
      assert.equal(mine.ok, true, `ours rejected: ${mine.error && mine.error.stack}`)
      if (name === 'workflow Response') {
        for (const r of [mine.value, theirs]) assert.ok(r instanceof Response)
        assert.equal(mine.value.status, theirs.status)
        assert.equal(mine.value.statusText, theirs.statusText)
        assert.deepEqual([...mine.value.headers], [...theirs.headers])
        assert.equal(await mine.value.text(), await theirs.text())
        return
      }
      assert.deepStrictEqual(fingerprint(mine.value), fingerprint(theirs))
    })
  }
})

// Payloads written by hand in the documented wire format (for types the official
// serializer cannot produce on this Node version, e.g. DOMException on Node 20).
const RAW_CASES = {
  DOMException:
    'devl[["DOMException",1],{"message":2,"name":3,"stack":4},"was aborted","AbortError","DOMException [AbortError]: was aborted\\n    at x"]',
  'DOMException with cause':
    'devl[["DOMException",1],{"message":2,"name":3,"stack":4,"cause":5},"m","TimeoutError","s",{"why":6},"slow"]',
  'Error with extra fields ignored':
    'devl[["Error",1],{"name":2,"message":3,"stack":4,"code":5},"SystemError","disk full","S","ENOSPC"]',
  'inline devalue built-ins (no custom reducer)':
    'devl[{"d":1,"r":2,"big":3,"m":4,"s":5,"o":6},["Date","2001-02-03T04:05:06.007Z"],["RegExp","a+","g"],["BigInt","77"],["Map",7,8],["Set",9],["Object",10],"k","v",1,"boxed"]',
  'devalue sparse-array marker': 'devl[[-7,1000,3,1,999,2],"first","last"]',
}

describe('hand-written payloads decode like the official', () => {
  for (const [name, text] of Object.entries(RAW_CASES)) {
    test(name, async () => {
      const id = await createRun({ status: 'running' })
      await completeRun(id, { output: new TextEncoder().encode(text) })
      const theirs = await settle(() => official.getRun(id).returnValue)
      const mine = await settle(() => ours.getRun(id).returnValue)
      assert.equal(mine.ok, theirs.ok, `ours ${mine.ok ? 'resolved' : `rejected: ${mine.error}`}, official ${theirs.ok ? 'resolved' : `rejected: ${theirs.error}`}`)
      if (theirs.ok) assert.deepStrictEqual(fingerprint(mine.value), fingerprint(theirs.value))
      else assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    })
  }

  test('a Map containing itself fails the same way in both (devalue limitation)', async () => {
    const m = new Map()
    m.set('me', m)
    const id = await createRun({ status: 'completed', value: m })
    const theirs = await settle(() => official.getRun(id).returnValue)
    const mine = await settle(() => ours.getRun(id).returnValue)
    assert.equal(theirs.ok, false)
    assert.equal(mine.ok, false)
    assert.deepEqual(describeError(mine.error), describeError(theirs.error))
  })
})

describe('returnValue semantics checked against the original value', () => {
  const get = async (name) => ours.getRun(await runFor(name)).returnValue

  test('-0, NaN and the infinities keep their identity', async () => {
    assert.ok(Object.is(await get('negative zero'), -0))
    assert.ok(Number.isNaN(await get('NaN')))
    assert.equal(await get('Infinity'), Infinity)
    assert.equal(await get('-Infinity'), -Infinity)
    assert.equal(await get('undefined'), undefined)
  })

  test('bigint and dates', async () => {
    assert.equal(await get('bigint huge negative'), -(2n ** 130n) + 7n)
    const d = await get('Date with ms')
    assert.ok(d instanceof Date)
    assert.equal(d.toISOString(), '2024-02-29T12:34:56.789Z')
    const invalid = await get('invalid Date')
    assert.ok(invalid instanceof Date)
    assert.ok(Number.isNaN(invalid.getTime()))
  })

  test('typed arrays own fresh buffers holding only the viewed bytes', async () => {
    const v = await get('Uint8Array subarray view')
    assert.ok(v instanceof Uint8Array)
    assert.deepEqual([...v], [2, 3, 4])
    assert.equal(v.byteOffset, 0)
    assert.equal(v.buffer.byteLength, 3)
    const big = await get('BigUint64Array')
    assert.ok(big instanceof BigUint64Array)
    assert.deepEqual([...big], [0n, 2n ** 64n - 1n])
  })

  test('errors are revived as plain Errors carrying name/message/stack', async () => {
    const original = CASES.TypeError
    const e = await get('TypeError')
    assert.ok(e instanceof Error)
    assert.equal(e.name, 'TypeError')
    assert.equal(e.message, 'bad type')
    assert.equal(e.stack, original.stack)
    const mine = await get('custom Error subclass')
    assert.equal(mine.name, 'MyError')
    assert.equal(mine.message, 'mine')
  })

  test('holes in sparse arrays are preserved', async () => {
    const a = await get('sparse array')
    assert.equal(a.length, 3)
    assert.equal(1 in a, false)
    const b = await get('mostly holes')
    assert.equal(b.length, 20)
    assert.deepEqual(Object.keys(b), ['3', '17'])
  })

  test('shared references stay shared; cycles are rebuilt', async () => {
    const s = await get('shared references')
    assert.equal(s.a, s.b)
    assert.equal(s.arr[0], s.a)
    assert.equal(s.arr[1], s.a)
    const [[k, v]] = [...s.m]
    assert.equal(k, s.a)
    assert.equal(v, s.a)
    const c = await get('cyclic object')
    assert.equal(c.self, c)
    assert.equal(c.children[0], c)
    assert.equal(c.children[1].parent, c)
    const arr = await get('array containing itself')
    assert.equal(arr[1], arr)
  })

  test('null-prototype objects keep a null prototype', async () => {
    const o = await get('null-prototype object')
    assert.equal(Object.getPrototypeOf(o), null)
    assert.equal(Object.getPrototypeOf(o.nested), null)
    assert.equal(o.k, 1)
  })

  test('registered classes are revived through the official registry', async () => {
    const v = await get('registered class instance')
    assert.ok(v.p instanceof Point)
    assert.equal(v.p.norm(), 5)
    assert.ok(v.list[0] instanceof Point)
    assert.equal(await get('registered class itself'), Point)
  })

  test('Headers, URL and URLSearchParams are real instances', async () => {
    const h = await get('Headers')
    assert.ok(h instanceof Headers)
    assert.equal(h.get('x-multi'), 'x')
    const u = await get('URL')
    assert.ok(u instanceof URL)
    assert.equal(u.href, CASES.URL.href)
    const q = await get('URLSearchParams')
    assert.ok(q instanceof URLSearchParams)
    assert.deepEqual(q.getAll('a'), ['1', '3'])
    assert.equal(q.get('sp'), 'a b')
  })

  test('each access decodes afresh (no shared mutable result)', async () => {
    const id = await runFor('nested object')
    const run = ours.getRun(id)
    const a = await run.returnValue
    const b = await run.returnValue
    assert.notEqual(a, b)
    assert.deepStrictEqual(fingerprint(a), fingerprint(b))
  })
})

describe('failed runs', () => {
  const FAILURES = {
    'USER_ERROR with stack': {
      error: { message: 'user code threw', stack: 'Error: user code threw\n    at wf (wf.js:3:9)' },
      errorCode: 'USER_ERROR',
    },
    'RUNTIME_ERROR': {
      error: { message: 'runtime broke', stack: 'WorkflowRuntimeError: runtime broke\n    at x' },
      errorCode: 'RUNTIME_ERROR',
    },
    'no stack': { error: { message: 'no stack here' }, errorCode: 'USER_ERROR' },
    'no errorCode': { error: { message: 'codeless', stack: 'Error: codeless' } },
    'string error': { error: 'just a string', errorCode: 'USER_ERROR' },
    'empty error object': { error: {}, errorCode: 'MAX_DELIVERIES_EXCEEDED' },
    'multi-line unicode message': { error: { message: 'línea 1\nline 2 ✓', stack: 's' }, errorCode: 'USER_ERROR' },
  }
  for (const [name, failure] of Object.entries(FAILURES)) {
    test(`${name}: both reject with the same WorkflowRunFailedError`, async () => {
      const id = await createRun({ status: 'failed', ...failure })
      const theirs = await settle(() => official.getRun(id).returnValue)
      const mine = await settle(() => ours.getRun(id).returnValue)
      assert.equal(theirs.ok, false)
      assert.equal(mine.ok, false, 'ours resolved')
      const e = mine.error
      assert.equal(e.name, 'WorkflowRunFailedError')
      assert.ok(e instanceof ourErrors.WorkflowRunFailedError)
      assert.ok(officialErrors.WorkflowRunFailedError.is(e))
      assert.equal(e.message, theirs.error.message)
      assert.equal(e.runId, id)
      assert.equal(e.runId, theirs.error.runId)
      assert.ok(e.cause instanceof Error, 'cause is not an Error')
      assert.equal(e.cause.message, theirs.error.cause.message)
      assert.equal(e.cause.code, theirs.error.cause.code)
      if (typeof failure.error === 'object' && failure.error.stack) {
        assert.equal(e.cause.stack, failure.error.stack)
        assert.equal(e.cause.stack, theirs.error.cause.stack)
      }
      if (failure.errorCode) assert.equal(e.cause.code, failure.errorCode)
      const file = readJson('runs', `${id}.json`)
      assert.equal(e.message, `Workflow run "${id}" failed: ${file.error.message}`)
    })
  }
})

describe('cancelled runs', () => {
  test('both reject with WorkflowRunCancelledError', async () => {
    const id = await createRun({ status: 'cancelled' })
    const theirs = await settle(() => official.getRun(id).returnValue)
    const mine = await settle(() => ours.getRun(id).returnValue)
    assert.equal(mine.ok, false)
    assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    assert.equal(mine.error.message, `Workflow run "${id}" cancelled`)
    assert.ok(mine.error instanceof ourErrors.WorkflowRunCancelledError)
    assert.ok(officialErrors.WorkflowRunCancelledError.is(mine.error))
  })

  test('a pending run cancelled before completion also rejects', async () => {
    const id = await createRun({ status: 'pending' })
    await world.events.create(id, { eventType: 'run_cancelled', specVersion: 3 })
    const mine = await settle(() => ours.getRun(id).returnValue)
    assert.equal(mine.ok, false)
    assert.equal(mine.error.name, 'WorkflowRunCancelledError')
  })
})

describe('payload errors match the official', () => {
  const enc = (s) => new TextEncoder().encode(s)
  const CASES2 = {
    'encrypted payload without a key': () => {
      const b = new Uint8Array(40)
      b.set(enc('encr'))
      for (let i = 4; i < 40; i++) b[i] = i
      return b
    },
    'unknown format prefix': () => enc('abcd[1]'),
    'too short': () => enc('de'),
    'devalue with a StepFunction': async (id) =>
      encodeReturnValue(Object.assign(() => {}, { stepId: 'step//./wf.js//s' }), id),
    'unregistered class': async () => enc('devl[["Instance",1],{"classId":2,"data":3},"compat//Nope",1]'),
    'devl prefix with invalid devalue text': () => enc('devl{not devalue'),
    'devl prefix with invalid UTF-8': () => new Uint8Array([...enc('devl["'), 0xff, 0xfe, ...enc('"]')]),
    'completed without output': () => undefined,
  }
  for (const [name, make] of Object.entries(CASES2)) {
    test(name, async () => {
      const id = await createRun({ status: 'running' })
      const output = await make(id)
      await world.events.create(id, {
        eventType: 'run_completed',
        specVersion: 3,
        eventData: output === undefined ? {} : { output },
      })
      const theirs = await settle(() => official.getRun(id).returnValue)
      const mine = await settle(() => ours.getRun(id).returnValue)
      if (theirs.ok) {
        assert.equal(mine.ok, true, `ours rejected: ${mine.error}`)
        assert.deepStrictEqual(fingerprint(mine.value), fingerprint(theirs.value))
        return
      }
      assert.equal(mine.ok, false, `ours resolved with ${String(mine.value)}`)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    })
  }
})

describe('legacy (spec 1) run files', () => {
  test('returnValue of a legacy run with a plain-JSON devalue output equals the official', async () => {
    // Pre-event-sourcing runs stored the flattened devalue array as plain JSON.
    const id = newRunId()
    await createRun({ runId: id, status: 'completed', value: 'placeholder' })
    const run = readJson('runs', `${id}.json`)
    delete run.specVersion
    run.output = [{ a: 1, when: 2, big: 4 }, 'x', ['Date', 3], '2021-05-06T07:08:09.000Z', ['BigInt', 5], '42']
    writeFileSync(file('runs', `${id}.json`), JSON.stringify(run, null, 2))
    const theirs = await official.getRun(id).returnValue
    const mine = await settle(() => ours.getRun(id).returnValue)
    assert.equal(mine.ok, true, `ours rejected: ${mine.error && mine.error.message}`)
    assert.deepStrictEqual(fingerprint(mine.value), fingerprint(theirs))
    assert.equal(mine.value.big, 42n)
    assert.ok(mine.value.when instanceof Date)
  })

  test('file untouched by reads', async () => {
    const id = await createRun({ status: 'completed', value: 1 })
    const before = readText('runs', `${id}.json`)
    await ours.getRun(id).returnValue
    await ours.getRun(id).status
    assert.equal(readText('runs', `${id}.json`), before)
  })
})

describe('fingerprint self-check (the comparison can fail)', () => {
  const differ = (a, b) => assert.notDeepStrictEqual(fingerprint(a), fingerprint(b))
  test('distinguishes what returnValue comparisons rely on', () => {
    differ(0, -0)
    differ(NaN, 'NaN')
    differ(1n, 1)
    differ(new Date(0), new Date(1))
    differ(new Date(NaN), new Date(0))
    differ([1, , 3], [1, undefined, 3]) // eslint-disable-line no-sparse-arrays
    differ(new Map([[1, 2]]), { 1: 2 })
    differ(new Uint8Array([1]), new Int8Array([1]))
    differ(Object.create(null), {})
    const s = { x: 1 }
    differ({ a: s, b: s }, { a: { x: 1 }, b: { x: 1 } })
    differ(new TypeError('x'), new Error('x'))
    differ({ a: 1, b: 2 }, { b: 2, a: 1 })
    differ(new Headers({ a: '1' }), new Headers({ a: '2' }))
    differ(new URL('http://a/'), new URL('http://b/'))
  })
})
