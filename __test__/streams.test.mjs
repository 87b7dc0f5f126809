// Run streams (getReadable / readable / getTailIndex) side by side with the official
// `workflow/api`, on chunk files written by the official world-local exactly as the
// runtime writes them (one frame per chunk: u32 BE length + "devl" + devalue text).
import {
  createRun,
  completeRun,
  dataDir,
  fingerprint,
  frameValue,
  listDir,
  newId,
  newRunId,
  official,
  ours,
  readAll,
  readN,
  settle,
  streamName,
  world,
  writeValues,
  serialization,
} from './helpers/harness.mjs'
import { test, describe, before } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import vm from 'node:vm'

const VALUES = [
  1,
  'two',
  new Date(0),
  null,
  undefined,
  NaN,
  -0,
  10n ** 30n,
  { n: 1, nested: { deep: [1, 2, { three: 3 }] } },
  [1, , 3], // eslint-disable-line no-sparse-arrays
  new Map([['k', new Set([1, 2])]]),
  /re+/gi,
  new URL('https://example.com/a?b=c'),
  new Uint8Array([0, 1, 2, 255]),
  new Float64Array([Math.E]),
  new TypeError('chunk error'),
  new Headers({ 'x-a': '1' }),
  'ünïcödé ✓ 𝄞',
  '',
  { shared: 'x' },
]

const compare = (mine, theirs) => assert.deepStrictEqual(fingerprint(mine), fingerprint(theirs))

/** Both readers on the same stream; ours must read exactly what the official reads. */
async function readBoth(runId, options) {
  const theirs = await readAll(official.getRun(runId).getReadable(options))
  const mine = await readAll(ours.getRun(runId).getReadable(options))
  return { mine, theirs }
}

async function tailBoth(runId, options) {
  const a = official.getRun(runId).getReadable(options)
  const b = ours.getRun(runId).getReadable(options)
  const result = { theirs: await a.getTailIndex(), mine: await b.getTailIndex() }
  await a.cancel()
  await b.cancel()
  return result
}

let closedRun
before(async () => {
  closedRun = await createRun({ status: 'running' })
  await writeValues(closedRun, VALUES, { close: true })
})

describe('closed streams', () => {
  test('chunk files are what the runtime writes (sanity of the fixture)', () => {
    const name = streamName(closedRun)
    const files = listDir('streams', 'chunks').filter((f) => f.startsWith(`${name}-chnk_`))
    assert.equal(files.length, VALUES.length + 1)
  })

  test('all values decode exactly as the official reader decodes them', async () => {
    const { mine, theirs } = await readBoth(closedRun)
    assert.equal(theirs.length, VALUES.length)
    assert.equal(mine.length, VALUES.length)
    compare(mine, theirs)
    compare(mine, VALUES.map((v) => (v instanceof TypeError ? Object.assign(new Error(v.message), { name: 'TypeError', stack: v.stack }) : v)))
  })

  test('run.readable is a new stream per access and equals getReadable()', async () => {
    const run = ours.getRun(closedRun)
    const a = run.readable
    const b = run.readable
    assert.notEqual(a, b)
    assert.ok(a instanceof ReadableStream)
    assert.equal(typeof a.getTailIndex, 'function')
    compare(await readAll(a), await readAll(official.getRun(closedRun).readable))
    await b.cancel()
  })

  for (const startIndex of [0, 1, 7, VALUES.length - 1, VALUES.length, -1, -3, -VALUES.length, -VALUES.length - 5, -1000]) {
    test(`startIndex ${startIndex} reads the same chunks as the official`, async () => {
      const { mine, theirs } = await readBoth(closedRun, { startIndex })
      compare(mine, theirs)
      const expected = startIndex >= 0 ? VALUES.length - Math.min(startIndex, VALUES.length) : Math.min(-startIndex, VALUES.length)
      assert.equal(mine.length, expected)
    })
  }

  test('startIndex beyond the end of a closed stream yields nothing and ends', { timeout: 10_000 }, async () => {
    // (The official reader never ends here: world-local treats the close marker as an
    // already-delivered chunk and keeps polling. Ours must at least not invent values.)
    const reader = ours.getRun(closedRun).getReadable({ startIndex: VALUES.length + 3 }).getReader()
    const first = await reader.read()
    assert.equal(first.done, true, `got a value: ${String(first.value)}`)
  })

  test('getTailIndex equals the official', async () => {
    const t = await tailBoth(closedRun)
    assert.equal(t.mine, VALUES.length - 1)
    assert.equal(t.mine, t.theirs)
  })

  test('getTailIndex is -1 for an empty stream of an existing run and for an unknown run', async () => {
    const id = await createRun({ status: 'running' })
    assert.deepEqual(await tailBoth(id), { theirs: -1, mine: -1 })
    // unknown run: the official answers -1 too (no run lookup for tail info)
    const unknown = newRunId()
    const b = ours.getRun(unknown).getReadable()
    assert.equal(await b.getTailIndex(), -1)
    await b.cancel()
  })

  test('a stream that was closed without any chunk ends immediately with nothing', async () => {
    const id = await createRun({ status: 'running' })
    await world.closeStream(streamName(id), id)
    const { mine, theirs } = await readBoth(id)
    assert.deepEqual(mine, [])
    assert.deepEqual(theirs, [])
    assert.deepEqual(await tailBoth(id), { theirs: -1, mine: -1 })
  })

  test('a stream written by another process decodes the same', { timeout: 30_000 }, async () => {
    const id = await createRun({ status: 'running' })
    await runChild(id, 'stream', streamName(id))
    const { mine, theirs } = await readBoth(id)
    assert.equal(mine.length, 3)
    compare(mine, theirs)
  })
})

describe('transport chunks vs frames', () => {
  test('a chunk holding two frames yields both values, like the official', async () => {
    const id = await createRun({ status: 'running' })
    const name = streamName(id)
    const a = await frameValue({ first: 1 }, id)
    const b = await frameValue(new Date(2), id)
    const both = new Uint8Array(a.length + b.length)
    both.set(a, 0)
    both.set(b, a.length)
    await world.writeToStream(name, id, both)
    await world.writeToStream(name, id, await frameValue('third', id))
    await world.closeStream(name, id)
    const { mine, theirs } = await readBoth(id)
    assert.equal(theirs.length, 3)
    compare(mine, theirs)
  })

  test('chunks written with writeToStreamMulti read like the official', async () => {
    const id = await createRun({ status: 'running' })
    const name = streamName(id)
    const frames = []
    for (const v of ['m1', { m: 2 }, [3], 4n]) frames.push(await frameValue(v, id))
    await world.writeToStreamMulti(name, id, frames)
    await world.closeStream(name, id)
    const { mine, theirs } = await readBoth(id)
    assert.equal(theirs.length, 4)
    compare(mine, theirs)
  })

  test('a large value (≈3 MB frame) survives intact', async () => {
    const id = await createRun({ status: 'running' })
    const big = { text: 'x'.repeat(3_000_000), bytes: new Uint8Array(100_000).fill(9) }
    await writeValues(id, [big, 'after'], { close: true })
    const mine = await readAll(ours.getRun(id).getReadable())
    assert.equal(mine.length, 2)
    assert.equal(mine[0].text.length, 3_000_000)
    assert.equal(mine[0].bytes.length, 100_000)
    assert.equal(mine[1], 'after')
  })
})

describe('namespaces', () => {
  const NAMESPACES = ['logs', 'logs/α', '日本語', '🚀 launch', 'a-b_c.d', 'x'.repeat(40)]
  let id
  before(async () => {
    id = await createRun({ status: 'running' })
    await writeValues(id, ['default-0', 'default-1'], { close: true })
    for (const [i, ns] of NAMESPACES.entries()) {
      await writeValues(id, [`${ns}#0`, { ns, i }], { namespace: ns, close: true })
    }
  })

  for (const ns of NAMESPACES) {
    test(`namespace ${JSON.stringify(ns)} reads its own stream like the official`, async () => {
      const { mine, theirs } = await readBoth(id, { namespace: ns })
      compare(mine, theirs)
      assert.equal(mine[0], `${ns}#0`)
      assert.equal(mine.length, 2)
      assert.deepEqual(await tailBoth(id, { namespace: ns }), { theirs: 1, mine: 1 })
    })
  }

  test('the file names use unpadded base64url of the UTF-8 namespace', () => {
    const files = listDir('streams', 'chunks')
    assert.ok(files.some((f) => f.startsWith(`${streamName(id)}_bG9ncy_OsQ-chnk_`)), 'logs/α stream missing')
  })

  test('empty namespace is the default stream', async () => {
    const { mine, theirs } = await readBoth(id, { namespace: '' })
    compare(mine, theirs)
    assert.deepEqual(mine, ['default-0', 'default-1'])
  })

  test('an unknown namespace is empty (-1) for both', async () => {
    assert.deepEqual(await tailBoth(id, { namespace: 'nothing-here' }), { theirs: -1, mine: -1 })
  })
})

describe('live (open) streams', () => {
  test('chunks appended after the reader started are delivered, and the stream ends on close', { timeout: 20_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const name = await writeValues(id, ['a', 'b'])
    const mineReader = ours.getRun(id).getReadable().getReader()
    const theirsP = readAll(official.getRun(id).getReadable())
    assert.deepEqual((await mineReader.read()).value, 'a')
    assert.deepEqual((await mineReader.read()).value, 'b')
    // nothing more yet: the next read is pending until a writer appends
    const pending = mineReader.read()
    const later = [{ c: new Date(3) }, 4n, 'e']
    for (const v of later) await world.writeToStream(name, id, await frameValue(v, id))
    const got = [(await pending).value]
    while (got.length < 3) got.push((await mineReader.read()).value)
    compare(got, later)
    const end = mineReader.read()
    await world.closeStream(name, id)
    assert.deepEqual(await end, { done: true, value: undefined })
    const theirs = await theirsP
    compare(['a', 'b', ...got], theirs)
  })

  test('live chunks written by another process are delivered and the close ends the stream', { timeout: 30_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const mine = readAll(ours.getRun(id).getReadable())
    const tail = ours.getRun(id).getReadable()
    assert.equal(await tail.getTailIndex(), -1)
    await tail.cancel()
    await runChild(id, 'stream', streamName(id))
    const values = await mine
    const theirs = await readAll(official.getRun(id).getReadable())
    compare(values, theirs)
    assert.equal(values.length, 3)
  })

  test('positive startIndex on an open stream, then live chunks', { timeout: 20_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const name = await writeValues(id, [0, 1, 2])
    const mine = readAll(ours.getRun(id).getReadable({ startIndex: 1 }))
    const theirs = readAll(official.getRun(id).getReadable({ startIndex: 1 }))
    await world.writeToStream(name, id, await frameValue(3, id))
    await world.closeStream(name, id)
    const [m, t] = await Promise.all([mine, theirs])
    assert.deepEqual(m, [1, 2, 3])
    assert.deepEqual(m, t)
  })

  test('negative startIndex on an open stream reads the last N, then live chunks', { timeout: 20_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const name = await writeValues(id, [0, 1, 2, 3])
    const mineReader = ours.getRun(id).getReadable({ startIndex: -2 }).getReader()
    const theirs = readAll(official.getRun(id).getReadable({ startIndex: -2 }))
    assert.equal((await mineReader.read()).value, 2)
    assert.equal((await mineReader.read()).value, 3)
    await world.writeToStream(name, id, await frameValue(4, id))
    assert.equal((await mineReader.read()).value, 4)
    await world.closeStream(name, id)
    assert.equal((await mineReader.read()).done, true)
    assert.deepEqual(await theirs, [2, 3, 4])
  })

  test('startIndex beyond the current end of an open stream starts at that index once chunks arrive', { timeout: 20_000 }, async () => {
    // Spec 2.2: startIndex >= 0 = start at that 0-based chunk index. (The official reader
    // on world-local 4.4.1 instead yields every chunk written after the reader started —
    // [2, 3, 4, 5, 6] here — because its poller only marks the chunks that existed as
    // delivered; on a closed stream it never ends. Ours follows the documented index.)
    const id = await createRun({ status: 'running' })
    const name = await writeValues(id, [0, 1])
    const mineReader = ours.getRun(id).getReadable({ startIndex: 5 }).getReader()
    const first = mineReader.read()
    for (const v of [2, 3, 4, 5, 6]) await world.writeToStream(name, id, await frameValue(v, id))
    await world.closeStream(name, id)
    const got = []
    for (let r = await first; !r.done; r = await mineReader.read()) got.push(r.value)
    assert.deepEqual(got, [5, 6])
  })

  test('getTailIndex follows appended chunks like the official', async () => {
    const id = await createRun({ status: 'running' })
    const name = streamName(id)
    assert.deepEqual(await tailBoth(id), { theirs: -1, mine: -1 })
    await writeValues(id, ['x'])
    assert.deepEqual(await tailBoth(id), { theirs: 0, mine: 0 })
    await writeValues(id, ['y', 'z'])
    assert.deepEqual(await tailBoth(id), { theirs: 2, mine: 2 })
    await world.closeStream(name, id)
    assert.deepEqual(await tailBoth(id), { theirs: 2, mine: 2 })
  })

  test('many chunks (batching) arrive complete and in order', { timeout: 20_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const name = streamName(id)
    const mine = readAll(ours.getRun(id).getReadable())
    const N = 600
    for (let i = 0; i < N; i++) await world.writeToStream(name, id, await frameValue({ i, s: 'v'.repeat(i % 7) }, id))
    await world.closeStream(name, id)
    const got = await mine
    assert.equal(got.length, N)
    assert.ok(got.every((v, i) => v.i === i))
  })
})

describe('cancellation', () => {
  test('reader.cancel() resolves and releases a reader waiting on an open stream', { timeout: 10_000 }, async () => {
    const id = await createRun({ status: 'running' })
    await writeValues(id, ['only'])
    const stream = ours.getRun(id).getReadable()
    const reader = stream.getReader()
    assert.equal((await reader.read()).value, 'only')
    const pending = reader.read()
    await reader.cancel('enough')
    assert.deepEqual(await pending, { done: true, value: undefined })
    assert.deepEqual(await reader.read(), { done: true, value: undefined })
  })

  test('cancel before the first read', async () => {
    const id = await createRun({ status: 'running' })
    const stream = ours.getRun(id).getReadable()
    await stream.cancel()
    const r = await settle(() => stream.getReader().read())
    assert.deepEqual(r, { ok: true, value: { done: true, value: undefined } })
  })

  test('readN then cancel on a long open stream (consumer stops early)', async () => {
    const id = await createRun({ status: 'running' })
    await writeValues(id, [1, 2, 3, 4, 5])
    assert.deepEqual(await readN(ours.getRun(id).getReadable(), 2), [1, 2])
  })
})

describe('stream values and realms', () => {
  test('`global` option: values are built with the given realm constructors, like the official', async () => {
    const id = await createRun({ status: 'running' })
    await writeValues(id, [new Date(7), new Map([[1, 2]]), new Uint8Array([5]), [1, { a: 1 }]], { close: true })
    const realm = vm.runInNewContext('globalThis')
    const mine = await readAll(ours.getRun(id).getReadable({ global: realm }))
    const theirs = await readAll(official.getRun(id).getReadable({ global: realm }))
    assert.ok(theirs[0] instanceof realm.Date)
    assert.ok(mine[0] instanceof realm.Date, 'Date not from the given realm')
    assert.ok(mine[1] instanceof realm.Map, 'Map not from the given realm')
    assert.ok(mine[2] instanceof realm.Uint8Array, 'Uint8Array not from the given realm')
    assert.deepStrictEqual(fingerprint(mine, realm), fingerprint(theirs, realm))
  })

  test('usable as a Response body', async () => {
    const id = await createRun({ status: 'running' })
    await writeValues(id, [{ a: 1 }, 'b', 3], { close: true })
    const body = ours
      .getRun(id)
      .getReadable()
      .pipeThrough(
        new TransformStream({
          transform(v, c) {
            c.enqueue(`${JSON.stringify(v)}\n`)
          },
        }),
      )
      .pipeThrough(new TextEncoderStream())
    assert.equal(await new Response(body).text(), '{"a":1}\n"b"\n3\n')
  })
})

describe('streams inside a returnValue', () => {
  const NAME = Symbol.for('WORKFLOW_STREAM_NAME')
  const TYPE = Symbol.for('WORKFLOW_STREAM_TYPE')
  const FRAMING = Symbol.for('WORKFLOW_STREAM_FRAMING')
  function handle(name, type, framing) {
    // What a workflow holds: a stream handle that only carries its server stream name.
    const s = new ReadableStream()
    s[NAME] = name
    if (type) s[TYPE] = type
    if (framing) s[FRAMING] = framing
    return s
  }

  test('an object stream returned by the workflow reads the same values', { timeout: 20_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const name = newId('strm')
    for (const v of ['x', new Date(1), { k: 2n }]) await world.writeToStream(name, id, await frameValue(v, id))
    await world.closeStream(name, id)
    await completeRun(id, { value: { label: 'obj', stream: handle(name) } })
    const theirs = await official.getRun(id).returnValue
    const mine = await settle(() => ours.getRun(id).returnValue)
    assert.equal(mine.ok, true, `ours rejected: ${mine.error}`)
    assert.equal(mine.value.label, 'obj')
    assert.ok(mine.value.stream instanceof ReadableStream)
    compare(await readAll(mine.value.stream), await readAll(theirs.stream))
  })

  for (const framing of [undefined, 'framed-v1']) {
    test(`a byte stream (${framing ?? 'raw'}) returned by the workflow reads the same bytes`, { timeout: 20_000 }, async () => {
      const id = await createRun({ status: 'running' })
      const name = newId('strm')
      const parts = [new Uint8Array([1, 2, 3]), new TextEncoder().encode('hello'), new Uint8Array(300).fill(7)]
      for (const p of parts) {
        let chunk = p
        if (framing) {
          chunk = new Uint8Array(4 + p.length)
          new DataView(chunk.buffer).setUint32(0, p.length, false)
          chunk.set(p, 4)
        }
        await world.writeToStream(name, id, chunk)
      }
      await world.closeStream(name, id)
      await completeRun(id, { value: handle(name, 'bytes', framing) })
      const theirs = await official.getRun(id).returnValue
      const mine = await settle(() => ours.getRun(id).returnValue)
      assert.equal(mine.ok, true, `ours rejected: ${mine.error}`)
      const concat = (chunks) => Buffer.concat(chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)))
      const m = await readAll(mine.value)
      const t = await readAll(theirs)
      assert.ok(m.every((c) => c instanceof Uint8Array))
      assert.deepEqual(concat(m), concat(t))
      assert.deepEqual(concat(m), Buffer.concat(parts.map((p) => Buffer.from(p))))
    })
  }
})

const CHILD = fileURLToPath(new URL('./helpers/complete-run-child.mjs', import.meta.url))
function runChild(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    child.stderr.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}: ${err}`))))
  })
}

void serialization
