// Stream faults and options (issue 11): corrupt chunk files give a typed CORRUPT_FILE error
// naming the file from getReadable() (and from getTailIndex() when the tail index depends
// on the file), and getReadable() checks its options as the official Run.getReadable does
// — side by side with the official `workflow/api` on the same data directory.
import { createRun, dataDir, official, ours, settle, streamName, writeValues } from './helpers/harness.mjs'
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'

const chunksDir = path.join(dataDir, 'streams', 'chunks')

/** The chunk files of a run's stream, in chunk order. */
function chunkFiles(runId, namespace) {
  const prefix = `${streamName(runId, namespace)}-`
  return fs
    .readdirSync(chunksDir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.bin'))
    .sort()
    .map((f) => path.join(chunksDir, f))
}

async function readAll(stream) {
  const out = []
  for await (const v of stream) out.push(v)
  return out
}

/** A bound on anything that could hang (the official reader does on most of these files). */
function within(ms, promise, what) {
  let timer
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer))
}

const CORRUPTIONS = {
  truncated: (p) => fs.writeFileSync(p, fs.readFileSync(p).subarray(0, 8)),
  garbled: (p) => fs.writeFileSync(p, Buffer.from('\u0000\u0001\u0002 random bytes, not a frame')),
  '0xFFFFFFFF length prefix': (p) =>
    fs.writeFileSync(p, Buffer.concat([Buffer.from([0, 0xff, 0xff, 0xff, 0xff]), Buffer.from('devl["b"]')])),
  'invalid devalue text in a frame': (p) => {
    const body = Buffer.from('devl["b",')
    const len = Buffer.alloc(4)
    len.writeUInt32BE(body.length)
    fs.writeFileSync(p, Buffer.concat([Buffer.from([0]), len, body]))
  },
  empty: (p) => fs.writeFileSync(p, Buffer.alloc(0)),
  'close marker with more bytes': (p) => fs.writeFileSync(p, Buffer.from([1, 0x5b, 0x5d])),
  'directory in place of the file': (p) => {
    fs.rmSync(p)
    fs.mkdirSync(p)
  },
}

/** Whether the tail index has to open the corrupt file (only the last one is opened). */
const TAIL_OPENS_LAST = new Set(['empty', 'close marker with more bytes', 'directory in place of the file'])

function assertCorruptFileError(error, file, what) {
  assert.ok(error instanceof Error, `${what}: not an Error: ${error}`)
  assert.equal(error.name, 'WorkflowWorldError', `${what}: ${error.name}: ${error.message}`)
  assert.equal(error.code, 'CORRUPT_FILE', `${what}: ${error.message}`)
  assert.equal(error.path, file, what)
  assert.ok(error.message.includes(file), `${what}: the message does not name the file: ${error.message}`)
}

describe('corrupt chunk files', () => {
  for (const [kind, corrupt] of Object.entries(CORRUPTIONS)) {
    for (const where of ['middle', 'last']) {
      test(`${kind} (${where} chunk): getReadable rejects with CORRUPT_FILE naming it; getTailIndex agrees`, async () => {
        const runId = await createRun({ status: 'running' })
        // middle: a, [b], c, close marker — last: a, b, [c] (stream still open)
        await writeValues(runId, ['a', 'b', 'c'], { close: where === 'middle' })
        const files = chunkFiles(runId)
        const bad = where === 'middle' ? files[1] : files[2]
        corrupt(bad)

        const reader = ours.getRun(runId).getReadable().getReader()
        const values = []
        const error = await within(
          10_000,
          (async () => {
            try {
              for (;;) {
                const { done, value } = await reader.read()
                if (done) return undefined
                values.push(value)
              }
            } catch (e) {
              return e
            }
          })(),
          'reading',
        )
        // Every chunk before the bad one is delivered, then the error; nothing after it.
        assert.deepEqual(values, where === 'middle' ? ['a'] : ['a', 'b'])
        assertCorruptFileError(error, bad, kind)

        const tail = await settle(() => ours.getRun(runId).getReadable().getTailIndex())
        if (where === 'last' && TAIL_OPENS_LAST.has(kind)) {
          assert.equal(tail.ok, false, `${kind}: tail index ${tail.value}`)
          assertCorruptFileError(tail.error, bad, `${kind} (tail index)`)
        } else {
          // Counted as a chunk, as world-local counts it: the reader fails at that index.
          assert.deepEqual(tail, { ok: true, value: 2 })
        }
      })
    }
  }

  test('reference: the official reader names no file (here: truncated, in the middle)', async () => {
    const runId = await createRun({ status: 'running' })
    await writeValues(runId, ['a', 'b', 'c'], { close: true })
    CORRUPTIONS.truncated(chunkFiles(runId)[1])
    const r = await settle(() => within(10_000, readAll(official.getRun(runId).getReadable()), 'official read'))
    assert.equal(r.ok, false)
    assert.equal(r.error.name, 'WorkflowRuntimeError')
    assert.ok(!r.error.message.includes(chunksDir), r.error.message)
  })

  test('a chunk whose flag byte is neither 0 nor 1 is data, as world-local reads it', async () => {
    const runId = await createRun({ status: 'running' })
    await writeValues(runId, ['a', 'b'], { close: true })
    const file = chunkFiles(runId)[1]
    const bytes = fs.readFileSync(file)
    bytes[0] = 7
    fs.writeFileSync(file, bytes)
    const theirs = await within(10_000, readAll(official.getRun(runId).getReadable()), 'official read')
    assert.deepEqual(theirs, ['a', 'b'])
    assert.deepEqual(await readAll(ours.getRun(runId).getReadable()), theirs)
    assert.equal(await ours.getRun(runId).getReadable().getTailIndex(), 1)
  })
})

describe('getReadable() options, side by side with the official', () => {
  let runId
  const VALUES = ['v0', 'v1', 'v2', 'v3', 'v4']
  const syncOutcome = (fn) => {
    try {
      const stream = fn()
      stream.cancel().catch(() => {})
      return { threw: false }
    } catch (e) {
      return { threw: true, name: e.name, message: e.message, code: e.code, ctor: e.constructor.name }
    }
  }

  test('setup: a closed stream of five values, and one per namespace', async () => {
    runId = await createRun({ status: 'running' })
    await writeValues(runId, VALUES, { close: true })
    await writeValues(runId, ['hi'], { namespace: 'hi', close: true })
    await writeValues(runId, ['bytes'], { namespace: '\u0001\u0002', close: true })
  })

  for (const [label, namespace] of [
    ['123', 123],
    ['{}', {}],
    ['true', true],
    ['Symbol()', Symbol('ns')],
    ['a function', () => {}],
  ]) {
    test(`namespace: ${label} throws the official TypeError (same message and code)`, () => {
      const theirs = syncOutcome(() => official.getRun(runId).getReadable({ namespace }))
      const mine = syncOutcome(() => ours.getRun(runId).getReadable({ namespace }))
      assert.equal(theirs.threw, true)
      assert.equal(theirs.name, 'TypeError')
      assert.deepEqual(mine, theirs)
    })
  }

  for (const [label, namespace, expected] of [
    ['0 (falsy: the default stream)', 0, VALUES],
    ["'' (the default stream)", '', VALUES],
    ['null (the default stream)', null, VALUES],
    ["Uint8Array of 'hi' (its bytes)", new Uint8Array([104, 105]), ['hi']],
    ['[1, 2] (its bytes)', [1, 2], ['bytes']],
  ]) {
    test(`namespace: ${label} is accepted as the official accepts it`, async () => {
      const theirs = await within(10_000, readAll(official.getRun(runId).getReadable({ namespace })), 'official read')
      assert.deepEqual(theirs, expected)
      assert.deepEqual(await readAll(ours.getRun(runId).getReadable({ namespace })), theirs)
    })
  }

  for (const [label, startIndex, expected] of [
    ['NaN (from the first chunk)', NaN, VALUES],
    ['null (from the first chunk)', null, VALUES],
    ['-Infinity (from the first chunk)', -Infinity, VALUES],
    ['-2 (the last two)', -2, VALUES.slice(-2)],
    ['-50 (all)', -50, VALUES],
    ['3', 3, VALUES.slice(3)],
  ]) {
    test(`startIndex: ${label} reads what the official reads`, async () => {
      const theirs = await within(10_000, readAll(official.getRun(runId).getReadable({ startIndex })), 'official read')
      assert.deepEqual(theirs, expected)
      assert.deepEqual(await readAll(ours.getRun(runId).getReadable({ startIndex })), theirs)
    })
  }

  // The official accepts these without a word, then delivers nothing, ever (a closed stream
  // never ends: '2' is even read as chunk 20, `'2' + 0`), or coerces them (true: from
  // chunk 1; {}: from the first chunk). We throw at once, with Node's argument errors.
  for (const [label, startIndex, name, code, message] of [
    ['Infinity', Infinity, 'RangeError', 'ERR_OUT_OF_RANGE', 'The value of "startIndex" is out of range. It must be an integer. Received Infinity'],
    ['1.5', 1.5, 'RangeError', 'ERR_OUT_OF_RANGE', 'The value of "startIndex" is out of range. It must be an integer. Received 1.5'],
    ['-1.5', -1.5, 'RangeError', 'ERR_OUT_OF_RANGE', 'The value of "startIndex" is out of range. It must be an integer. Received -1.5'],
    ["'2'", '2', 'TypeError', 'ERR_INVALID_ARG_TYPE', `The "startIndex" option must be of type number. Received type string ('2')`],
    ['3n', 3n, 'TypeError', 'ERR_INVALID_ARG_TYPE', 'The "startIndex" option must be of type number. Received type bigint (3n)'],
    ['true', true, 'TypeError', 'ERR_INVALID_ARG_TYPE', 'The "startIndex" option must be of type number. Received type boolean (true)'],
    ['{}', {}, 'TypeError', 'ERR_INVALID_ARG_TYPE', 'The "startIndex" option must be of type number. Received an instance of Object'],
  ]) {
    test(`startIndex: ${label} throws a ${name} at once (the official does not throw)`, () => {
      assert.deepEqual(syncOutcome(() => official.getRun(runId).getReadable({ startIndex })), { threw: false })
      assert.deepEqual(syncOutcome(() => ours.getRun(runId).getReadable({ startIndex })), {
        threw: true,
        name,
        message,
        code,
        ctor: name,
      })
    })
  }

  test('getReadable(null) throws the official TypeError', () => {
    const theirs = syncOutcome(() => official.getRun(runId).getReadable(null))
    assert.equal(theirs.threw, true)
    assert.deepEqual(syncOutcome(() => ours.getRun(runId).getReadable(null)), theirs)
  })

  test('getTailIndex() uses the same stream as the reader (namespace as bytes)', async () => {
    const namespace = new Uint8Array([104, 105])
    const a = official.getRun(runId).getReadable({ namespace })
    const b = ours.getRun(runId).getReadable({ namespace })
    assert.equal(await b.getTailIndex(), await a.getTailIndex())
    assert.equal(await b.getTailIndex(), 0)
    await a.cancel()
    await b.cancel()
  })
})
