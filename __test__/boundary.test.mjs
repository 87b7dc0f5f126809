// The error boundary between the addon and JS (lib/native.js + src/lib.rs): a panic in
// native code is a JS error, never an abort; every native error reaches callers as a real
// JS error of the right class, whether thrown, rejected, or raised by an object a native
// method handed out; string enums instead of free-form strings.
import { createRun, dataDir, newRunId, ours, ourErrors } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { binding } = require('../lib/native.js')
const nativePath = fileURLToPath(new URL('../lib/native.js', import.meta.url))

function assertPanicError(e, message) {
  assert.ok(e instanceof Error, 'a JS Error')
  assert.ok(e instanceof ourErrors.WorkflowWorldError, 'a WorkflowWorldError')
  assert.equal(e.name, 'WorkflowWorldError')
  assert.equal(e.code, 'INTERNAL_PANIC')
  assert.match(e.message, /internal error/)
  assert.ok(e.message.includes(message), `the panic message is kept: ${e.message}`)
}

test('a panic in a synchronous export throws a WorkflowWorldError (INTERNAL_PANIC)', () => {
  let caught
  try {
    binding.__panicForTest('sync boom')
  } catch (e) {
    caught = e
  }
  assertPanicError(caught, 'sync boom')
})

test('a panic inside an async export rejects with a WorkflowWorldError (INTERNAL_PANIC)', async () => {
  await assert.rejects(binding.__panicForTestAsync('future boom', 'future'), (e) => {
    assertPanicError(e, 'future boom')
    return true
  })
})

test('a panic in a spawn_blocking task an async export awaits rejects the same way', async () => {
  await assert.rejects(binding.__panicForTestAsync('blocking boom', 'blocking'), (e) => {
    assertPanicError(e, 'blocking boom')
    return true
  })
})

test('after panics the addon keeps working in the same process', async () => {
  for (let i = 0; i < 3; i++) {
    assert.throws(() => binding.__panicForTest('again'), { code: 'INTERNAL_PANIC' })
    await assert.rejects(binding.__panicForTestAsync('again', 'future'), { code: 'INTERNAL_PANIC' })
  }
  const runId = await createRun({ status: 'completed', value: 7 })
  assert.equal(await ours.getRun(runId).returnValue, 7)
  assert.match(binding.newUlid(), /^[0-9A-Z]{26}$/)
})

test('a process whose native calls panic exits normally (no abort)', () => {
  const script = `
    const { binding } = require(${JSON.stringify(nativePath)})
    const names = []
    try { binding.__panicForTest('child sync') } catch (e) { names.push(e.name + ':' + e.code) }
    Promise.allSettled([
      binding.__panicForTestAsync('child future', 'future'),
      binding.__panicForTestAsync('child blocking', 'blocking'),
    ]).then((rs) => {
      for (const r of rs) names.push(r.reason.name + ':' + r.reason.code)
      console.log(JSON.stringify(names))
    })
  `
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(r.signal, null, `no signal (stderr: ${r.stderr})`)
  assert.equal(r.status, 0, `exit code 0 (stderr: ${r.stderr})`)
  assert.deepEqual(JSON.parse(r.stdout.trim()), [
    'WorkflowWorldError:INTERNAL_PANIC',
    'WorkflowWorldError:INTERNAL_PANIC',
    'WorkflowWorldError:INTERNAL_PANIC',
  ])
})

test('errors of wrapped class methods are the package classes, sync and async', async () => {
  const world = new binding.NativeWorld(dataDir)
  const missing = newRunId()
  assert.throws(
    () => world.getRunSync(missing),
    (e) => e instanceof ourErrors.WorkflowRunNotFoundError && e.runId === missing,
  )
  await assert.rejects(
    world.getRun(missing, false),
    (e) => e instanceof ourErrors.WorkflowRunNotFoundError && e.runId === missing,
  )
  await assert.rejects(world.getRun('wrun_../x', false), (e) => e.name === 'UnsafeEntityIdError')
  assert.equal(world.dataDir, dataDir)
})

test('an unknown stream mode is a TypeError naming the method and the enum', () => {
  const world = new binding.NativeWorld(dataDir)
  assert.throws(
    () => world.openStream(`strm_${binding.newUlid()}_user`, 0, 'object'),
    (e) =>
      e instanceof TypeError &&
      e.message.startsWith('NativeWorld#openStream: ') &&
      e.message.includes('StreamReadMode'),
  )
})

test('objects returned by native methods are wrapped too (a stream reader)', async () => {
  const world = new binding.NativeWorld(dataDir)
  const reader = world.openStream(`strm_${binding.newUlid()}_user`, 0, 'bytes')
  try {
    assert.throws(() => reader.nextManySync('many'), (e) => e instanceof TypeError && e.message.startsWith('NativeStreamReader#nextManySync: '))
    assert.equal(reader.nextManySync(8), null)
  } finally {
    reader.close()
  }
  // A closed reader reports the end of the stream.
  assert.deepEqual((await reader.nextMany(8)).done, true)
})

test('cancel resolves to a documented outcome; Run#cancel() still resolves to undefined', async () => {
  const world = new binding.NativeWorld(dataDir)
  const a = await createRun({ status: 'running' })
  assert.equal(await world.cancel(a), 'cancelled')
  assert.equal(await world.cancel(a), 'alreadyCancelled')
  const b = await createRun({ status: 'running' })
  assert.equal(await ours.getRun(b).cancel(), undefined)
  assert.equal(await ours.getRun(b).status, 'cancelled')
})
