// The embedded engine (workflow-native/workflow): workflows declared without a compiler,
// run in this process on the local data directory. Every run is also read back through
// the OFFICIAL World and `workflow/api`, which must see it as they see the official
// runtime's runs.
import { dataDir, official, officialErrors, ours, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'
import fs from 'node:fs'
import path from 'node:path'

const {
  workflow,
  step,
  sleep,
  createHook,
  createWebhook,
  defineHook,
  getWritable,
  getStepMetadata,
  getWorkflowMetadata,
  FatalError,
  RetryableError,
  useVirtualTime,
  useRealTime,
  advanceTime,
  nextSleep,
} = wf

async function events(runId) {
  const out = []
  let cursor
  do {
    const page = await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc', ...(cursor ? { cursor } : {}) } })
    out.push(...page.data)
    cursor = page.hasMore ? page.cursor : undefined
  } while (cursor)
  return out
}
const types = async (runId) => (await events(runId)).map((e) => e.eventType)

/** Resolves with the hook once a run created it (the run reaches createHook() on its own). */
async function hookExists(token) {
  for (;;) {
    const hook = await ours.getHookByToken(token).catch(() => undefined)
    if (hook) return hook
    await new Promise((r) => setImmediate(r))
  }
}

/** A promise plus its resolver: lets a test hold a step at a known point. */
function gate() {
  let open
  const p = new Promise((r) => (open = r))
  return { p, open }
}

// ------------------------------------------------------------------ basics

const add = step('add', async (a, b) => a + b)
const double = step('double', async (x) => x * 2)
const basic = workflow('basic', async (a, b) => {
  const s = await add(a, b)
  const d = await double(s)
  return { s, d, when: new Date(0), tags: new Set(['x']) }
})

test('a workflow with steps runs in-process; ours and the official getRun read the same result', async () => {
  const run = await ours.start(basic, [2, 3])
  const value = await run.returnValue
  assert.deepEqual(value, { s: 5, d: 10, when: new Date(0), tags: new Set(['x']) })
  assert.equal(await run.status, 'completed')
  assert.deepEqual(await official.getRun(run.runId).returnValue, value)
  assert.equal(await official.getRun(run.runId).status, 'completed')
  assert.equal(await official.getRun(run.runId).workflowName, 'workflow//native//basic')
  assert.deepEqual(await types(run.runId), [
    'run_created',
    'run_started',
    'step_created',
    'step_started',
    'step_completed',
    'step_created',
    'step_started',
    'step_completed',
    'run_completed',
  ])
  // the official World sees the steps as its runtime's
  const steps = await world.steps.list({ runId: run.runId, pagination: { sortOrder: 'asc' } })
  assert.deepEqual(
    steps.data.map((s) => [s.stepName, s.status, s.attempt]),
    [
      ['step//native//add', 'completed', 1],
      ['step//native//double', 'completed', 1],
    ],
  )
})

const held = gate()
const waitsForGate = step('waits-for-gate', async () => {
  await held.p
  return 'through'
})
const gated = workflow('gated', async () => await waitsForGate())

test('start() of a run the engine executes here resolves with the run already started under this process\'s lease', async () => {
  const run = await ours.start(gated, [])
  // run_created, the lease and run_started were written (and made durable) by start()
  // itself: both Worlds read a running run at once, with its start time
  assert.equal(await run.status, 'running')
  assert.equal(await official.getRun(run.runId).status, 'running')
  const [created, started] = (await events(run.runId)).slice(0, 2)
  assert.deepEqual([created.eventType, started.eventType], ['run_created', 'run_started'])
  const startedAt = await run.startedAt
  assert.ok(startedAt instanceof Date && startedAt.getTime() >= created.createdAt.getTime())
  const lease = path.join(dataDir, '.workflow-native', 'leases', `${run.runId}.json`)
  assert.ok(fs.existsSync(lease), 'the lease was taken by start()')
  held.open()
  assert.equal(await run.returnValue, 'through')
  assert.deepEqual(await types(run.runId), ['run_created', 'run_started', 'step_created', 'step_started', 'step_completed', 'run_completed'])
})

test('a step called outside a workflow simply runs', async () => {
  assert.equal(await add(1, 2), 3)
})

test('primitives outside a workflow throw the official errors', () => {
  assert.throws(() => sleep('1s'), { message: '`sleep()` can only be called inside a workflow function' })
  assert.throws(() => createHook(), { message: '`createHook()` can only be called inside a workflow function' })
  assert.throws(() => createWebhook(), { message: '`createWebhook()` can only be called inside a workflow function' })
  assert.throws(() => getStepMetadata(), { message: '`getStepMetadata()` can only be called inside a step function' })
  assert.throws(() => getWorkflowMetadata(), {
    message: '`getWorkflowMetadata()` can only be called inside a workflow or step function',
  })
  assert.throws(() => getWritable(), { message: '`getWritable()` can only be called inside a workflow or step function' })
})

test('declarations reject bad names', () => {
  assert.throws(() => workflow('has space', async () => 1), TypeError)
  assert.throws(() => step('', async () => 1), TypeError)
  assert.throws(() => step('s', async () => 1, { maxRetries: -1 }), TypeError)
})

// ------------------------------------------------------------------ retries and failures

test('a step that throws then succeeds is retried (attempt metadata, step_retrying events)', async () => {
  useVirtualTime()
  try {
    const attempts = []
    const flaky = step('flaky', async () => {
      const m = getStepMetadata()
      attempts.push(m.attempt)
      assert.equal(m.stepName, 'step//native//flaky')
      assert.ok(m.stepStartedAt instanceof Date)
      if (m.attempt < 3) throw new Error(`boom ${m.attempt}`)
      return 'ok'
    })
    const w = workflow('retrying', async () => flaky())
    const run = await ours.start(w, [])
    assert.equal(await run.returnValue, 'ok')
    assert.deepEqual(attempts, [1, 2, 3])
    const evs = await events(run.runId)
    const retrying = evs.filter((e) => e.eventType === 'step_retrying')
    assert.deepEqual(
      retrying.map((e) => e.eventData.error),
      ['boom 1', 'boom 2'],
    )
    const [s] = (await world.steps.list({ runId: run.runId })).data
    assert.equal(s.attempt, 3)
    assert.equal(s.status, 'completed')
  } finally {
    useRealTime()
  }
})

test('RetryableError.retryAfter is honoured (virtual time)', async () => {
  useVirtualTime({ auto: false })
  try {
    let calls = 0
    const later = step('later', async () => {
      calls++
      if (calls === 1) throw new RetryableError('not yet', { retryAfter: '10m' })
      return calls
    })
    const w = workflow('retry-after', async () => later())
    const run = await ours.start(w, [])
    // wait until the retry is recorded, then move time
    for (;;) {
      if ((await types(run.runId)).includes('step_retrying')) break
      await new Promise((r) => setImmediate(r))
    }
    const ev = (await events(run.runId)).find((e) => e.eventType === 'step_retrying')
    assert.equal(ev.eventData.error, 'not yet')
    assert.equal(calls, 1)
    await advanceTime('9m')
    assert.equal(calls, 1, 'not before retryAfter')
    await advanceTime('2m')
    assert.equal(await run.returnValue, 2)
  } finally {
    useRealTime()
  }
})

test('a step that exhausts its retries fails the run like the official runtime', async () => {
  useVirtualTime()
  try {
    let calls = 0
    const always = step(
      'always-fails',
      async () => {
        calls++
        throw new Error('nope')
      },
      { maxRetries: 2 },
    )
    const w = workflow('exhaust', async () => always())
    const run = await ours.start(w, [])
    const err = await run.returnValue.catch((e) => e)
    assert.equal(err.name, 'WorkflowRunFailedError')
    assert.equal(calls, 3)
    assert.match(err.cause.message, /Step "step\/\/native\/\/always-fails" failed after 2 retries: nope/)
    const off = await official.getRun(run.runId).returnValue.catch((e) => e)
    assert.equal(off.name, err.name)
    assert.equal(off.message, err.message)
    assert.equal(off.cause.message, err.cause.message)
    const t = await types(run.runId)
    assert.deepEqual(t.filter((x) => x.startsWith('step_')), [
      'step_created',
      'step_started',
      'step_retrying',
      'step_started',
      'step_retrying',
      'step_started',
      'step_failed',
    ])
    assert.equal(t.at(-1), 'run_failed')
  } finally {
    useRealTime()
  }
})

test('FatalError stops retries; the workflow sees a FatalError it can catch', async () => {
  let calls = 0
  const fatal = step('fatal', async () => {
    calls++
    throw new FatalError('bad input')
  })
  const w = workflow('fatal-caught', async () => {
    try {
      await fatal()
      return 'unreachable'
    } catch (e) {
      return `${e.name}: ${e.message}`
    }
  })
  const run = await ours.start(w, [])
  assert.equal(await run.returnValue, 'FatalError: bad input')
  assert.equal(calls, 1)
})

test('a workflow that throws fails with USER_ERROR', async () => {
  const w = workflow('throws', async () => {
    throw new TypeError('broken')
  })
  const run = await ours.start(w, [])
  const err = await run.returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunFailedError')
  assert.equal(err.cause.message, 'broken')
  assert.equal(err.cause.code, 'USER_ERROR')
})

test('parallel steps (Promise.all) run concurrently', async () => {
  const both = gate()
  let started = 0
  const meet = step('meet', async (i) => {
    started++
    if (started === 2) both.open()
    await both.p // each step waits until the other one started too
    return i
  })
  const w = workflow('parallel', async () => Promise.all([meet(1), meet(2)]))
  const run = await ours.start(w, [])
  assert.deepEqual(await run.returnValue, [1, 2])
})

// ------------------------------------------------------------------ serialization

test('arguments that cannot be serialized are rejected before anything is written', async () => {
  const w = workflow('unserializable-args', async (x) => x)
  await assert.rejects(ours.start(w, [() => 1]), (e) => {
    assert.equal(e.name, 'WorkflowRuntimeError')
    assert.match(e.message, /Failed to serialize workflow arguments/)
    return true
  })
})

test('a result that cannot be serialized fails the run', async () => {
  const w = workflow('unserializable-result', async () => ({ f: () => 1 }))
  const run = await ours.start(w, [])
  const err = await run.returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunFailedError')
  assert.match(err.cause.message, /Failed to serialize workflow return value/)
})

// ------------------------------------------------------------------ sleeps

test('a durable sleep is skipped by wakeUp()', async () => {
  const w = workflow('sleeper', async () => {
    const before = Date.now()
    await sleep('1h')
    return Date.now() - before < 3_600_000
  })
  const run = await ours.start(w, [])
  await nextSleep(run)
  assert.deepEqual(await run.wakeUp(), { stoppedCount: 1 })
  assert.equal(await run.returnValue, true)
  const evs = await events(run.runId)
  const created = evs.find((e) => e.eventType === 'wait_created')
  const completed = evs.find((e) => e.eventType === 'wait_completed')
  assert.equal(completed.correlationId, created.correlationId)
})

test('virtual time: sleeps complete without waiting in real time', async () => {
  useVirtualTime()
  try {
    const w = workflow('long-sleeps', async () => {
      await sleep('1d')
      await sleep(new Date(Date.now() + 7 * 86_400_000))
      return 'rested'
    })
    const run = await ours.start(w, [])
    assert.equal(await run.returnValue, 'rested')
    assert.equal((await types(run.runId)).filter((t) => t === 'wait_completed').length, 2)
  } finally {
    useRealTime()
  }
})

test('an invalid sleep duration fails the run with the official message', async () => {
  const w = workflow('bad-sleep', async () => sleep('forever'))
  const run = await ours.start(w, [])
  const err = await run.returnValue.catch((e) => e)
  assert.match(err.cause.message, /^Invalid duration: "forever"/)
})

// ------------------------------------------------------------------ hooks

test('hooks: resumeHook() delivers payloads in order; getHookByToken sees the hook', async () => {
  const token = `order-${process.pid}`
  const w = workflow('hooked', async () => {
    const hook = createHook({ token, metadata: { kind: 'approval' } })
    const got = []
    for await (const p of hook) {
      got.push(p)
      if (got.length === 2) break
    }
    return got
  })
  const run = await ours.start(w, [])
  // the hook exists once the run created it
  const hook = await hookExists(token)
  assert.equal(hook.runId, run.runId)
  const off = await official.getHookByToken(token)
  assert.deepEqual(off.metadata, { kind: 'approval' })
  await ours.resumeHook(token, { n: 1 })
  await ours.resumeHook(token, { n: 2, at: new Date(5) })
  assert.deepEqual(await run.returnValue, [{ n: 1 }, { n: 2, at: new Date(5) }])
})

test('a hook token held by another run: awaiting the hook rejects with HookConflictError', async () => {
  const token = `conflict-${process.pid}`
  const holder = workflow('holder', async () => {
    const h = createHook({ token })
    return await h
  })
  const rival = workflow('rival', async () => {
    const h = createHook({ token })
    const conflict = await h.getConflict()
    try {
      await h
      return 'no conflict'
    } catch (e) {
      return { name: e.name, conflictRun: conflict && conflict.runId }
    }
  })
  const a = await ours.start(holder, [])
  await hookExists(token)
  const b = await ours.start(rival, [])
  const res = await b.returnValue
  assert.equal(res.name, 'HookConflictError')
  assert.ok(officialErrors.HookConflictError.is(Object.assign(new Error(), { name: res.name })))
  await ours.resumeHook(token, 'done')
  assert.equal(await a.returnValue, 'done')
})

test('defineHook validates with a Standard Schema before resuming', async () => {
  const approval = defineHook({
    schema: {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate: (v) => (v && typeof v.ok === 'boolean' ? { value: v } : { issues: [{ message: 'ok must be boolean' }] }),
      },
    },
  })
  const token = `typed-${process.pid}`
  const w = workflow('typed-hook', async () => {
    const h = approval.create({ token })
    return (await h).ok
  })
  const run = await ours.start(w, [])
  await hookExists(token)
  await assert.rejects(approval.resume(token, { ok: 'yes' }), /ok must be boolean/)
  await approval.resume(token, { ok: true })
  assert.equal(await run.returnValue, true)
})

test('webhooks: resumeWebhook() answers 202 and the workflow reads the Request', async () => {
  const w = workflow('webhooked', async () => {
    const hook = createWebhook()
    await announce(hook.token, hook.url)
    const req = await hook
    return { method: req.method, body: await req.text() }
  })
  const announce = step('announce', async (token, url) => {
    const writer = getWritable({ namespace: 'control' }).getWriter()
    await writer.write({ token, url })
    await writer.close()
  })
  const run = await ours.start(w, [])
  const [info] = await (async () => {
    const out = []
    for await (const v of run.getReadable({ namespace: 'control' })) out.push(v)
    return out
  })()
  assert.match(info.url, /\/\.well-known\/workflow\/v1\/webhook\//)
  const res = await ours.resumeWebhook(info.token, new Request('http://x.test/hook', { method: 'POST', body: 'ping' }))
  assert.equal(res.status, 202)
  assert.deepEqual(await run.returnValue, { method: 'POST', body: 'ping' })
})

// ------------------------------------------------------------------ streams

test('steps stream with getWritable(); the run stream is read live by ours and the official reader', async () => {
  const release = gate()
  const produce = step('produce', async (n) => {
    const writer = getWritable().getWriter()
    for (let i = 0; i < n; i++) await writer.write({ i, at: new Date(i) })
    writer.releaseLock()
  })
  const hold = step('hold', async () => {
    await release.p
  })
  const finish = step('finish', async () => {
    const w = getWritable()
    await w.close()
  })
  const w = workflow('streamer', async () => {
    await produce(3)
    await hold()
    await finish()
    return 'streamed'
  })
  const run = await ours.start(w, [])
  const reader = run.getReadable().getReader()
  const seen = []
  for (let i = 0; i < 3; i++) seen.push((await reader.read()).value) // live: the run is still going
  assert.deepEqual(seen, [0, 1, 2].map((i) => ({ i, at: new Date(i) })))
  release.open()
  assert.equal((await reader.read()).done, true)
  assert.equal(await run.returnValue, 'streamed')
  const off = []
  for await (const v of official.getRun(run.runId).getReadable()) off.push(v)
  assert.deepEqual(off, seen)
})

test('getWritable() from the workflow body is a handle to pass to a step', async () => {
  const writeTo = step('write-to', async (writable) => {
    const writer = writable.getWriter()
    await writer.write('via handle')
    await writer.close()
  })
  const w = workflow('handle', async () => {
    await writeTo(getWritable({ namespace: 'h' }))
    return getWorkflowMetadata().workflowName
  })
  const run = await ours.start(w, [])
  assert.equal(await run.returnValue, 'workflow//native//handle')
  const out = []
  for await (const v of run.getReadable({ namespace: 'h' })) out.push(v)
  assert.deepEqual(out, ['via handle'])
})

// ------------------------------------------------------------------ cancellation

test('cancellation during a step: the run ends cancelled and the step result is dropped', async () => {
  const inside = gate()
  const release = gate()
  let after = 0
  const slow = step('slow', async () => {
    inside.open()
    await release.p
    return 'late'
  })
  const next = step('next', async () => {
    after++
  })
  const w = workflow('cancelled', async () => {
    await slow()
    await next()
    return 'done'
  })
  const run = await ours.start(w, [])
  await inside.p
  await run.cancel()
  release.open()
  const err = await run.returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunCancelledError')
  assert.equal(await official.getRun(run.runId).status, 'cancelled')
  assert.equal(after, 0)
  const t = await types(run.runId)
  assert.ok(!t.includes('step_completed'))
  assert.equal(t.at(-1), 'run_cancelled')
})

test('metadata: getWorkflowMetadata() in the workflow and in steps', async () => {
  const meta = step('meta', async () => {
    const m = getWorkflowMetadata()
    return { id: m.workflowRunId, started: m.workflowStartedAt instanceof Date }
  })
  const w = workflow('meta-wf', async () => {
    const m = getWorkflowMetadata()
    const s = await meta()
    return { id: m.workflowRunId, s }
  })
  const run = await ours.start(w, [])
  const v = await run.returnValue
  assert.equal(v.id, run.runId)
  assert.deepEqual(v.s, { id: run.runId, started: true })
  assert.ok(dataDir)
})

test('a workflow started from inside a step is durable on its own (not run as part of the step)', async () => {
  const inner = step('inner', async (x) => x + 1)
  const child = workflow('child-of-step', async (x) => {
    await sleep(0)
    return inner(x)
  })
  const spawnChild = step('spawn-child', async (x) => (await ours.start(child, [x])).runId)
  const parent = workflow('parent-of-child', async () => spawnChild(41))
  const run = await ours.start(parent, [])
  const childId = await run.returnValue
  assert.equal(await ours.getRun(childId).returnValue, 42)
  const t = await types(childId)
  assert.ok(t.includes('step_completed') && t.includes('wait_completed'), t.join(','))
})

test('dispose() of a hook whose token conflicted does not throw', async () => {
  const token = `dispose-${process.pid}`
  const a = workflow('dispose-holder', async () => {
    const h = createHook({ token })
    return await h
  })
  const b = workflow('dispose-rival', async () => {
    const h = createHook({ token })
    const c = await h.getConflict()
    h.dispose()
    return c ? 'dup' : 'free'
  })
  const ra = await ours.start(a, [])
  await hookExists(token)
  const rb = await ours.start(b, [])
  assert.equal(await rb.returnValue, 'dup')
  await ours.resumeHook(token, 1)
  assert.equal(await ra.returnValue, 1)
})

test('nextSleep() resolves when the run ends without sleeping', async () => {
  const w = workflow('never-sleeps', async () => 'awake')
  const run = await ours.start(w, [])
  await nextSleep(run)
  assert.equal(await run.returnValue, 'awake')
})

// ------------------------------------------------------------------ crash windows

test('a crash between step_created and step_started (one journal batch): resumeRuns() starts the step once, attempt 1', async () => {
  const { stringify } = await import('../lib/vendor/devalue.cjs')
  const { binding } = await import('../lib/native.js')
  const native = new binding.NativeWorld(dataDir)
  const bytes = (v) => ({ __type: 'Uint8Array', data: Buffer.from(`devl${stringify(v)}`).toString('base64') })
  let ran = 0
  const double = step('crash-window-double', async (x) => {
    ran++
    return x * 2
  })
  const w = workflow('crash-window', async (x) => double(x))
  // The log as a crash right after the batch's first write leaves it: the step is created,
  // never started.
  const created = JSON.parse(
    native.createEventSync(
      null,
      JSON.stringify({
        eventType: 'run_created',
        specVersion: 3,
        eventData: { deploymentId: 'dpl_test', workflowName: w.workflowId, input: bytes([21]) },
      }),
    ),
  )
  const runId = created.event.runId
  native.createEventSync(runId, JSON.stringify({ eventType: 'run_started', specVersion: 3 }))
  native.createEventSync(
    runId,
    JSON.stringify({
      eventType: 'step_created',
      specVersion: 3,
      correlationId: 'step_01M8TSB9JAT4N19QBB9SPCT4YN',
      eventData: { stepName: 'step//native//crash-window-double', workflowName: w.workflowId, input: bytes({ args: [21] }) },
    }),
  )
  const resumed = await wf.resumeRuns()
  assert.ok(resumed.includes(runId))
  assert.equal(await ours.getRun(runId).returnValue, 42)
  assert.equal(ran, 1)
  const t = await types(runId)
  assert.deepEqual(t, ['run_created', 'run_started', 'step_created', 'step_started', 'step_completed', 'run_completed'])
  const steps = (await world.steps.list({ runId, pagination: { sortOrder: 'asc' } })).data
  assert.deepEqual(steps.map((s) => [s.status, s.attempt]), [['completed', 1]])
})
