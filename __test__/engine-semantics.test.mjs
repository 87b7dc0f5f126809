// The embedded engine against the official runtime's documented semantics (workflow
// 4.8.9 / @workflow/core 4.8.9), on the cases where they once differed: a hook loop ended
// by dispose(), the run holding a conflicting token, `maxRetries` set on the step
// function, a step called as a method, arguments that cannot be serialized, invocations
// the workflow never awaited before returning, thrown promises and error-like objects,
// RetryableError's `retryAfter`, and the whole-second retry delay. Each run is also read
// through the official `workflow/api` on the same data directory.
import { official, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'
import api from '../index.js'

const { workflow, step, createHook, sleep, FatalError, RetryableError } = wf

async function eventsOf(runId) {
  const page = await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc' } })
  return page.data
}

const types = async (runId) => (await eventsOf(runId)).map((e) => e.eventType)

/** Resolves once `getHookByToken(token)` finds the hook (the run registered it). */
async function hookRegistered(token) {
  for (;;) {
    try {
      return await api.getHookByToken(token)
    } catch (e) {
      if (e.name !== 'HookNotFoundError') throw e
      await new Promise((r) => setImmediate(r))
    }
  }
}

test('for await over a hook ends once the loop body disposes it', async () => {
  const loop = workflow('sem-dispose-loop', async () => {
    const hook = createHook({ token: 'sem-dispose-token' })
    const got = []
    for await (const payload of hook) {
      got.push(payload)
      if (payload === 'last') hook.dispose()
    }
    return got
  })
  const run = await api.start(loop, [])
  await hookRegistered('sem-dispose-token')
  await api.resumeHook('sem-dispose-token', 'first')
  await api.resumeHook('sem-dispose-token', 'last')
  assert.deepEqual(await run.returnValue, ['first', 'last'])
  assert.deepEqual(await official.getRun(run.runId).returnValue, ['first', 'last'])
  // (disposed in the turn the workflow returned: not committed, as in WDK; the run's end
  // removes the hook)
  const t = await types(run.runId)
  assert.equal(t.at(-1), 'run_completed')
  await assert.rejects(api.getHookByToken('sem-dispose-token'), (e) => e.name === 'HookNotFoundError')
})

test('a conflicting token: getConflict() names the holder, and so does the HookConflictError', async () => {
  const holder = workflow('sem-conflict-holder', async () => await createHook({ token: 'sem-conflict-token' }))
  const held = await api.start(holder, [])
  await hookRegistered('sem-conflict-token')
  const rival = workflow('sem-conflict-rival', async () => {
    const hook = createHook({ token: 'sem-conflict-token' })
    const conflict = await hook.getConflict()
    try {
      await hook
      return { conflict }
    } catch (e) {
      return { conflict, name: e.name, message: e.message, conflictingRunId: e.conflictingRunId }
    }
  })
  const run = await api.start(rival, [])
  const out = await run.returnValue
  assert.deepEqual(out.conflict, { runId: held.runId })
  assert.equal(out.name, 'HookConflictError')
  assert.equal(out.conflictingRunId, held.runId)
  assert.match(out.message, new RegExp(`^Hook token "sem-conflict-token" is already in use by another workflow \\(run "${held.runId}"\\)`))
  // the same as the official error class words it
  const { HookConflictError } = await import('workflow/errors')
  assert.equal(out.message, new HookConflictError('sem-conflict-token', held.runId).message)
  await api.getRun(held.runId).cancel()
})

test('maxRetries assigned to the step function after declaring it applies to the next calls', async () => {
  let attempts = 0
  const flaky = step('sem-flaky', async () => {
    attempts++
    throw new Error('down')
  })
  flaky.maxRetries = 0
  const w = workflow('sem-max-retries-prop', async () => {
    try {
      await flaky()
    } catch (e) {
      return e.message
    }
  })
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, 'Step "step//native//sem-flaky" failed after 0 retries: down')
  assert.equal(attempts, 1)
})

test('a step called as a method runs with its receiver, recorded as thisVal', async () => {
  const addBase = step('sem-add-base', async function (x) {
    return this.base + x
  })
  const plain = step('sem-plain-this', async function () {
    return this === null ? 'null' : typeof this
  })
  const w = workflow('sem-method-step', async () => {
    const calc = { base: 10, addBase }
    return [await calc.addBase(5), await plain()]
  })
  const run = await api.start(w, [])
  assert.deepEqual(await run.returnValue, [15, 'null'])
  const created = (await eventsOf(run.runId)).filter((e) => e.eventType === 'step_created')
  const input = Buffer.from(created[0].eventData.input).toString()
  assert.match(input, /"thisVal":\d+/)
  assert.match(input, /"base"/)
  // without a receiver nothing is recorded
  assert.match(Buffer.from(created[1].eventData.input).toString(), /"thisVal":-1/)
})

test('unserializable step arguments fail the step as the official does: catchable FatalError, placeholder input', async () => {
  const echo = step('sem-echo', async (v) => v)
  const caught = workflow('sem-bad-args-caught', async () => {
    try {
      await echo(() => 1)
      return 'no error'
    } catch (e) {
      return { name: e.name, fatal: FatalError.is(e), message: e.message }
    }
  })
  const run = await api.start(caught, [])
  const out = await run.returnValue
  assert.equal(out.name, 'FatalError')
  assert.equal(out.fatal, true)
  assert.match(out.message, /^Failed to serialize step arguments at path "\.args\[0\]"/)
  const evs = await eventsOf(run.runId)
  assert.deepEqual(
    evs.map((e) => e.eventType),
    ['run_created', 'run_started', 'step_created', 'step_failed', 'run_completed'],
  )
  const input = Buffer.from(evs[2].eventData.input).toString()
  assert.match(input, /\[input unavailable: step argument serialization failed\]/)
  assert.match(input, /__workflowUnserializableStepInput/)
  assert.equal(evs[3].eventData.error, out.message)

  const uncaught = workflow('sem-bad-args-uncaught', async () => await echo(Symbol('s')))
  const failed = await api.start(uncaught, [])
  const err = await failed.returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunFailedError')
  const viaOfficial = await official.getRun(failed.runId).returnValue.catch((e) => e)
  assert.equal(viaOfficial.name, 'WorkflowRunFailedError')
  assert.equal(viaOfficial.message, err.message)
  const runFailed = (await eventsOf(failed.runId)).at(-1)
  assert.equal(runFailed.eventType, 'run_failed')
  assert.equal(runFailed.eventData.errorCode, 'USER_ERROR')
})

test('invocations made in the turn the workflow returns are never committed: the step does not run', async () => {
  const ran = []
  const side = step('sem-side', async (x) => {
    ran.push(x)
    return x
  })
  const w = workflow('sem-unawaited', async () => {
    side('fire-and-forget')
    createHook({ token: 'sem-unawaited-token' })
    sleep('1h')
    return 'done'
  })
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, 'done')
  assert.deepEqual(await types(run.runId), ['run_created', 'run_started', 'run_completed'])
  assert.deepEqual(ran, [])
  // an awaited step before it is committed as usual
  const after = workflow('sem-unawaited-after', async () => {
    const a = await side('a')
    side('b')
    return a
  })
  const run2 = await api.start(after, [])
  assert.equal(await run2.returnValue, 'a')
  assert.deepEqual(await types(run2.runId), [
    'run_created',
    'run_started',
    'step_created',
    'step_started',
    'step_completed',
    'run_completed',
  ])
  assert.deepEqual(ran, ['a'])
  assert.equal(await official.getRun(run2.runId).status, 'completed')
})

test('thrown promises and error-like objects are recorded as the official normalizes them', async () => {
  const rejecting = step('sem-throws-promise', async () => {
    throw Promise.reject(new Error('inner'))
  })
  const errLike = step('sem-throws-error-like', async () => {
    const e = Object.create(Error.prototype)
    e.message = 'fake'
    throw e
  })
  const w = workflow('sem-thrown-values', async () => {
    const out = []
    for (const s of [rejecting, errLike]) {
      try {
        await s()
      } catch (e) {
        out.push(e.message)
      }
    }
    return out
  })
  rejecting.maxRetries = 0
  errLike.maxRetries = 0
  const run = await api.start(w, [])
  assert.deepEqual(await run.returnValue, [
    'Step "step//native//sem-throws-promise" failed after 0 retries: Promise rejection: inner',
    'Step "step//native//sem-throws-error-like" failed after 0 retries: {"message":"fake"}',
  ])
  // a workflow body throwing a rejected promise fails the run (no unhandled rejection)
  const body = workflow('sem-body-throws-promise', async () => {
    throw Promise.reject(new Error('from the body'))
  })
  const failed = await api.start(body, [])
  const err = await failed.returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunFailedError')
  assert.match(err.message, /failed: Promise rejection: from the body$/)
})

test('RetryableError: retryAfter null is refused as the official refuses it', async () => {
  const { RetryableError: OfficialRetryable } = await import('@workflow/errors')
  const ours = (() => {
    try {
      new RetryableError('x', { retryAfter: null })
    } catch (e) {
      return e.message
    }
  })()
  const theirs = (() => {
    try {
      new OfficialRetryable('x', { retryAfter: null })
    } catch (e) {
      return e.message
    }
  })()
  assert.equal(ours, theirs)
  assert.match(ours, /^Invalid duration parameter/)
})

test('a retry waits whole seconds, as the official queue delays it: 1.5 s becomes 2 s', async () => {
  const starts = []
  const once = step('sem-retry-after', async () => {
    starts.push(Date.now())
    if (starts.length === 1) throw new RetryableError('later', { retryAfter: 1500 })
    return 'ok'
  })
  const w = workflow('sem-retry-rounding', async () => await once())
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, 'ok')
  assert.equal(starts.length, 2)
  assert.ok(starts[1] - starts[0] >= 1990, `second attempt ${starts[1] - starts[0]} ms after the first`)
})

test('a step fired without await while the run looks at other writers\' events is not run, and nothing is left unhandled', async () => {
  const { workflowStore } = await import('../lib/engine/context.js')
  const unhandled = []
  const onUnhandled = (e) => unhandled.push(e)
  process.on('unhandledRejection', onUnhandled)
  const ran = []
  const first = step('sem-refresh-first', async () => 'A')
  const late = step('sem-refresh-late', async () => {
    ran.push('late')
    return 'C'
  })
  const w = workflow('sem-refresh-split', async () => {
    const x = await first()
    // as a resumeHook()/wakeUp() message for this run arriving in this process would
    workflowStore.getStore().exec.refresh()
    late()
    return x
  })
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, 'A')
  await new Promise((r) => setImmediate(r))
  process.off('unhandledRejection', onUnhandled)
  assert.deepEqual(unhandled, [])
  assert.deepEqual(ran, [])
  assert.deepEqual(await types(run.runId), ['run_created', 'run_started', 'step_created', 'step_started', 'step_completed', 'run_completed'])
})

test('a replayed step whose recorded input is the unserializable placeholder fails without running its code', async () => {
  const { binding } = await import('../lib/native.js')
  const { stringify } = await import('../lib/vendor/devalue.cjs')
  const { dataDir } = await import('./helpers/harness.mjs')
  const native = new binding.NativeWorld(dataDir)
  const bytes = (v) => ({ __type: 'Uint8Array', data: Buffer.from(`devl${stringify(v)}`).toString('base64') })
  const create = (runId, req) => JSON.parse(native.createEventSync(runId, JSON.stringify({ specVersion: 3, ...req })))
  const ran = []
  const takesFn = step('sem-placeholder', async (x) => {
    ran.push(x)
    return 'ran'
  })
  const w = workflow('sem-placeholder-replay', async () => {
    try {
      return await takesFn(() => 1)
    } catch (e) {
      return `${e.name}: ${e.message}`
    }
  })
  // a crash between the placeholder's step_created and its step_failed
  const runId = create(null, { eventType: 'run_created', eventData: { deploymentId: 'dpl_test', workflowName: w.workflowId, input: bytes([]) } }).event.runId
  create(runId, { eventType: 'run_started' })
  create(runId, {
    eventType: 'step_created',
    correlationId: `step_${binding.newUlid()}`,
    eventData: {
      stepName: takesFn.stepId,
      workflowName: w.workflowId,
      input: bytes({ args: ['[input unavailable: step argument serialization failed]'], closureVars: [], thisVal: undefined, __workflowUnserializableStepInput: true }),
    },
  })
  await wf.resumeRuns()
  assert.equal(
    await api.getRun(runId).returnValue,
    "FatalError: Failed to serialize step arguments. Ensure you're passing serializable types (plain objects, arrays, primitives, Date, RegExp, Map, Set).",
  )
  assert.deepEqual(ran, [])
  assert.deepEqual((await types(runId)).slice(-3), ['step_started', 'step_failed', 'run_completed'])
})

test('a step throwing a promise that never settles still fails (recorded unsettled after a second)', async () => {
  const hangs = step('sem-throws-pending', async () => {
    throw new Promise(() => {})
  })
  hangs.maxRetries = 0
  const w = workflow('sem-pending-throw', async () => {
    try {
      await hangs()
    } catch (e) {
      return e.message
    }
  })
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, 'Step "step//native//sem-throws-pending" failed after 0 retries: {}')
})

test('a step called as a method of an object that cannot be serialized runs without a receiver', async () => {
  const steps = {
    helper: () => 1, // a plain function: the object cannot be serialized
    double: step('sem-module-double', async function (x) {
      return [x * 2, this === null]
    }),
  }
  const w = workflow('sem-module-receiver', async () => await steps.double(21))
  const run = await api.start(w, [])
  assert.deepEqual(await run.returnValue, [42, true])
})

test("createWebhook({ respondWith: 'manual' }) is refused at once", async () => {
  const w = workflow('sem-manual-webhook', async () => {
    try {
      wf.createWebhook({ respondWith: 'manual' })
      return 'created'
    } catch (e) {
      return e.message
    }
  })
  const run = await api.start(w, [])
  assert.match(await run.returnValue, /respondWith: 'manual' \}\)` is not supported/)
})

test('a stream the workflow received is passed to steps by reference: each step reads it whole', async () => {
  const makeStream = step('sem-make-stream', async () => {
    const enc = new TextEncoder()
    return new ReadableStream({
      start(c) {
        c.enqueue(enc.encode('a'))
        c.enqueue(enc.encode('b'))
        c.close()
      },
    })
  })
  const readAll = step('sem-read-stream', async (stream) => {
    let text = ''
    for await (const chunk of stream) text += new TextDecoder().decode(chunk)
    return text
  })
  const w = workflow('sem-stream-twice', async () => {
    const s = await makeStream()
    return [await readAll(s), await readAll(s)]
  })
  const run = await api.start(w, [])
  assert.deepEqual(await run.returnValue, ['ab', 'ab'])
  // one stream: both steps got the same reference
  const inputs = (await eventsOf(run.runId))
    .filter((e) => e.eventType === 'step_created')
    .slice(1)
    .map((e) => Buffer.from(e.eventData.input).toString().match(/strm_[0-9A-Z]+/)[0])
  assert.equal(inputs.length, 2)
  assert.equal(inputs[0], inputs[1])
})

test('defineHook().resume() in a workflow body throws synchronously, as in WDK', async () => {
  const typed = wf.defineHook()
  const w = workflow('sem-define-hook-resume', async () => {
    let threw = null
    try {
      typed.resume('t', 1)
    } catch (e) {
      threw = e.message
    }
    return threw
  })
  const run = await api.start(w, [])
  assert.equal(await run.returnValue, '`defineHook().resume()` can only be called from external contexts (e.g. API routes).')
})

test('a body read in a workflow body is WDK\'s built-in step: recorded, repeatable, bodyUsed stays false', async () => {
  const makeResponse = step('sem-make-response', async () => new Response('{"z":1}', { headers: { 'content-type': 'application/json' } }))
  const w = workflow('sem-body-steps', async () => {
    const res = await makeResponse()
    const text = await res.text()
    const used = res.bodyUsed
    const json = await res.json()
    const bytes = await res.bytes()
    return { text, used, json, bytes: bytes.length }
  })
  const run = await api.start(w, [])
  assert.deepEqual(await run.returnValue, { text: '{"z":1}', used: false, json: { z: 1 }, bytes: 7 })
  const names = (await eventsOf(run.runId)).filter((e) => e.eventType === 'step_created').map((e) => e.eventData.stepName)
  assert.deepEqual(names, [
    'step//native//sem-make-response',
    '__builtin_response_text',
    '__builtin_response_json',
    '__builtin_response_array_buffer',
  ])
  assert.deepEqual(await official.getRun(run.runId).returnValue, { text: '{"z":1}', used: false, json: { z: 1 }, bytes: 7 })
})

test('a Response a step returned keeps its url, type and redirected in the workflow body', async () => {
  const server = (await import('node:http')).createServer((req, res) => res.end('ok'))
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${server.address().port}/where`
  try {
    const w = workflow('sem-fetch-fields', async (u) => {
      const res = await wf.fetch(u)
      return { url: res.url, type: res.type, redirected: res.redirected, text: await res.text() }
    })
    const run = await api.start(w, [url])
    assert.deepEqual(await run.returnValue, { url, type: 'basic', redirected: false, text: 'ok' })
  } finally {
    server.close()
  }
})
