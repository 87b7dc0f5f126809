// run.wakeUp(): ours on one run, the official on an identical twin run; then the
// resulting files, events and queue deliveries are compared structurally, and the
// official world reads what ours wrote.
import {
  createRun,
  createWait,
  createHook,
  describeError,
  eventFiles,
  exists,
  file,
  official,
  officialRuntime,
  ours,
  ourErrors,
  officialErrors,
  readJson,
  readText,
  settle,
  shape,
  startQueueServer,
  newRunId,
  world,
  WORKFLOW_NAME,
} from './helpers/harness.mjs'
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync, statSync } from 'node:fs'
import path from 'node:path'

// Runs whose first delivery is answered with {"timeoutSeconds":0} / HTTP 500.
const redeliverImmediately = new Set()
const failFirst = new Set()
let queue
before(async () => {
  queue = await startQueueServer((req) => {
    const runId = req.json && req.json.runId
    const attempt = req.headers['x-vqs-message-attempt']
    if (redeliverImmediately.has(runId) && attempt === '1') return { status: 200, body: '{"timeoutSeconds":0}' }
    if (failFirst.has(runId) && attempt === '1') return { status: 500, body: '"Error: handler failed"' }
    return { status: 200, body: '{"ok":true}' }
  })
  process.env.WORKFLOW_LOCAL_BASE_URL = queue.url
})
after(async () => {
  await officialRuntime.getWorld().close?.()
  await world.close?.()
  await queue.close()
})

const forRun = (runId) => (req) => req.json && req.json.runId === runId
const requestsFor = (runId) => queue.received.filter(forRun(runId))

const RESUME_1 = new Date('2031-01-02T03:04:05.678Z')
const RESUME_2 = new Date('2032-06-07T08:09:10.111Z')

/** Two identical runs, each with the same waits (same resumeAt values). */
async function twins({ status = 'running', waits = [RESUME_1, RESUME_2], workflowName } = {}) {
  const make = async () => {
    const runId = await createRun({ status, workflowName })
    const waitIds = []
    for (const at of waits) waitIds.push(await createWait(runId, at))
    return { runId, waitIds }
  }
  return { mine: await make(), theirs: await make() }
}

function assertQueueRequest(req, runId, workflowName = WORKFLOW_NAME) {
  assert.equal(req.method, 'POST')
  assert.equal(req.url, '/.well-known/workflow/v1/flow')
  assert.equal(req.headers['x-vqs-queue-name'], `__wkf_workflow_${workflowName}`)
  assert.match(req.headers['x-vqs-message-id'], /^msg_[0-9A-HJKMNP-TV-Z]{26}$/)
  assert.equal(req.headers['x-vqs-message-attempt'], '1')
  assert.match(req.headers['content-type'], /^application\/json/)
  assert.deepEqual(req.json, { runId })
  assert.equal(req.body, JSON.stringify({ runId }))
}

describe('wakeUp on a run with two pending sleeps', () => {
  let t
  let mineResult
  let theirsResult
  let runFileBefore
  before(async () => {
    t = await twins()
    runFileBefore = readText('runs', `${t.mine.runId}.json`)
    mineResult = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    theirsResult = await settle(() => official.getRun(t.theirs.runId).wakeUp())
  })

  test('both return {stoppedCount: 2}', () => {
    assert.equal(theirsResult.ok, true, String(theirsResult.error))
    assert.equal(mineResult.ok, true, `ours rejected: ${mineResult.error && mineResult.error.stack}`)
    assert.deepEqual(mineResult.value, { stoppedCount: 2 })
    assert.deepEqual(mineResult.value, theirsResult.value)
  })

  test('the run is re-enqueued exactly like the official does it', async () => {
    const [m, o] = await Promise.all([queue.waitFor(forRun(t.mine.runId)), queue.waitFor(forRun(t.theirs.runId))])
    assertQueueRequest(o, t.theirs.runId)
    assertQueueRequest(m, t.mine.runId)
    assert.equal(requestsFor(t.mine.runId).length, 1)
  })

  test('wait_completed events carry the original resumeAt and have the official shape', () => {
    const mineEvents = eventFiles(t.mine.runId).filter((e) => e.json.eventType === 'wait_completed')
    const theirEvents = eventFiles(t.theirs.runId).filter((e) => e.json.eventType === 'wait_completed')
    assert.equal(mineEvents.length, 2)
    assert.deepEqual(
      mineEvents.map((e) => e.json.correlationId).sort(),
      [...t.mine.waitIds].sort(),
    )
    const created = Object.fromEntries(
      eventFiles(t.mine.runId)
        .filter((e) => e.json.eventType === 'wait_created')
        .map((e) => [e.json.correlationId, e.json.eventData.resumeAt]),
    )
    for (const e of mineEvents) {
      assert.equal(e.json.eventData.resumeAt, created[e.json.correlationId])
      assert.equal(e.json.specVersion, 3)
      assert.equal(e.json.runId, t.mine.runId)
      assert.match(e.json.eventId, /^evnt_[0-9A-HJKMNP-TV-Z]{26}$/)
      assert.equal(e.name, `${t.mine.runId}-${e.json.eventId}.json`)
    }
    assert.deepEqual(
      mineEvents.map((e) => e.json.eventData.resumeAt).sort(),
      [RESUME_1.toISOString(), RESUME_2.toISOString()],
    )
    // same keys, same key order, same values apart from ids/timestamps
    for (let i = 0; i < 2; i++) {
      assert.equal(
        shape(mineEvents[i].json, { [t.mine.runId]: '<RUN>' }),
        shape(theirEvents[i].json, { [t.theirs.runId]: '<RUN>' }),
      )
    }
    // formatted like world-local (2-space JSON, no trailing newline)
    assert.equal(mineEvents[0].text, JSON.stringify(mineEvents[0].json, null, 2))
  })

  test('wait entities are completed with the official shape, and locks exist', () => {
    for (let i = 0; i < 2; i++) {
      const mw = readJson('waits', `${t.mine.runId}-${t.mine.waitIds[i]}.json`)
      const tw = readJson('waits', `${t.theirs.runId}-${t.theirs.waitIds[i]}.json`)
      assert.equal(mw.status, 'completed')
      assert.equal(mw.resumeAt, [RESUME_1, RESUME_2][i].toISOString())
      assert.ok(mw.completedAt)
      assert.equal(shape(mw, { [t.mine.runId]: '<RUN>' }), shape(tw, { [t.theirs.runId]: '<RUN>' }))
      // world-local stamps the wait_completed event and the wait transition with one `now`
      const eventOf = (runId, waitId) =>
        eventFiles(runId).find((e) => e.json.eventType === 'wait_completed' && e.json.correlationId === waitId).json
      assert.equal(tw.completedAt, eventOf(t.theirs.runId, t.theirs.waitIds[i]).createdAt)
      assert.equal(
        mw.completedAt,
        eventOf(t.mine.runId, t.mine.waitIds[i]).createdAt,
        'wait.completedAt differs from wait_completed.createdAt (the official uses the same instant)',
      )
      const lock = file('.locks', 'waits', `${t.mine.runId}-${t.mine.waitIds[i]}.completed`)
      assert.equal(statSync(lock).size, 0)
    }
  })

  test('the run entity itself is not modified by wakeUp', () => {
    assert.equal(readText('runs', `${t.mine.runId}.json`), runFileBefore)
  })

  test('the official world reads our events and entities', async () => {
    const list = await world.events.list({ runId: t.mine.runId, pagination: { limit: 100 } })
    const completed = list.data.filter((e) => e.eventType === 'wait_completed')
    assert.equal(completed.length, 2)
    const createdAt = new Map(
      list.data.filter((e) => e.eventType === 'wait_created').map((e) => [e.correlationId, e.eventData.resumeAt]),
    )
    for (const e of completed) {
      assert.ok(e.eventData.resumeAt instanceof Date)
      assert.equal(e.eventData.resumeAt.getTime(), createdAt.get(e.correlationId).getTime())
      assert.ok(e.createdAt instanceof Date)
    }
    // events come back in the order they were created
    assert.deepEqual(
      list.data.map((e) => e.eventType),
      ['run_created', 'run_started', 'wait_created', 'wait_created', 'wait_completed', 'wait_completed'],
    )
    const run = await world.runs.get(t.mine.runId)
    assert.equal(run.status, 'running')
    // the official wakeUp now sees nothing pending on the run ours woke up
    assert.deepEqual(await official.getRun(t.mine.runId).wakeUp(), { stoppedCount: 0 })
  })

  test('a second wakeUp stops nothing and enqueues nothing', async () => {
    assert.deepEqual(await ours.getRun(t.mine.runId).wakeUp(), { stoppedCount: 0 })
    assert.deepEqual(await official.getRun(t.theirs.runId).wakeUp(), { stoppedCount: 0 })
    assert.equal(eventFiles(t.mine.runId).filter((e) => e.json.eventType === 'wait_completed').length, 2)
    // a later delivery for another run arrives; still exactly one request for ours
    const probe = await createRun({ status: 'running' })
    await createWait(probe)
    await ours.getRun(probe).wakeUp()
    await queue.waitFor(forRun(probe))
    assert.equal(requestsFor(t.mine.runId).length, 1)
  })
})

describe('queue delivery semantics', () => {
  const attempt = (runId, n) => (req) => forRun(runId)(req) && req.headers['x-vqs-message-attempt'] === String(n)

  test('a {timeoutSeconds: 0} answer redelivers the same message with attempt 2, like the official', { timeout: 20_000 }, async () => {
    const t = await twins({ waits: [RESUME_1] })
    redeliverImmediately.add(t.mine.runId)
    redeliverImmediately.add(t.theirs.runId)
    await ours.getRun(t.mine.runId).wakeUp()
    await official.getRun(t.theirs.runId).wakeUp()
    const [m1, m2, o1, o2] = await Promise.all([
      queue.waitFor(attempt(t.mine.runId, 1)),
      queue.waitFor(attempt(t.mine.runId, 2)),
      queue.waitFor(attempt(t.theirs.runId, 1)),
      queue.waitFor(attempt(t.theirs.runId, 2)),
    ])
    assert.equal(o2.headers['x-vqs-message-id'], o1.headers['x-vqs-message-id'])
    assert.equal(m2.headers['x-vqs-message-id'], m1.headers['x-vqs-message-id'], 'redelivery used a new message id')
    assert.equal(m2.body, m1.body)
    assertQueueRequest(m1, t.mine.runId)
  })

  test('an HTTP 500 answer is retried (attempt 2), like the official', { timeout: 20_000 }, async () => {
    const t = await twins({ waits: [RESUME_1] })
    failFirst.add(t.mine.runId)
    failFirst.add(t.theirs.runId)
    await ours.getRun(t.mine.runId).wakeUp()
    await official.getRun(t.theirs.runId).wakeUp()
    const [m1, m2, o1, o2] = await Promise.all([
      queue.waitFor(attempt(t.mine.runId, 1)),
      queue.waitFor(attempt(t.mine.runId, 2)),
      queue.waitFor(attempt(t.theirs.runId, 1)),
      queue.waitFor(attempt(t.theirs.runId, 2)),
    ])
    assert.equal(o2.headers['x-vqs-message-id'], o1.headers['x-vqs-message-id'])
    assert.equal(m2.headers['x-vqs-message-id'], m1.headers['x-vqs-message-id'])
  })
})

describe('wakeUp options and edge cases', () => {
  test('correlationIds selects waits; unknown ids are ignored', async () => {
    const t = await twins({ waits: [RESUME_1, RESUME_2, RESUME_1] })
    const pick = (x) => ({ correlationIds: [x.waitIds[1], 'wait_01ARZ3NDEKTSV4RRFFQ69G5FAV'] })
    assert.deepEqual(await ours.getRun(t.mine.runId).wakeUp(pick(t.mine)), { stoppedCount: 1 })
    assert.deepEqual(await official.getRun(t.theirs.runId).wakeUp(pick(t.theirs)), { stoppedCount: 1 })
    const done = eventFiles(t.mine.runId).filter((e) => e.json.eventType === 'wait_completed')
    assert.deepEqual(
      done.map((e) => e.json.correlationId),
      [t.mine.waitIds[1]],
    )
    assert.equal(readJson('waits', `${t.mine.runId}-${t.mine.waitIds[0]}.json`).status, 'waiting')
    await queue.waitFor(forRun(t.mine.runId))
    // an empty list means "all pending"
    assert.deepEqual(await ours.getRun(t.mine.runId).wakeUp({ correlationIds: [] }), { stoppedCount: 2 })
    assert.deepEqual(await official.getRun(t.theirs.runId).wakeUp({ correlationIds: [] }), { stoppedCount: 2 })
  })

  test('only unknown correlationIds: {stoppedCount: 0}', async () => {
    const t = await twins({ waits: [RESUME_1] })
    const opts = { correlationIds: ['wait_01ARZ3NDEKTSV4RRFFQ69G5FAV'] }
    assert.deepEqual(await ours.getRun(t.mine.runId).wakeUp(opts), { stoppedCount: 0 })
    assert.deepEqual(await official.getRun(t.theirs.runId).wakeUp(opts), { stoppedCount: 0 })
    assert.equal(readJson('waits', `${t.mine.runId}-${t.mine.waitIds[0]}.json`).status, 'waiting')
  })

  test('a run without waits: {stoppedCount: 0}', async () => {
    const id = await createRun({ status: 'running' })
    assert.deepEqual(await ours.getRun(id).wakeUp(), { stoppedCount: 0 })
    assert.deepEqual(await official.getRun(id).wakeUp(), { stoppedCount: 0 })
  })

  test('a pending (never started) run with a wait is woken like the official', async () => {
    const t = await twins({ status: 'pending', waits: [RESUME_2] })
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    assert.deepEqual(m.ok ? m.value : describeError(m.error), o.ok ? o.value : describeError(o.error))
  })

  test('a wait whose completion lock already exists (crashed completer) counts as stopped', async () => {
    const t = await twins({ waits: [RESUME_1, RESUME_2] })
    for (const x of [t.mine, t.theirs]) {
      const dir = file('.locks', 'waits')
      mkdirSync(dir, { recursive: true })
      writeFileSync(path.join(dir, `${x.runId}-${x.waitIds[0]}.completed`), '')
    }
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    assert.deepEqual(o.value, { stoppedCount: 2 })
    assert.equal(m.ok, true, `ours rejected: ${m.error}`)
    assert.deepEqual(m.value, o.value)
    // only the second wait got an event (the first was "already completed")
    const count = (id) => eventFiles(id).filter((e) => e.json.eventType === 'wait_completed').length
    assert.equal(count(t.mine.runId), count(t.theirs.runId))
    assert.equal(count(t.mine.runId), 1)
    await queue.waitFor(forRun(t.mine.runId))
  })

  test('a cancelled run with waits: AggregateError like the official (waits were deleted)', async () => {
    const t = await twins({ waits: [RESUME_1, RESUME_2] })
    for (const x of [t.mine, t.theirs]) await world.events.create(x.runId, { eventType: 'run_cancelled', specVersion: 3 })
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    assert.equal(o.ok, false)
    assert.ok(o.error instanceof AggregateError)
    assert.equal(m.ok, false, `ours resolved with ${JSON.stringify(m.value)}`)
    assert.ok(m.error instanceof AggregateError, `ours threw ${m.error.name}: ${m.error.message}`)
    assert.equal(m.error.message, o.error.message.replace(t.theirs.runId, t.mine.runId))
    assert.equal(m.error.errors.length, o.error.errors.length)
    for (let i = 0; i < m.error.errors.length; i++) {
      assert.equal(m.error.errors[i].name, o.error.errors[i].name)
      assert.equal(
        m.error.errors[i].message.replace(t.mine.waitIds[i], '<w>'),
        o.error.errors[i].message.replace(t.theirs.waitIds[i], '<w>'),
      )
    }
    // the lock files claimed for the missing waits are removed again
    for (const x of [t.mine, t.theirs]) {
      for (const w of x.waitIds) assert.equal(exists('.locks', 'waits', `${x.runId}-${w}.completed`), false)
    }
    const count = (id) => eventFiles(id).filter((e) => e.json.eventType === 'wait_completed').length
    assert.equal(count(t.mine.runId), 0)
  })

  test('unknown run: plain Error "Failed to wake up run …" with WorkflowRunNotFoundError cause, like the official', async () => {
    const id = newRunId()
    const m = await settle(() => ours.getRun(id).wakeUp())
    const o = await settle(() => official.getRun(id).wakeUp())
    assert.equal(o.ok, false)
    assert.equal(m.ok, false)
    assert.equal(m.error.name, 'Error')
    assert.equal(Object.getPrototypeOf(m.error), Error.prototype)
    assert.equal(m.error.message, `Failed to wake up run ${id}: Workflow run "${id}" not found`)
    assert.equal(m.error.message, o.error.message)
    assert.deepEqual(describeError(m.error.cause), describeError(o.error.cause))
    assert.ok(m.error.cause instanceof ourErrors.WorkflowRunNotFoundError)
    assert.ok(officialErrors.WorkflowRunNotFoundError.is(m.error.cause))
  })

  test('unsafe run id: wrapped error like the official', async () => {
    for (const id of ['../x', 'a.b', '']) {
      const m = await settle(() => ours.getRun(id).wakeUp())
      const o = await settle(() => official.getRun(id).wakeUp())
      assert.equal(m.ok, false)
      assert.deepEqual(
        { message: m.error.message, cause: describeError(m.error.cause) },
        { message: o.error.message, cause: describeError(o.error.cause) },
      )
    }
  })

  test('a run whose workflow name is not a valid queue name fails after completing the waits, like the official', async () => {
    const t = await twins({ waits: [RESUME_1], workflowName: 'workflow//./wf.js//bad name!' })
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    assert.equal(o.ok, false)
    assert.equal(m.ok, false, `ours resolved with ${JSON.stringify(m.value)}`)
    assert.equal(m.error.message, o.error.message.replace(t.theirs.runId, t.mine.runId))
    const count = (id) => eventFiles(id).filter((e) => e.json.eventType === 'wait_completed').length
    assert.equal(count(t.mine.runId), count(t.theirs.runId))
  })

  test('WORKFLOW_QUEUE_NAMESPACE selects the namespaced queue like the official', async () => {
    const t = await twins({ waits: [RESUME_1] })
    process.env.WORKFLOW_QUEUE_NAMESPACE = 'tenant1'
    try {
      assert.deepEqual(await ours.getRun(t.mine.runId).wakeUp(), { stoppedCount: 1 })
      assert.deepEqual(await official.getRun(t.theirs.runId).wakeUp(), { stoppedCount: 1 })
    } finally {
      delete process.env.WORKFLOW_QUEUE_NAMESPACE
    }
    const [m, o] = await Promise.all([queue.waitFor(forRun(t.mine.runId)), queue.waitFor(forRun(t.theirs.runId))])
    assert.equal(o.headers['x-vqs-queue-name'], `__tenant1_wkf_workflow_${WORKFLOW_NAME}`)
    assert.equal(m.headers['x-vqs-queue-name'], o.headers['x-vqs-queue-name'])
  })

  test('a legacy (spec 1) run: events only, compat payload, like the official', async () => {
    const t = await twins({ waits: [RESUME_1, RESUME_2] })
    for (const x of [t.mine, t.theirs]) {
      const run = readJson('runs', `${x.runId}.json`)
      delete run.specVersion
      writeFileSync(file('runs', `${x.runId}.json`), JSON.stringify(run, null, 2))
    }
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    assert.deepEqual(o, { ok: true, value: { stoppedCount: 2 } })
    assert.deepEqual(m, o, `ours: ${m.ok ? JSON.stringify(m.value) : m.error.message}`)
    const shapes = (id) =>
      eventFiles(id)
        .filter((e) => e.json.eventType === 'wait_completed')
        .map((e) => shape(e.json, { [id]: '<RUN>' }))
    assert.deepEqual(shapes(t.mine.runId), shapes(t.theirs.runId))
    for (let i = 0; i < 2; i++) {
      const mw = readJson('waits', `${t.mine.runId}-${t.mine.waitIds[i]}.json`)
      const tw = readJson('waits', `${t.theirs.runId}-${t.theirs.waitIds[i]}.json`)
      assert.equal(mw.status, tw.status)
      assert.equal(
        exists('.locks', 'waits', `${t.mine.runId}-${t.mine.waitIds[i]}.completed`),
        exists('.locks', 'waits', `${t.theirs.runId}-${t.theirs.waitIds[i]}.completed`),
      )
    }
    await Promise.all([queue.waitFor(forRun(t.mine.runId)), queue.waitFor(forRun(t.theirs.runId))])
  })

  test('a run from a newer spec version (4): same outcome as the official', async () => {
    const t = await twins({ waits: [RESUME_1] })
    for (const x of [t.mine, t.theirs]) {
      const run = readJson('runs', `${x.runId}.json`)
      run.specVersion = 4
      writeFileSync(file('runs', `${x.runId}.json`), JSON.stringify(run, null, 2))
    }
    const m = await settle(() => ours.getRun(t.mine.runId).wakeUp())
    const o = await settle(() => official.getRun(t.theirs.runId).wakeUp())
    const outcome = (r, id) =>
      r.ok
        ? r.value
        : {
            name: r.error.name,
            message: r.error.message.split(id).join('<RUN>'),
            errors: (r.error.errors || []).map((e) => `${e.name}: ${e.message}`),
          }
    assert.deepEqual(outcome(m, t.mine.runId), outcome(o, t.theirs.runId))
  })

  test('hooks are not touched by wakeUp', async () => {
    const id = await createRun({ status: 'running' })
    const hookId = await createHook(id, { token: `tok-wake-${id}` })
    await createWait(id)
    assert.deepEqual(await ours.getRun(id).wakeUp(), { stoppedCount: 1 })
    assert.ok(exists('hooks', `${hookId}.json`))
    await queue.waitFor(forRun(id))
  })
})
