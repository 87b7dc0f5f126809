// End to end on PostgreSQL: the e2e app (built by the official 4.8.9 toolchain) runs on
// the official @workflow/world-postgres 4.3.7 (its graphile-worker runner POSTs to the
// app's routes); workflow-native's start(), getRun(), getReadable(), wakeUp(),
// resumeHook(), resumeWebhook() and cancel() drive it through the same database.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { testDatabase, upstreamBootstrap } from './helpers/pg.mjs'

const db = await testDatabase('e2e')
const skip = db.skip
const dataDir = mkdtempSync(path.join(tmpdir(), 'wfn-pg-e2e-'))
process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }))
delete process.env.WORKFLOW_QUEUE_NAMESPACE

// Every node-postgres client made in this process, to end the ones the official World
// leaves open (see after()).
// (world-postgres has a copy of pg of its own.)
const { createRequire } = await import('node:module')
const fromWorld = createRequire(createRequire(import.meta.url).resolve('@workflow/world-postgres'))
const openClients = new Set()
for (const pg of new Set([fromWorld('pg'), createRequire(import.meta.url)('pg')])) {
  const connect = pg.Client.prototype.connect
  pg.Client.prototype.connect = function (...args) {
    openClients.add(this)
    this.once('end', () => openClients.delete(this))
    return connect.apply(this, args)
  }
}

const ours = await import('../index.js')
let app

before(async () => {
  if (skip) return
  upstreamBootstrap(db.url)
  const { serveApp } = await import('./e2e/serve-app.mjs')
  app = await serveApp({ dataDir, postgresUrl: db.url })
})

after(async () => {
  if (skip) return
  await app?.close()
  // world-postgres's close() leaves its LISTEN client connected (seen in
  // pg_stat_activity), which keeps this process alive: end what is left.
  await Promise.allSettled([...openClients].map((c) => c.end()))
  await db.drop()
})

/** Polls the official World until the run has an event of `type` (bounded). */
async function eventOf(runId, type) {
  for (let i = 0; i < 3000; i++) {
    const { data } = await app.world.events.list({ runId, pagination: { limit: 1000 } })
    const hit = data.find((e) => e.eventType === type)
    if (hit) return hit
    await new Promise((r) => setTimeout(r, 20))
  }
  assert.fail(`no ${type} event for ${runId}`)
}

test('a simple run started by workflow-native, executed by the official app on PostgreSQL', { skip }, async () => {
  const run = await ours.start(app.workflows.simple, [20, 22])
  assert.equal(await run.returnValue, 42)
  assert.equal(await run.status, 'completed')
  assert.equal((await app.world.runs.get(run.runId)).status, 'completed')
})

test('full workflow on PostgreSQL: stream, wakeUp, hook and webhook through workflow-native', { skip }, async () => {
  const hookToken = `pg-e2e-hook-${process.pid}`
  const run = await ours.start(app.workflows.full, [{ hookToken }])
  await eventOf(run.runId, 'wait_created')
  const values = []
  for await (const v of run.getReadable()) values.push(v)
  assert.deepEqual(
    values.map((v) => v.i),
    [0, 1, 2],
  )
  assert.equal(await run.getReadable().getTailIndex(), 2)
  assert.deepEqual(await run.wakeUp(), { stoppedCount: 1 })
  const [info] = await (async () => {
    const out = []
    for await (const v of run.getReadable({ namespace: 'control' })) out.push(v)
    return out
  })()
  assert.equal(info.hookToken, hookToken)
  const hook = await ours.getHookByToken(hookToken)
  assert.equal(hook.runId, run.runId)
  await ours.resumeHook(hookToken, { message: 'hello hook' })
  const res = await ours.resumeWebhook(
    info.webhookToken,
    new Request(info.webhookUrl, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello webhook' }),
  )
  assert.equal(res.status, 202)
  const value = await run.returnValue
  assert.deepEqual(value.hookPayload, { message: 'hello hook' })
  assert.deepEqual(value.webhook, { method: 'POST', body: 'hello webhook' })
  assert.equal(value.fixedDate.toISOString(), '2020-01-02T03:04:05.678Z')
  const { data: events } = await app.world.events.list({ runId: run.runId, pagination: { limit: 1000 } })
  assert.equal(events.filter((e) => e.eventType === 'run_completed').length, 1)
  assert.equal(events.filter((e) => e.eventType === 'wait_completed').length, 1)
})

test('cancel() of a sleeping run on PostgreSQL', { skip }, async () => {
  const run = await ours.start(app.workflows.full, [{ hookToken: `pg-e2e-cancel-${process.pid}` }])
  await eventOf(run.runId, 'wait_created')
  await run.cancel()
  await assert.rejects(run.returnValue, (e) => e.name === 'WorkflowRunCancelledError')
  assert.equal((await app.world.runs.get(run.runId)).status, 'cancelled')
})
