// End to end against the REAL runtime: a Workflow DevKit 4.8.9 app compiled by the
// official toolchain and served with the official flow/step/webhook endpoints on
// 127.0.0.1 (see __test__/e2e/). Runs are started and driven with workflow-native's
// start(), getRun(), wakeUp(), resumeHook(), resumeWebhook(); the official runtime
// executes them and the official World reads every event we wrote.
import { dataDir, ours, official, shape } from './helpers/harness.mjs'
import { serveApp } from './e2e/serve-app.mjs'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'

let app
before(async () => {
  app = await serveApp({ dataDir })
})
after(async () => {
  await app?.close()
})

/** Resolves when the run has an event of this type (watching the events directory). */
function eventOf(runId, type) {
  const dir = path.join(dataDir, 'events')
  fs.mkdirSync(dir, { recursive: true })
  const find = () => {
    for (const f of fs.readdirSync(dir)) {
      if (!f.startsWith(`${runId}-`) || !f.endsWith('.json')) continue
      try {
        const ev = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))
        if (ev.eventType === type) return ev
      } catch {}
    }
    return undefined
  }
  return new Promise((resolve) => {
    const hit = find()
    if (hit) return resolve(hit)
    const w = fs.watch(dir, () => {
      const ev = find()
      if (ev) {
        w.close()
        resolve(ev)
      }
    })
    const again = find() // a write between the first look and the watch
    if (again) {
      w.close()
      resolve(again)
    }
  })
}

async function allEvents(runId) {
  const out = []
  let cursor
  do {
    const page = await app.world.events.list({
      runId,
      pagination: { limit: 1000, sortOrder: 'asc', ...(cursor ? { cursor } : {}) },
    })
    out.push(...page.data)
    cursor = page.hasMore ? page.cursor : undefined
  } while (cursor)
  return out
}

test('a workflow with no steps: ours and the official start() yield the same returnValue', async () => {
  const a = await ours.start(app.workflows.simple, [2, 3])
  const b = await official.start(app.workflows.simple, [2, 3])
  assert.equal(await a.returnValue, 5)
  assert.equal(await b.returnValue, 5)
  assert.equal(await a.status, 'completed')
  assert.equal(await official.getRun(a.runId).status, 'completed')
  // the official runtime wrote the same event sequence for both runs
  const types = async (id) => (await allEvents(id)).map((e) => e.eventType)
  assert.deepEqual(await types(a.runId), await types(b.runId))
  assert.deepEqual(await types(a.runId), ['run_created', 'run_started', 'run_completed'])
})

test('full workflow: retry, fatal step, stream, sleep skipped by wakeUp, hook and webhook resumed', async () => {
  const hookToken = `e2e-hook-${process.pid}`
  const run = await ours.start(app.workflows.full, [{ hookToken }])
  const seen = new Set([await run.status]) // pending (or already running)

  // the runtime retries the flaky step, fails the fatal one, streams, then sleeps an hour
  await eventOf(run.runId, 'wait_created')
  seen.add(await run.status)
  const types = (await allEvents(run.runId)).map((e) => e.eventType)
  assert.ok(types.includes('step_retrying'), types.join())
  assert.ok(types.includes('step_failed'), types.join())

  // the stream written by a step, read live through our reader (written and closed)
  const values = []
  for await (const v of run.getReadable()) values.push(v)
  assert.deepEqual(
    values.map((v) => v.i),
    [0, 1, 2],
  )
  assert.ok(values[0].at instanceof Date)
  assert.equal(await run.getReadable().getTailIndex(), 2)

  // skip the 1-hour sleep
  assert.deepEqual(await run.wakeUp(), { stoppedCount: 1 })

  // the workflow announces its hook and webhook on the "control" namespace
  const [info] = await (async () => {
    const out = []
    for await (const v of run.getReadable({ namespace: 'control' })) out.push(v)
    return out
  })()
  assert.equal(info.hookToken, hookToken)

  const hook = await ours.getHookByToken(hookToken)
  assert.deepEqual(hook, await official.getHookByToken(hookToken))
  assert.equal(hook.runId, run.runId)

  await ours.resumeHook(hookToken, { message: 'hello hook' })
  const res = await ours.resumeWebhook(
    info.webhookToken,
    new Request(info.webhookUrl, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello webhook' }),
  )
  assert.equal(res.status, 202)

  const value = await run.returnValue
  seen.add(await run.status)
  assert.ok(seen.has('running') && seen.has('completed'), [...seen].join())
  assert.deepEqual(value.flaky, { label: 'first', attempt: 2 })
  assert.equal(value.fatalMessage, 'fatal on purpose')
  assert.deepEqual(value.hookPayload, { message: 'hello hook' })
  assert.deepEqual(value.webhook, { method: 'POST', body: 'hello webhook' })
  assert.ok(value.fixedDate instanceof Date)
  assert.equal(value.fixedDate.toISOString(), '2020-01-02T03:04:05.678Z')
  assert.ok(value.map instanceof Map)
  assert.deepEqual([...value.map], [['a', 1], ['b', { nested: true }]])
  // the official Run reads the same value
  assert.equal(shape(await official.getRun(run.runId).returnValue), shape(value))

  // every event we wrote is read by the official World as its own. (world-local writes
  // the run file before the event file, so returnValue can resolve first: wait for it.)
  await eventOf(run.runId, 'run_completed')
  const events = await allEvents(run.runId)
  const mine = events.filter((e) => ['run_created', 'wait_completed', 'hook_received'].includes(e.eventType))
  assert.equal(mine.filter((e) => e.eventType === 'run_created').length, 1)
  assert.equal(mine.filter((e) => e.eventType === 'wait_completed').length, 1)
  assert.equal(mine.filter((e) => e.eventType === 'hook_received').length, 2)
  const waitCreated = events.find((e) => e.eventType === 'wait_created')
  const waitCompleted = events.find((e) => e.eventType === 'wait_completed')
  assert.equal(+waitCompleted.eventData.resumeAt, +waitCreated.eventData.resumeAt)
  assert.equal(events.filter((e) => e.eventType === 'run_completed').length, 1)
})

test('cancel() of a sleeping run: the runtime never resumes it', async () => {
  const run = await ours.start(app.workflows.full, [{ hookToken: `e2e-cancel-${process.pid}` }])
  await eventOf(run.runId, 'wait_created')
  await run.cancel()
  await assert.rejects(run.returnValue, (e) => e.name === 'WorkflowRunCancelledError')
  await assert.rejects(official.getRun(run.runId).returnValue, (e) => e.name === 'WorkflowRunCancelledError')
  // a wake-up now finds the wait deleted: AggregateError, as the official reports it
  await assert.rejects(run.wakeUp(), (e) => e instanceof AggregateError)
})

test("resumeWebhook in 'manual' mode returns the Response the workflow wrote, as the official one does", async () => {
  const answer = async (api) => {
    const run = await ours.start(app.workflows.manualWebhook, [])
    const out = []
    for await (const v of run.getReadable({ namespace: 'control' })) out.push(v)
    const res = await api.resumeWebhook(
      out[0].webhookToken,
      new Request('http://app.test/hook', { method: 'POST', body: `ping ${api === ours ? 'ours' : 'official'}` }),
    )
    return { run, res }
  }
  const a = await answer(ours)
  assert.equal(a.res.status, 201)
  assert.equal(a.res.headers.get('x-handled-by'), 'workflow')
  assert.equal(await a.res.text(), 'handled: ping ours')
  assert.equal(await a.run.returnValue, 'ping ours')
  const b = await answer(official)
  assert.equal(b.res.status, a.res.status)
  assert.equal(b.res.statusText, a.res.statusText)
  assert.deepEqual([...b.res.headers], [...a.res.headers])
  assert.equal(await b.res.text(), 'handled: ping official')
  assert.equal(await b.run.returnValue, 'ping official')
  // the official World reads the same event sequence for both runs
  const types = async (id) => (await allEvents(id)).map((e) => e.eventType)
  assert.deepEqual(await types(a.run.runId), await types(b.run.runId))
})

test('manySteps: a 20-step workflow started by ours completes', async () => {
  const run = await ours.start(app.workflows.manySteps, [20])
  assert.equal(await run.returnValue, 20)
  assert.equal(await run.status, 'completed')
  const steps = (await allEvents(run.runId)).filter((e) => e.eventType === 'step_completed')
  assert.equal(steps.length, 20)
})
