// start(), getHookByToken(), resumeHook(), resumeWebhook(), runStep — side by side with
// the official workflow/api 4.8.9 on the same data directory: the same files, the same
// queue messages, the same errors.
import {
  official,
  ours,
  officialErrors,
  world,
  createRun,
  createHook,
  newId,
  eventFiles,
  readJson,
  listDir,
  exists,
  shape,
  settle,
  describeError,
  startQueueServer,
  serialization,
  WORKFLOW_NAME,
} from './helpers/harness.mjs'
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'

let queue
before(async () => {
  queue = await startQueueServer()
  process.env.WORKFLOW_LOCAL_BASE_URL = queue.url
})
after(async () => {
  await queue.close()
})

const wf = { workflowId: 'workflow//./src/workflows/order//processOrder' }

function runFiles(runId) {
  return {
    run: readJson('runs', `${runId}.json`),
    events: eventFiles(runId).map((e) => e.json),
    texts: eventFiles(runId).map((e) => e.text),
  }
}

describe('start()', () => {
  const args = [1, 'two', new Date(0), new Map([['k', 1n]]), new Set([undefined]), /re/g, new Uint8Array([1, 2])]

  test('writes the same run file, run_created event and queue message as the official start()', async () => {
    const a = await ours.start(wf, args)
    const b = await official.start(wf, args)
    assert.ok(a instanceof ours.Run)
    assert.match(a.runId, /^wrun_[0-9A-HJKMNP-TV-Z]{26}$/)
    const fa = runFiles(a.runId)
    const fb = runFiles(b.runId)
    assert.equal(shape(fa.run), shape(fb.run), 'run file')
    assert.equal(fa.events.length, 1)
    assert.equal(shape(fa.events), shape(fb.events), 'run_created event')
    // byte-level: same indentation and key order
    assert.equal(
      fa.texts[0].replace(/(wrun|evnt)_\w{26}/g, 'X').replace(/\d{4}-[\d-]+T[\d:.]+Z/g, 'T'),
      fb.texts[0].replace(/(wrun|evnt)_\w{26}/g, 'X').replace(/\d{4}-[\d-]+T[\d:.]+Z/g, 'T'),
    )
    const ma = await queue.waitFor((e) => e.json?.runId === a.runId)
    const mb = await queue.waitFor((e) => e.json?.runId === b.runId)
    assert.equal(ma.url, '/.well-known/workflow/v1/flow')
    assert.equal(ma.method, 'POST')
    for (const h of ['x-vqs-queue-name', 'x-vqs-message-attempt', 'content-type']) {
      assert.equal(ma.headers[h], mb.headers[h], h)
    }
    assert.match(ma.headers['x-vqs-message-id'], /^msg_[0-9A-HJKMNP-TV-Z]{26}$/)
    assert.equal(shape(ma.json), shape(mb.json), 'queue body')
    assert.equal(await a.status, 'pending')
    assert.equal(await official.getRun(a.runId).status, 'pending')
  })

  test('the official reader decodes our arguments to the same values', async () => {
    const a = await ours.start(wf, args)
    const run = await world.runs.get(a.runId)
    const decoded = await serialization.hydrateWorkflowArguments(run.input, a.runId, undefined, globalThis)
    assert.deepEqual(decoded, args)
  })

  test('start(workflow, options) overload and no arguments give []', async () => {
    const a = await ours.start(wf, { deploymentId: 'dpl_local@4.4.1' })
    const b = await ours.start(wf)
    for (const r of [a, b]) {
      const run = await world.runs.get(r.runId)
      assert.deepEqual(
        await serialization.hydrateWorkflowArguments(run.input, r.runId, undefined, globalThis),
        [],
      )
    }
  })

  test("deploymentId 'latest' falls back to the current deployment like the official one", async () => {
    const a = await ours.start(wf, [], { deploymentId: 'latest' })
    assert.equal(readJson('runs', `${a.runId}.json`).deploymentId, 'dpl_local@4.4.1')
    const custom = await ours.start(wf, [], { deploymentId: 'dpl_custom' })
    assert.equal(readJson('runs', `${custom.runId}.json`).deploymentId, 'dpl_custom')
  })

  test('an invalid workflow gives the official WorkflowRuntimeError and writes nothing', async () => {
    const before = listDir('runs').length
    for (const bad of [undefined, null, {}, () => {}, { workflowId: '' }]) {
      const a = await settle(() => ours.start(bad, [1]))
      const b = await settle(() => official.start(bad, [1]))
      assert.equal(a.ok, false)
      assert.deepEqual(describeError(a.error), describeError(b.error))
      assert.ok(officialErrors.WorkflowRuntimeError.is(a.error))
    }
    assert.equal(listDir('runs').length, before)
  })

  test('arguments that cannot be serialized fail before anything is written, with the official message', async () => {
    const before = listDir('runs').length
    for (const bad of [[() => 1], [Symbol('s')], [{ f() {} }], [new (class Foo {})()]]) {
      const a = await settle(() => ours.start(wf, bad))
      const b = await settle(() => official.start(wf, bad))
      assert.equal(a.ok, false, 'ours rejects')
      assert.equal(b.ok, false, 'official rejects')
      assert.equal(a.error.name, 'WorkflowRuntimeError')
      assert.equal(a.error.message, b.error.message)
    }
    // the official start() writes nothing either
    assert.equal(listDir('runs').length, before)
  })

  test('an unsafe workflow name: run_created is still written, then the official plain Error', async () => {
    const name = { workflowId: 'workflow//bad name//x' }
    const pendingRuns = () =>
      listDir('runs')
        .filter((f) => f.endsWith('.json'))
        .map((f) => readJson('runs', f))
        .filter((r) => r.workflowName === name.workflowId)
    const a = await settle(() => ours.start(name, []))
    // ours has written the run by the time start() rejects
    assert.equal(pendingRuns().length, 1)
    const b = await settle(() => official.start(name, []))
    assert.equal(a.ok, false)
    assert.deepEqual(describeError(a.error), describeError(b.error))
    // the official start() does not wait for its run_created write: watch for it
    const { watch } = await import('node:fs')
    const { file } = await import('./helpers/harness.mjs')
    await new Promise((resolve) => {
      const w = watch(file('runs'), () => pendingRuns().length === 2 && (w.close(), resolve()))
      if (pendingRuns().length === 2) (w.close(), resolve())
    })
    const pending = pendingRuns()
    assert.equal(pending.length, 2)
    assert.ok(pending.every((r) => r.status === 'pending'))
  })

  test('options.world creates and enqueues through that World, like the official start()', async () => {
    const recorder = () => {
      const calls = []
      return {
        calls,
        world: {
          events: { create: (...a) => world.events.create(...a) },
          queue: async (...a) => {
            calls.push(a)
            return { messageId: 'msg_test' }
          },
          getDeploymentId: async () => 'dpl_local@4.4.1',
        },
      }
    }
    const a = recorder()
    const b = recorder()
    const ra = await ours.start(wf, [7], { world: a.world })
    const rb = await official.start(wf, [7], { world: b.world })
    assert.equal(a.calls.length, 1)
    assert.equal(a.calls[0][0], b.calls[0][0])
    assert.equal(shape(a.calls[0][1]), shape(b.calls[0][1]))
    assert.deepEqual(a.calls[0][2], b.calls[0][2])
    // a World that declares no specVersion gets spec 2 runs (no runInput in the message)
    assert.equal(a.calls[0][1].runInput, undefined)
    assert.equal(readJson('runs', `${ra.runId}.json`).specVersion, 2)
    assert.equal(shape(readJson('runs', `${ra.runId}.json`)), shape(readJson('runs', `${rb.runId}.json`)))
    // …and one that declares 3 gets runInput with the arguments as bytes
    const c = recorder()
    c.world.specVersion = 3
    await ours.start(wf, [7], { world: c.world })
    assert.ok(c.calls[0][1].runInput.input instanceof Uint8Array)
  })

  test('a slow or failing app never makes start() reject or crash', async () => {
    const saved = process.env.WORKFLOW_LOCAL_BASE_URL
    process.env.WORKFLOW_LOCAL_BASE_URL = 'http://127.0.0.1:9' // nothing listens there
    try {
      const run = await ours.start(wf, [1])
      assert.equal(await run.status, 'pending')
    } finally {
      process.env.WORKFLOW_LOCAL_BASE_URL = saved
    }
  })
})

describe('getHookByToken()', () => {
  test('returns the same hook as the official one, metadata hydrated', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token, metadata: { kind: 'approval', at: new Date(5), tags: new Set(['a']) } })
    const a = await ours.getHookByToken(token)
    const b = await official.getHookByToken(token)
    assert.deepEqual(a, b)
    assert.deepEqual(Object.keys(a), Object.keys(b))
    assert.ok(a.createdAt instanceof Date)
    assert.ok(a.metadata.at instanceof Date)
  })

  test('without metadata, and for webhooks', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token, isWebhook: true })
    assert.deepEqual(await ours.getHookByToken(token), await official.getHookByToken(token))
  })

  test('unknown token: HookNotFoundError with the token, like the official', async () => {
    const a = await settle(() => ours.getHookByToken('no-such-token'))
    const b = await settle(() => official.getHookByToken('no-such-token'))
    assert.deepEqual(describeError(a.error), describeError(b.error))
    assert.equal(a.error.token, 'no-such-token')
    assert.ok(officialErrors.HookNotFoundError.is(a.error))
  })

  test('a hook whose files were lost is rebuilt from the event log, like world-local', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    const hookId = await createHook(runId, { token })
    const { rmSync } = await import('node:fs')
    const { createHash } = await import('node:crypto')
    const { file } = await import('./helpers/harness.mjs')
    rmSync(file('hooks', `${hookId}.json`))
    rmSync(file('hooks', 'tokens', `${createHash('sha256').update(token).digest('hex')}.json`))
    const a = await ours.getHookByToken(token)
    assert.equal(a.hookId, hookId)
    assert.ok(exists('hooks', `${hookId}.json`), 'entity restored')
    assert.deepEqual(await official.getHookByToken(token), a)
  })
})

describe('resumeHook()', () => {
  async function twin(payload) {
    const out = []
    for (const api of [ours, official]) {
      const runId = await createRun({ status: 'running' })
      const token = `tok-${newId('t')}`
      const hookId = await createHook(runId, { token, metadata: { n: 1 } })
      const hook = await api.resumeHook(token, payload)
      const ev = eventFiles(runId)
        .map((e) => e.json)
        .find((e) => e.eventType === 'hook_received')
      const msg = await queue.waitFor((e) => e.json?.runId === runId)
      out.push({ runId, token, hookId, hook, ev, msg })
    }
    return out
  }

  test('writes the same hook_received event and re-enqueues the run like the official one', async () => {
    const payload = { approved: true, at: new Date(0), big: 2n ** 70n, m: new Map([[1, [2, 3]]]) }
    const [a, b] = await twin(payload)
    assert.equal(shape(a.ev, { [a.token]: 'TOKEN' }), shape(b.ev, { [b.token]: 'TOKEN' }))
    assert.equal(a.ev.correlationId, a.hookId)
    assert.equal(a.ev.eventData.token, a.token)
    const decoded = await serialization.hydrateStepReturnValue(
      (await world.events.get(a.runId, a.ev.eventId)).eventData.payload,
      a.runId,
      undefined,
      globalThis,
    )
    assert.deepEqual(decoded, payload)
    assert.equal(shape(a.msg.json), shape(b.msg.json))
    assert.equal(a.msg.headers['x-vqs-queue-name'], `__wkf_workflow_${WORKFLOW_NAME}`)
    assert.deepEqual({ ...a.hook, runId: 0, hookId: 0, token: 0, createdAt: 0 }, {
      ...b.hook,
      runId: 0,
      hookId: 0,
      token: 0,
      createdAt: 0,
    })
  })

  test('accepts a Hook object as well as a token', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token })
    const hook = await ours.getHookByToken(token)
    const back = await ours.resumeHook(hook, 'yes')
    assert.equal(back, hook)
    assert.equal(eventFiles(runId).filter((e) => e.json.eventType === 'hook_received').length, 1)
  })

  test('a disposed hook (run finished) gives HookNotFoundError like the official', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token })
    const hook = await ours.getHookByToken(token)
    await world.events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })
    const a = await settle(() => ours.resumeHook(hook, 1))
    const b = await settle(() => official.resumeHook(hook, 1))
    assert.deepEqual(describeError(a.error), describeError(b.error))
    assert.equal(a.error.name, 'HookNotFoundError')
    const c = await settle(() => ours.resumeHook(token, 1))
    const d = await settle(() => official.resumeHook(token, 1))
    assert.deepEqual(describeError(c.error), describeError(d.error))
  })

  test('an unserializable payload fails with the official message and writes nothing', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token })
    const a = await settle(() => ours.resumeHook(token, { f: () => 1 }))
    const b = await settle(() => official.resumeHook(token, { f: () => 1 }))
    assert.equal(a.error.name, 'WorkflowRuntimeError')
    assert.equal(a.error.message, b.error.message)
    assert.equal(eventFiles(runId).filter((e) => e.json.eventType === 'hook_received').length, 0)
  })
})

describe('resumeWebhook()', () => {
  test('a plain hook is not publicly resumable: HookNotFoundError(token)', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token, isWebhook: false })
    const req = () => new Request('http://x/hook', { method: 'POST', body: 'hi' })
    const a = await settle(() => ours.resumeWebhook(token, req()))
    const b = await settle(() => official.resumeWebhook(token, req()))
    assert.deepEqual(describeError(a.error), describeError(b.error))
  })

  test('default answer is 202 and the request is stored like the official one, body as a byte stream', async () => {
    const { parse } = await import('devalue')
    const raw = (v) => v // keep every typed form as its reduced payload
    const keep = { Request: raw, Headers: raw, ReadableStream: raw }
    const results = []
    for (const api of [ours, official]) {
      const runId = await createRun({ status: 'running' })
      const token = `tok-${newId('t')}`
      await createHook(runId, { token, isWebhook: true })
      const res = await api.resumeWebhook(
        token,
        new Request('http://app.test/.well-known/workflow/v1/webhook/x?q=1', {
          method: 'POST',
          headers: { 'x-a': '1', 'content-type': 'text/plain' },
          body: 'hello webhook',
        }),
      )
      assert.equal(res.status, 202)
      assert.equal(await res.text(), '')
      const ev = eventFiles(runId)
        .map((e) => e.json)
        .find((e) => e.eventType === 'hook_received')
      const stored = (await world.events.get(runId, ev.eventId)).eventData.payload
      const text = Buffer.from(stored).toString('utf8')
      assert.ok(text.startsWith('devl'))
      const req = parse(text.slice(4), keep)
      // the body is a framed byte stream of its own; read it back with the official world
      const chunks = []
      const reader = (await world.readFromStream(req.body.name)).getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        chunks.push(Buffer.from(value))
      }
      results.push({ req, body: Buffer.concat(chunks) })
    }
    const [a, b] = results
    assert.equal(shape(a.req), shape(b.req))
    assert.deepEqual(a.req.body.type, 'bytes')
    assert.deepEqual(a.req.body.framing, 'framed-v1')
    assert.deepEqual(a.body, b.body, 'same framed body bytes')
    assert.equal(a.body.subarray(4).toString('utf8'), 'hello webhook')
  })

  test('respondWith: a stored Response is returned', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, {
      token,
      isWebhook: true,
      metadata: { respondWith: new Response(null, { status: 201, statusText: 'Created', headers: { 'x-r': 'y' } }) },
    })
    const res = await ours.resumeWebhook(token, new Request('http://x/', { method: 'POST', body: '{}' }))
    const off = await official.resumeWebhook(token, new Request('http://x/', { method: 'POST', body: '{}' }))
    for (const r of [res, off]) {
      assert.equal(r.status, 201)
      assert.equal(r.statusText, 'Created')
      assert.equal(r.headers.get('x-r'), 'y')
    }
  })

  test('an invalid respondWith value gives the official WorkflowRuntimeError', async () => {
    const runId = await createRun({ status: 'running' })
    const token = `tok-${newId('t')}`
    await createHook(runId, { token, isWebhook: true, metadata: { respondWith: 42 } })
    const mk = () => new Request('http://x/', { method: 'POST', body: '{}' })
    const a = await settle(() => ours.resumeWebhook(token, mk()))
    const b = await settle(() => official.resumeWebhook(token, mk()))
    assert.deepEqual(describeError(a.error), describeError(b.error))
  })
})

test('runStep is the no-op it is in workflow/api', () => {
  assert.equal(ours.runStep(), undefined)
  assert.equal(typeof ours.runStep, typeof official.runStep)
})
