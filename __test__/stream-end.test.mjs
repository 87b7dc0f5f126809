// A run's stream ends once the run is terminal and every chunk written was delivered, even
// when nobody closed it (a deliberate difference: the official reader waits for a close
// marker for ever, vercel/workflow#943). Nested streams and other streams still end at
// their close marker only.
import { official, world, newRunId, createRun, completeRun, frameValue, streamName } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'
import api from '../index.js'

const { workflow, step, createHook, getWritable, FatalError } = wf
const { start, getRun, resumeHook } = api

// Guards only: a reader that never ends fails the test instead of hanging the suite.
const GUARD = { timeout: 60_000 }

async function readAll(stream) {
  const out = []
  for await (const chunk of stream) out.push(chunk)
  return out
}

/** Resolves once a hook with this token exists (the run reached createHook()). */
async function hookExists(token) {
  for (;;) {
    const hook = await api.getHookByToken(token).catch(() => undefined)
    if (hook) return hook
    await new Promise((r) => setImmediate(r))
  }
}

const write = step('write', async (value, namespace) => {
  const writer = getWritable(namespace ? { namespace } : undefined).getWriter()
  await writer.write(value)
  writer.releaseLock()
})

const unclosed = workflow('unclosed', async (n) => {
  for (let i = 1; i <= n; i++) await write({ i })
  return n
})

test('a completed run whose stream was never closed: for await ends after its chunks', GUARD, async () => {
  const run = await start(unclosed, [3])
  assert.equal(await run.returnValue, 3)
  assert.deepEqual(await readAll(run.getReadable()), [{ i: 1 }, { i: 2 }, { i: 3 }])
  assert.deepEqual(await readAll(run.readable), [{ i: 1 }, { i: 2 }, { i: 3 }])
  assert.deepEqual(await readAll(run.getReadable({ startIndex: -1 })), [{ i: 3 }])
  assert.deepEqual(await readAll(run.getReadable({ startIndex: 7 })), [], 'past the end: nothing, then the end')
  // As a Response body (what a route handler returns): the response ends too.
  const body = run.getReadable().pipeThrough(
    new TransformStream({ transform: (c, ctl) => ctl.enqueue(new TextEncoder().encode(`${JSON.stringify(c)}\n`)) }),
  )
  assert.equal(await new Response(body).text(), '{"i":1}\n{"i":2}\n{"i":3}\n')
})

const gated = workflow('gated', async (token) => {
  await write('before')
  const hook = createHook({ token })
  const { fail } = await hook
  await write('after')
  if (fail) throw new FatalError('asked to fail')
  return 'ok'
})

test('a live reader gets every chunk, stays open while the run waits, and ends when the run completes', GUARD, async () => {
  const token = `gate-${Date.now()}-a`
  const run = await start(gated, [token])
  const reader = run.getReadable().getReader()
  assert.deepEqual(await reader.read(), { done: false, value: 'before' })
  await hookExists(token)
  const next = reader.read() // pending: the run is waiting for its hook
  assert.equal(await run.status, 'running')
  await resumeHook(token, { fail: false })
  assert.deepEqual(await next, { done: false, value: 'after' })
  assert.deepEqual(await reader.read(), { done: true, value: undefined })
  assert.equal(await run.status, 'completed')
})

test('failed and cancelled runs end their readers too', GUARD, async () => {
  const failing = `gate-${Date.now()}-f`
  const failed = await start(gated, [failing])
  const failedChunks = readAll(failed.getReadable())
  await hookExists(failing)
  await resumeHook(failing, { fail: true })
  assert.deepEqual(await failedChunks, ['before', 'after'])
  assert.equal(await failed.status, 'failed')

  const waiting = `gate-${Date.now()}-c`
  const cancelled = await start(gated, [waiting])
  const reader = cancelled.getReadable().getReader()
  assert.deepEqual(await reader.read(), { done: false, value: 'before' })
  await hookExists(waiting)
  const end = reader.read()
  await cancelled.cancel()
  assert.deepEqual(await end, { done: true, value: undefined })
})

test('a namespaced stream of a run ends with the run', GUARD, async () => {
  const ns = workflow('namespaced', async () => {
    await write('default')
    await write('side', 'logs')
    return 1
  })
  const run = await start(ns, [])
  const side = readAll(run.getReadable({ namespace: 'logs' }))
  assert.deepEqual(await readAll(run.getReadable()), ['default'])
  assert.deepEqual(await side, ['side'])
})

// A run of another writer (the official world, as the official runtime in another
// process): chunks written right before the run completes are all delivered, then the end.
test('chunks written just before another writer completes the run are delivered before the end', GUARD, async () => {
  const runId = await createRun({ status: 'running' })
  const name = streamName(runId)
  const reading = readAll(getRun(runId).getReadable())
  const N = 300
  for (let i = 0; i < N; i++) await world.writeToStream(name, runId, await frameValue(i, runId))
  await completeRun(runId, { value: 'done' })
  const got = await reading
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i))
})

test('a stream of a run that does not exist errors at its first chunk, as the official reader does', GUARD, async () => {
  const runId = newRunId()
  const name = streamName(runId)
  const reader = getRun(runId).getReadable().getReader()
  const first = reader.read()
  await world.writeToStream(name, runId, await frameValue(1, runId))
  await assert.rejects(first, (e) => {
    assert.equal(e.name, 'WorkflowRunNotFoundError')
    assert.equal(e.message, `Workflow run "${runId}" not found`)
    return true
  })
  // the official reader, on the same data
  const theirs = official.getRun(runId).getReadable().getReader()
  await world.closeStream(name, runId)
  await assert.rejects(theirs.read(), (e) => e.name === 'WorkflowRunNotFoundError')
})
