// PostgreSQL, both ways, on one database with the official @workflow/world-postgres 4.3.7
// (bootstrapped by its own CLI): what the official World writes, our `workflow/api` reads
// identically (getters, returnValue, errors, streams, hooks); what ours writes (every
// event type, streams, hooks, waits) the official World reads identically, with the same
// CBOR bytes as the official writer produces for the same data. Our start(),
// resumeHook() and wakeUp() hand the official app's queue the official job payload.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { testDatabase, upstreamBootstrap, sql, schemaDump } from './helpers/pg.mjs'

const db = await testDatabase('twin')
const skip = db.skip
process.env.WORKFLOW_TARGET_WORLD = '@workflow/world-postgres'
if (!skip) process.env.WORKFLOW_POSTGRES_URL = db.url
delete process.env.WORKFLOW_QUEUE_NAMESPACE

const serialization = await import('@workflow/core/serialization')
const { monotonicFactory } = await import('ulid')
const ours = await import('../index.js')
const ourErrors = await import('../errors.js')
const { binding } = await import('../lib/native.js')

const ulid = monotonicFactory()
const newRunId = () => `wrun_${ulid()}`
const WORKFLOW_NAME = 'workflow//./src/workflows/pg//pgWorkflow'
const EXECUTION_CONTEXT = { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } }

let official // the official World
let client // a plain SQL client
let native // our native World on the same database

const encodeArgs = (args, runId) => serialization.dehydrateWorkflowArguments(args, runId, undefined)
const encodeReturn = (v, runId) => serialization.dehydrateWorkflowReturnValue(v, runId, undefined)

async function frameValue(value, runId) {
  const ts = serialization.getSerializeStream(serialization.getExternalReducers(globalThis, [], runId, undefined), undefined)
  const writer = ts.writable.getWriter()
  const reader = ts.readable.getReader()
  const written = writer.write(value)
  const { value: frame } = await reader.read()
  await written
  await writer.close()
  return frame
}

before(async () => {
  if (skip) return
  upstreamBootstrap(db.url)
  const { createWorld } = await import('@workflow/world-postgres')
  official = createWorld({ connectionString: db.url })
  client = await sql(db.url)
  native = await binding.pgConnect({ url: db.url })
})

after(async () => {
  if (skip) return
  await client?.end()
  await official?.close?.()
  await db.drop()
})

/** A run written by the official World, moved to `status`. */
async function officialRun(status, { value = { ok: 1 }, args = [1, 2] } = {}) {
  const runId = newRunId()
  await official.events.create(runId, {
    eventType: 'run_created',
    specVersion: 3,
    eventData: { deploymentId: 'postgres', workflowName: WORKFLOW_NAME, input: await encodeArgs(args, runId), executionContext: EXECUTION_CONTEXT },
  })
  if (status === 'pending') return runId
  await official.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  if (status === 'running') return runId
  if (status === 'completed') {
    await official.events.create(runId, { eventType: 'run_completed', specVersion: 3, eventData: { output: await encodeReturn(value, runId) } })
  } else if (status === 'failed') {
    await official.events.create(runId, {
      eventType: 'run_failed',
      specVersion: 3,
      eventData: { error: { message: 'boom', stack: 'Error: boom\n    at wf (wf.js:1:1)' }, errorCode: 'USER_ERROR' },
    })
  } else if (status === 'cancelled') {
    await official.events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })
  }
  return runId
}

/** A running run written by the official World, holding a plain hook (no metadata). */
async function officialRunWithHook(correlationId, token) {
  const runId = await officialRun('running')
  await official.events.create(runId, {
    eventType: 'hook_created',
    specVersion: 3,
    correlationId,
    eventData: { token, isWebhook: false },
  })
  return runId
}

async function jobsFor(runId) {
  const r = await client.query(
    `SELECT t.identifier AS task_identifier, j.payload, j.key, j.max_attempts
       FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id ORDER BY j.id`,
  )
  return r.rows
    .map((row) => ({ ...row, message: JSON.parse(Buffer.from(row.payload.data, 'base64').toString('utf8')) }))
    .filter((j) => j.message.runId === runId || j.message.workflowRunId === runId)
}

describe('PostgreSQL twin: the official World writes, ours reads', { skip }, () => {
  test('schema of our bootstrap is the upstream CLI\'s, object for object', async () => {
    const mine = await testDatabase('twin_schema')
    try {
      const n = await binding.pgConnect({ url: mine.url })
      assert.ok(n)
      assert.equal(schemaDump(mine.url), schemaDump(db.url))
      const ledger = async (url) => {
        const c = await sql(url)
        try {
          return (await c.query('SELECT hash, created_at FROM workflow_drizzle.workflow_migrations ORDER BY id')).rows
        } finally {
          await c.end()
        }
      }
      assert.deepEqual(await ledger(mine.url), await ledger(db.url))
      // the upstream CLI accepts our database as up to date
      upstreamBootstrap(mine.url)
      assert.equal((await ledger(mine.url)).length, 12)
    } finally {
      await mine.drop()
    }
  })

  test('every getter of a run in every status', async () => {
    for (const status of ['pending', 'running', 'completed', 'failed', 'cancelled']) {
      const runId = await officialRun(status)
      const theirs = await official.runs.get(runId)
      const run = ours.getRun(runId)
      assert.equal(await run.exists, true)
      assert.equal(await run.status, status)
      assert.equal(await run.workflowName, WORKFLOW_NAME)
      assert.equal((await run.createdAt).getTime(), theirs.createdAt.getTime())
      assert.equal((await run.startedAt)?.getTime(), theirs.startedAt?.getTime())
      assert.equal((await run.completedAt)?.getTime(), theirs.completedAt?.getTime())
    }
  })

  test('returnValue: the value, the failure and the cancellation', async () => {
    const done = await officialRun('completed', { value: { answer: 42, when: new Date(5), big: 10n } })
    assert.deepEqual(await ours.getRun(done).returnValue, { answer: 42, when: new Date(5), big: 10n })
    const failed = await officialRun('failed')
    await assert.rejects(ours.getRun(failed).returnValue, (e) => {
      assert.ok(ourErrors.WorkflowRunFailedError.is(e))
      assert.equal(e.runId, failed)
      assert.equal(e.cause.message, 'boom')
      assert.equal(e.cause.code, 'USER_ERROR')
      return true
    })
    const cancelled = await officialRun('cancelled')
    await assert.rejects(ours.getRun(cancelled).returnValue, (e) => ourErrors.WorkflowRunCancelledError.is(e))
  })

  test('returnValue waits for a completion the official World writes later (polling backstop)', async () => {
    const runId = await officialRun('running')
    const waiting = ours.getRun(runId).returnValue
    await official.events.create(runId, { eventType: 'run_completed', specVersion: 3, eventData: { output: await encodeReturn('late', runId) } })
    assert.equal(await waiting, 'late')
  })

  test('a missing run: exists false, status WorkflowRunNotFoundError', async () => {
    const run = ours.getRun(newRunId())
    assert.equal(await run.exists, false)
    await assert.rejects(run.status, (e) => ourErrors.WorkflowRunNotFoundError.is(e))
  })

  test('getReadable reads what the official writer wrote, live, and getTailIndex agrees', async () => {
    const runId = await officialRun('running')
    const name = binding.runStreamName(runId, undefined)
    for (const v of ['a', { b: 2 }]) await official.writeToStream(name, runId, await frameValue(v, runId))
    const readable = ours.getRun(runId).getReadable()
    assert.equal(await readable.getTailIndex(), 1)
    const reader = readable.getReader()
    assert.deepEqual((await reader.read()).value, 'a')
    assert.deepEqual((await reader.read()).value, { b: 2 })
    const next = reader.read()
    await official.writeToStream(name, runId, await frameValue([3], runId))
    assert.deepEqual((await next).value, [3])
    await official.closeStream(name, runId)
    assert.equal((await reader.read()).done, true)
    const info = await official.getStreamInfo(name, runId)
    assert.equal(await ours.getRun(runId).getReadable().getTailIndex(), info.tailIndex)
    const fromTail = ours.getRun(runId).getReadable({ startIndex: -1 }).getReader()
    assert.deepEqual((await fromTail.read()).value, [3])
  })

  test('a long closed stream the official wrote reads whole and in order from any start, across pages and batches', async () => {
    const runId = await officialRun('running')
    const name = binding.runStreamName(runId, undefined)
    // pages of 1,000 rows, JS batches of 512: all-ASCII batches and batches with other text
    const value = (i) =>
      i % 5 === 0 ? `chunk ${i}` : i % 5 === 1 ? { i, s: 'é ✓ 𝄞'.repeat(i % 3) } : i % 5 === 2 ? [i, null, true] : i % 5 === 3 ? `ünï ${i}` : { i, nested: { at: [i] } }
    const total = 2600
    for (let i = 0; i < total; i += 500) {
      const frames = []
      for (let j = i; j < Math.min(total, i + 500); j++) frames.push(await frameValue(value(j), runId))
      await official.writeToStreamMulti(name, runId, frames)
    }
    await official.closeStream(name, runId)
    for (const [startIndex, from] of [[undefined, 0], [1234, 1234], [-7, total - 7], [2600, total]]) {
      const got = []
      for await (const v of ours.getRun(runId).getReadable({ startIndex })) got.push(v)
      assert.equal(got.length, total - from, `from ${startIndex}`)
      for (let k = 0; k < got.length; k++) assert.deepEqual(got[k], value(from + k), `from ${startIndex}, chunk ${from + k}`)
    }
  })

  test('getHookByToken returns the official hook; an unknown token is HookNotFoundError', async () => {
    const runId = await officialRun('running')
    const metadata = await serialization.dehydrateStepReturnValue({ m: 1 }, runId, undefined)
    await official.events.create(runId, {
      eventType: 'hook_created',
      specVersion: 3,
      correlationId: 'hook_t1',
      eventData: { token: 'tok-official', metadata, isWebhook: false },
    })
    const theirs = await official.hooks.getByToken('tok-official')
    const hook = await ours.getHookByToken('tok-official')
    for (const k of ['runId', 'hookId', 'token', 'ownerId', 'projectId', 'environment', 'isWebhook', 'specVersion']) {
      assert.deepEqual(hook[k], theirs[k], k)
    }
    assert.equal(hook.createdAt.getTime(), theirs.createdAt.getTime())
    assert.deepEqual(hook.metadata, { m: 1 })
    await assert.rejects(ours.getHookByToken('no-such-token'), (e) => ourErrors.HookNotFoundError.is(e))
  })

  test('cancel(): the official World sees the run cancelled and the event', async () => {
    const runId = await officialRun('running')
    await ours.getRun(runId).cancel()
    assert.equal((await official.runs.get(runId)).status, 'cancelled')
    const types = (await official.events.list({ runId })).data.map((e) => e.eventType)
    assert.deepEqual(types, ['run_created', 'run_started', 'run_cancelled'])
    await ours.getRun(runId).cancel() // a repeat is accepted
    await assert.rejects(ours.getRun(runId).returnValue, (e) => ourErrors.WorkflowRunCancelledError.is(e))
  })

  test('cancel() of a run that does not exist: WorkflowRunNotFoundError as the official World gives it, nothing written', async () => {
    // (ids world-local would refuse as unsafe are only query parameters here, as upstream)
    for (const runId of [newRunId(), 'a/b', 'wrun_a.b', 'nope']) {
      const theirs = await official.events
        .create(runId, { eventType: 'run_cancelled', specVersion: 3 })
        .then(() => 'resolved', (e) => e.name)
      assert.equal(theirs, 'WorkflowRunNotFoundError', runId)
      await assert.rejects(ours.getRun(runId).cancel(), (e) => {
        assert.ok(ourErrors.WorkflowRunNotFoundError.is(e), `${runId}: ${e.name} ${e.message}`)
        assert.equal(e.message, `Workflow run "${runId}" not found`)
        return true
      })
      const rows = await client.query('SELECT count(*)::int AS n FROM workflow.workflow_events WHERE run_id = $1', [runId])
      assert.equal(rows.rows[0].n, 0, runId)
    }
  })

  test('the run is in the official queue when start(), resumeHook() and wakeUp() resolve', async () => {
    const run = await ours.start({ workflowId: WORKFLOW_NAME }, [1])
    assert.equal((await jobsFor(run.runId)).length, 1, 'after start()')
    const runId = await officialRunWithHook('hook_q1', 'tok-queued')
    await ours.resumeHook('tok-queued', 1)
    assert.equal((await jobsFor(runId)).length, 1, 'after resumeHook()')
    const slept = await officialRun('running')
    await official.events.create(slept, {
      eventType: 'wait_created',
      specVersion: 3,
      correlationId: 'wait_q1',
      eventData: { resumeAt: new Date(Date.now() + 3_600_000) },
    })
    await ours.getRun(slept).wakeUp()
    assert.equal((await jobsFor(slept)).length, 1, 'after wakeUp()')
  })

  test('a hook without metadata has the metadata key, as world-postgres returns it', async () => {
    const runId = await officialRunWithHook('hook_nometa', 'tok-no-metadata')
    const theirs = await official.hooks.getByToken('tok-no-metadata')
    const hook = await ours.getHookByToken('tok-no-metadata')
    assert.equal('metadata' in theirs, true)
    assert.equal('metadata' in hook, true)
    assert.equal(hook.metadata, undefined)
  })

  test('wakeUp(): completes the official sleep and enqueues the run for the official app', async () => {
    const runId = await officialRun('running')
    const resumeAt = new Date(Date.now() + 3_600_000)
    await official.events.create(runId, { eventType: 'wait_created', specVersion: 3, correlationId: 'wait_w1', eventData: { resumeAt } })
    const r = await ours.getRun(runId).wakeUp()
    assert.equal(r.stoppedCount, 1)
    const events = (await official.events.list({ runId })).data
    const wc = events.find((e) => e.eventType === 'wait_completed')
    assert.equal(wc.correlationId, 'wait_w1')
    assert.equal(new Date(wc.eventData.resumeAt).getTime(), resumeAt.getTime())
    await waitFor(async () => (await jobsFor(runId)).length === 1)
    const [job] = await jobsFor(runId)
    assert.equal(job.task_identifier, 'workflow_flows')
    assert.equal(job.payload.id, WORKFLOW_NAME)
    assert.equal(job.payload.attempt, 1)
    assert.match(job.payload.messageId, /^msg_/)
    assert.equal(job.key, job.payload.messageId)
    assert.equal(job.max_attempts, 3)
  })

  test('resumeHook(): hook_received as the official World reads it, and the run enqueued', async () => {
    const runId = await officialRunWithHook('hook_r1', 'tok-resume')
    const hook = await ours.resumeHook('tok-resume', { hello: 'world' })
    assert.equal(hook.hookId, 'hook_r1')
    const received = (await official.events.list({ runId })).data.find((e) => e.eventType === 'hook_received')
    assert.equal(received.correlationId, 'hook_r1')
    assert.deepEqual(await serialization.hydrateStepReturnValue(received.eventData.payload, runId, undefined, globalThis), { hello: 'world' })
    await waitFor(async () => (await jobsFor(runId)).length === 1)
  })
  test('resumeWebhook(): 202, hook_received as the official World reads it, the body in a stream row', async () => {
    const runId = await officialRun('running')
    await official.events.create(runId, {
      eventType: 'hook_created',
      specVersion: 3,
      correlationId: 'hook_wh1',
      eventData: { token: 'tok-webhook', isWebhook: true },
    })
    const res = await ours.resumeWebhook('tok-webhook', new Request('https://example.test/hook', { method: 'POST', body: 'payload-text' }))
    assert.equal(res.status, 202)
    const received = (await official.events.list({ runId })).data.find((e) => e.eventType === 'hook_received')
    assert.equal(received.correlationId, 'hook_wh1')
    assert.ok(received.eventData.payload instanceof Uint8Array)
    await waitFor(async () => (await jobsFor(runId)).length === 1)
    await waitFor(async () => {
      const r = await client.query('SELECT data FROM workflow.workflow_stream_chunks WHERE run_id = $1 AND NOT eof', [runId])
      return r.rows.some((row) => row.data.includes(Buffer.from('payload-text')))
    })
    // a hook that is not a webhook is not found by resumeWebhook
    await official.events.create(runId, { eventType: 'hook_created', specVersion: 3, correlationId: 'hook_wh2', eventData: { token: 'tok-plain', isWebhook: false } })
    await assert.rejects(ours.resumeWebhook('tok-plain', new Request('https://example.test/x', { method: 'POST' })), (e) => ourErrors.HookNotFoundError.is(e))
  })
})

describe('PostgreSQL twin: ours writes, the official World reads', { skip }, () => {
  function toJson(v) {
    if (v instanceof Uint8Array) return { __type: 'Uint8Array', data: Buffer.from(v).toString('base64') }
    if (v instanceof Date) return v.toISOString()
    if (Array.isArray(v)) return v.map(toJson)
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]))
    return v
  }

  const RESUME = new Date(Date.UTC(2030, 0, 1, 0, 0, 0, 250))

  async function lifecycle(runId) {
    return [
      { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'postgres', workflowName: WORKFLOW_NAME, input: await encodeArgs([1, 'two'], runId), executionContext: EXECUTION_CONTEXT } },
      { eventType: 'run_started', specVersion: 3 },
      { eventType: 'step_created', specVersion: 3, correlationId: `step_s1${runId.slice(-6)}`, eventData: { stepName: 'step//./x//add', input: await encodeArgs([1], runId) } },
      { eventType: 'step_started', specVersion: 3, correlationId: `step_s1${runId.slice(-6)}` },
      { eventType: 'step_retrying', specVersion: 3, correlationId: `step_s1${runId.slice(-6)}`, eventData: { error: { message: 'flaky', stack: 'Error: flaky' }, retryAfter: new Date(Date.now() - 1000) } },
      { eventType: 'step_started', specVersion: 3, correlationId: `step_s1${runId.slice(-6)}` },
      { eventType: 'step_completed', specVersion: 3, correlationId: `step_s1${runId.slice(-6)}`, eventData: { result: await encodeReturn(3, runId) } },
      { eventType: 'step_created', specVersion: 3, correlationId: `step_s2${runId.slice(-6)}`, eventData: { stepName: 'step//./x//fail', input: await encodeArgs([], runId) } },
      { eventType: 'step_started', specVersion: 3, correlationId: `step_s2${runId.slice(-6)}` },
      { eventType: 'step_failed', specVersion: 3, correlationId: `step_s2${runId.slice(-6)}`, eventData: { error: { message: 'bad', stack: 'Error: bad' } } },
      { eventType: 'wait_created', specVersion: 3, correlationId: 'wait_1', eventData: { resumeAt: RESUME } },
      { eventType: 'wait_completed', specVersion: 3, correlationId: 'wait_1', eventData: { resumeAt: RESUME } },
      { eventType: 'hook_created', specVersion: 3, correlationId: `hook_${runId.slice(-6)}`, eventData: { token: `tok-${runId}`, isWebhook: true } },
      { eventType: 'hook_received', specVersion: 3, correlationId: `hook_${runId.slice(-6)}`, eventData: { token: `tok-${runId}`, payload: await encodeReturn({ p: 1 }, runId) } },
      { eventType: 'hook_disposed', specVersion: 3, correlationId: `hook_${runId.slice(-6)}` },
      { eventType: 'run_completed', specVersion: 3, eventData: { output: await encodeReturn({ done: true }, runId) } },
    ]
  }

  function rewriteIds(r, from, to) {
    if (r.correlationId) r.correlationId = r.correlationId.replace(from.slice(-6), to.slice(-6))
    if (r.eventData?.token) r.eventData.token = r.eventData.token.replace(from, to)
    return r
  }

  test('every event type: the official World reads our run, steps, hooks, waits and events', async () => {
    const runId = newRunId()
    for (const req of await lifecycle(runId)) {
      if (req.eventType === 'hook_disposed') {
        const h = await official.hooks.getByToken(`tok-${runId}`)
        assert.equal(h.runId, runId)
        assert.equal(h.isWebhook, true)
      }
      await native.createEvent(runId, JSON.stringify(toJson(req)))
    }
    const run = await official.runs.get(runId)
    assert.equal(run.status, 'completed')
    assert.equal(run.workflowName, WORKFLOW_NAME)
    assert.deepEqual(run.executionContext, EXECUTION_CONTEXT)
    assert.deepEqual(await serialization.hydrateWorkflowReturnValue(run.output, runId, undefined, globalThis), { done: true })
    const s1 = await official.steps.get(runId, `step_s1${runId.slice(-6)}`)
    assert.equal(s1.status, 'completed')
    assert.equal(s1.attempt, 2)
    const s2 = await official.steps.get(runId, `step_s2${runId.slice(-6)}`)
    assert.equal(s2.status, 'failed')
    assert.equal(s2.error.message, 'bad')
    const events = (await official.events.list({ runId })).data
    assert.deepEqual(
      events.map((e) => e.eventType),
      (await lifecycle(runId)).map((r) => r.eventType),
    )
    assert.ok(events.every((e) => e.eventId.startsWith('wevt_')))
    const wc = events.find((e) => e.eventType === 'wait_created')
    assert.ok(wc.eventData.resumeAt instanceof Date)
    assert.equal(wc.eventData.resumeAt.getTime(), RESUME.getTime())
    // what ours lists is what the official World lists
    const mine = JSON.parse(await native.listEventsJson(runId))
    assert.deepEqual(mine.map((e) => e.eventId), events.map((e) => e.eventId))
    assert.deepEqual(mine.map((e) => new Date(e.createdAt).getTime()), events.map((e) => e.createdAt.getTime()))
    // terminal: no hooks or waits left
    await assert.rejects(official.hooks.getByToken(`tok-${runId}`))
  })

  test('the same events through both writers leave the same CBOR bytes', async () => {
    const a = newRunId()
    const b = newRunId()
    const reqsA = await lifecycle(a)
    const reqsB = reqsA.map((r) => rewriteIds(structuredClone(r), a, b))
    for (let i = 0; i < reqsA.length; i++) {
      await official.events.create(a, reqsA[i])
      await native.createEvent(b, JSON.stringify(toJson(reqsB[i])))
    }
    const cols = async (q, id) => (await client.query(q, [id])).rows
    const ev = (id) => cols('SELECT type, correlation_id, payload_cbor, spec_version FROM workflow.workflow_events WHERE run_id = $1 ORDER BY id', id)
    const [ea, eb] = [await ev(a), await ev(b)]
    assert.equal(ea.length, eb.length)
    for (let i = 0; i < ea.length; i++) {
      assert.equal(eb[i].type, ea[i].type)
      assert.equal(eb[i].spec_version, ea[i].spec_version, `${ea[i].type} spec_version`)
      const label = `${ea[i].type} #${i} payload_cbor`
      // the hook token names its run (tokens are unique among live hooks); same length
      const hexOf = (id) => Buffer.from(`tok-${id}`).toString('hex')
      const mine = eb[i].payload_cbor?.toString('hex').replaceAll(hexOf(b), hexOf(a))
      assert.equal(mine, ea[i].payload_cbor?.toString('hex'), label)
    }
    const run = (id) => cols('SELECT status, name, deployment_id, spec_version, input_cbor, output_cbor, execution_context_cbor, error_cbor FROM workflow.workflow_runs WHERE id = $1', id)
    assert.deepEqual(await run(b), await run(a))
    const steps = (id) => cols('SELECT step_name, status, attempt, input_cbor, output_cbor, error_cbor, spec_version FROM workflow.workflow_steps WHERE run_id = $1 ORDER BY created_at, step_id', id)
    assert.deepEqual(await steps(b), await steps(a))
  })

  test('streams we write read the same through the official reader', async () => {
    const runId = newRunId()
    const name = binding.runStreamName(runId, undefined)
    const frames = [await frameValue('x', runId), await frameValue({ y: 2 }, runId)]
    await native.writeStreamChunks(name, runId, frames.map((f) => Buffer.from(f)))
    await native.closeStream(name, runId)
    const rs = await official.readFromStream(name, 0)
    const got = []
    for await (const c of rs) got.push(Buffer.from(c).toString('hex'))
    assert.deepEqual(got, frames.map((f) => Buffer.from(f).toString('hex')))
    assert.deepEqual(await official.getStreamInfo(name, runId), { tailIndex: 1, done: true })
  })

  test('start(): the run as the official World reads it and the official job payload', async () => {
    const wf = { workflowId: WORKFLOW_NAME }
    const run = await ours.start(wf, [7, 'eight'])
    const theirs = await official.runs.get(run.runId)
    assert.equal(theirs.status, 'pending')
    assert.equal(theirs.deploymentId, 'postgres')
    assert.deepEqual(await serialization.hydrateWorkflowArguments(theirs.input, run.runId, undefined, globalThis), [7, 'eight'])
    await waitFor(async () => (await jobsFor(run.runId)).length === 1)
    const [job] = await jobsFor(run.runId)
    assert.equal(job.task_identifier, 'workflow_flows')
    assert.equal(job.payload.id, WORKFLOW_NAME)
    assert.equal(job.message.runId, run.runId)
    assert.equal(job.message.runInput.workflowName, WORKFLOW_NAME)
  })

  test('a hook token held by one run is a hook_conflict for another, whoever writes', async () => {
    const a = await officialRun('running')
    const b = newRunId()
    await native.createEvent(b, JSON.stringify(toJson({ eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'postgres', workflowName: WORKFLOW_NAME, input: await encodeArgs([], b) } })))
    await official.events.create(a, { eventType: 'hook_created', specVersion: 3, correlationId: 'hook_c1', eventData: { token: 'tok-shared', isWebhook: false } })
    const r = JSON.parse(await native.createEvent(b, JSON.stringify({ eventType: 'hook_created', specVersion: 3, correlationId: 'hook_c2', eventData: { token: 'tok-shared', isWebhook: false } })))
    assert.equal(r.event.eventType, 'hook_conflict')
    assert.equal(r.event.eventData.conflictingRunId, a)
    const e = await native.createEvent(a, JSON.stringify({ eventType: 'hook_created', specVersion: 3, correlationId: 'hook_c1', eventData: { token: 'tok-shared', isWebhook: false } })).catch((x) => x)
    assert.equal(e.name, 'EntityConflictError')
  })
})

async function waitFor(check) {
  // bounded by count, not time: the enqueue is one async native call after the write
  for (let i = 0; i < 2000; i++) {
    if (await check()) return
    await new Promise((r) => setImmediate(r))
  }
  assert.fail('condition never became true')
}
