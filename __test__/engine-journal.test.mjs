// The engine's journal (lib/engine/journal.js) on its own: writes queued in one turn go
// to the core as one ordered batch; a refusal stops the batch; a halt settles every write
// (none is left pending, so the engine's busy count returns to zero); the follower
// reports what other writers add and never the journal's own writes.
import { dataDir, world as officialWorld } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { binding } = require('../lib/native.js')
const { RunJournal, Halted } = require('../lib/engine/journal.js')

const world = new binding.NativeWorld(dataDir)

function fakeEngine() {
  return { busy: 0, clock: { poke() {} } }
}

function newRun() {
  const created = JSON.parse(
    world.createEventSync(
      null,
      JSON.stringify({
        eventType: 'run_created',
        specVersion: 3,
        eventData: { deploymentId: 'dpl_test', workflowName: 'journal-test', input: { __type: 'Uint8Array', data: '' } },
      }),
    ),
  )
  return created.event.runId
}

const stepCreated = (id) => ['step_created', id, { stepName: 's', input: { __type: 'Uint8Array', data: '' } }]

async function eventTypes(runId) {
  return JSON.parse(await world.readEvents(runId)).map((e) => `${e.eventType}${e.correlationId ? ` ${e.correlationId}` : ''}`)
}

test('writes queued in one turn are written in order; the answers carry what the engine needs', async () => {
  const engine = fakeEngine()
  const runId = newRun()
  const j = new RunJournal(engine, world, runId, (e) => assert.fail(`unexpected fault ${e}`))
  const started = j.write('run_started')
  const created = j.write(...stepCreated('step_A'))
  const stepStarted = j.write('step_started', 'step_A', { stepName: 's' })
  assert.equal(engine.busy, 3)
  const [r, c, s] = await Promise.all([started, created, stepStarted])
  assert.ok(r.run.startedAt)
  assert.equal(c.event.eventType, 'step_created')
  assert.equal(s.step.attempt, 1)
  assert.equal(s.step.status, 'running')
  assert.equal(engine.busy, 0)
  assert.deepEqual(await eventTypes(runId), ['run_created', 'run_started', 'step_created step_A', 'step_started step_A'])
  j.close()
})

test('a refusal stops the batch: the refused write rejects with the core error, later writes are still made', async () => {
  const engine = fakeEngine()
  const runId = newRun()
  const j = new RunJournal(engine, world, runId, () => {})
  const refused = j.write('step_started', 'step_missing', { stepName: 's' })
  const after = j.write(...stepCreated('step_B'))
  await assert.rejects(refused, (e) => e.name === 'WorkflowWorldError' && e.message === 'Step "step_missing" not found')
  const b = await after
  assert.equal(b.event.correlationId, 'step_B')
  assert.equal(engine.busy, 0)
  assert.deepEqual(await eventTypes(runId), ['run_created', 'step_created step_B'])
  j.close()
})

test('a refusal nobody awaits goes to the fault handler', async () => {
  const engine = fakeEngine()
  const runId = newRun()
  let fault
  const j = new RunJournal(engine, world, runId, (e) => (fault = e))
  await j.write('step_started', 'step_nope', { stepName: 's' }, true)
  assert.equal(fault.name, 'WorkflowWorldError')
  assert.equal(engine.busy, 0)
  j.close()
})

test('halted while a batch is in flight (the run was cancelled by another writer): every write settles', async () => {
  const engine = fakeEngine()
  const runId = newRun()
  await officialWorld.events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })
  const faults = []
  const j = new RunJournal(engine, world, runId, (e) => faults.push(e.name))
  const background = j.write(...stepCreated('step_1'), true)
  const awaited = j.write('step_started', 'step_1', { stepName: 's' })
  // the batch goes out on the next turn; halt right after it left
  await new Promise((resolve) => setImmediate(resolve))
  j.close()
  await assert.rejects(awaited, (e) => e instanceof Halted)
  assert.equal(await background, undefined)
  assert.deepEqual(faults, ['EntityConflictError'])
  assert.equal(engine.busy, 0)
  // and after the halt: background writes resolve, awaited ones halt, nothing pends
  assert.equal(await j.write(...stepCreated('step_2'), true), undefined)
  await assert.rejects(j.write('step_started', 'step_2', { stepName: 's' }), (e) => e instanceof Halted)
  assert.equal(engine.busy, 0)
})

test('the follower reports events other writers add, never the journal\'s own', async () => {
  const engine = fakeEngine()
  const runId = newRun()
  const j = new RunJournal(engine, world, runId, () => {})
  const known = JSON.parse(await world.readEvents(runId)).map((e) => e.eventId)
  const seen = []
  let arrived
  const foreignArrived = new Promise((resolve) => (arrived = resolve))
  j.follow(
    known,
    (events) => {
      seen.push(...events.map((e) => e.eventType))
      if (events.some((e) => e.eventType === 'wait_created')) arrived()
    },
    (e) => assert.fail(`follow error ${e}`),
  )
  await j.write('run_started')
  await j.write(...stepCreated('step_A'))
  await officialWorld.events.create(runId, {
    eventType: 'wait_created',
    correlationId: 'wait_X',
    specVersion: 3,
    eventData: { resumeAt: new Date(Date.now() + 3_600_000) },
  })
  await j.write('step_started', 'step_A', { stepName: 's' })
  // the change feed does not keep the process alive (by design): a handle does, meanwhile
  const keepAlive = setInterval(() => {}, 60_000)
  await foreignArrived
  clearInterval(keepAlive)
  // whatever else is visible now was reported already or is ours
  assert.deepEqual(await j.poll(), [])
  assert.deepEqual(seen, ['wait_created'])
  j.close()
})
