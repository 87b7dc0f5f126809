// Crash recovery of the embedded engine, one crash window at a time. world-local writes an
// event's lock file, then its entity (step, wait, run), then the event: a process killed in
// between leaves files that disagree. Each test builds such a state exactly (the events
// written through the core's events.create, then the one event the crash lost removed, or
// the lock a crash left added), calls resumeRuns(), and checks that the run finishes with
// the right value, that no step whose outcome was on disk runs again, and that the files
// agree afterwards. Then the states recovery cannot continue from (a corrupt step_completed
// event, a write the world keeps refusing): reported loudly, run left as it was.
import { dataDir, official, ours, world } from './helpers/harness.mjs'
import { test as nodeTest } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import wf from '../workflow.js'
import { stringify } from '../lib/vendor/devalue.cjs'
import { binding } from '../lib/native.js'
import { getEngine } from '../lib/engine/engine.js'

const { workflow, step, sleep, createHook, getStepMetadata, getWorkflowMetadata, FatalError } = wf
const native = new binding.NativeWorld(dataDir)

const bytes = (v) => ({ __type: 'Uint8Array', data: Buffer.from(`devl${stringify(v)}`).toString('base64') })
const create = (runId, req) => JSON.parse(native.createEventSync(runId, JSON.stringify({ specVersion: 3, ...req })))
const eventFile = (runId, eventId) => path.join(dataDir, 'events', `${runId}-${eventId}.json`)
/** Removes an event file: the state a kill right before that event leaves. */
const lose = (res) => fs.unlinkSync(eventFile(res.event.runId, res.event.eventId))
const readJson = (...p) => JSON.parse(fs.readFileSync(path.join(dataDir, ...p), 'utf8'))
let ids = 0
/** Every test is bounded: a run that stalls fails it instead of hanging the suite. */
const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn)
const corrId = (prefix) => `${prefix}_01M8TSB9JAT4N19QBB9SP${String(++ids).padStart(5, '0')}`

async function events(runId) {
  const page = await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc' } })
  return page.data
}
const types = async (runId) => (await events(runId)).map((e) => e.eventType)

/** A running run of `w` (run_created, run_started) as the engine writes it. */
function newRun(w, args) {
  const runId = create(null, {
    eventType: 'run_created',
    eventData: { deploymentId: 'dpl_test', workflowName: w.workflowId, input: bytes(args) },
  }).event.runId
  create(runId, { eventType: 'run_started' })
  return runId
}

/** step_created + step_started of a step called with `args`; returns its correlation id. */
function startStep(runId, s, args) {
  const corr = corrId('step')
  create(runId, {
    eventType: 'step_created',
    correlationId: corr,
    eventData: { stepName: s.stepId, workflowName: 'x', input: bytes({ args }) },
  })
  create(runId, { eventType: 'step_started', correlationId: corr, eventData: { stepName: s.stepId } })
  return corr
}

/** Resumes, and checks the run resumed here with no failure reported. */
async function resume(runId) {
  const resumed = await wf.resumeRuns()
  assert.ok(resumed.includes(runId), `resumed ${resumed}`)
  assert.deepEqual(
    resumed.failures.filter((f) => f.runId === runId),
    [],
  )
  return resumed
}

/** Captures console.error / console.warn lines while `fn` runs (`onError(line)` sees each). */
async function capture(fn, onError = () => {}) {
  const lines = { error: [], warn: [] }
  const saved = { error: console.error, warn: console.warn }
  const text = (a) => a.map((x) => (x instanceof Error ? `${x.name}: ${x.message}` : String(x))).join(' ')
  console.error = (...a) => {
    lines.error.push(text(a))
    onError(text(a))
  }
  console.warn = (...a) => lines.warn.push(text(a))
  try {
    return { value: await fn(), lines }
  } finally {
    console.error = saved.error
    console.warn = saved.warn
  }
}

/** Each step's attempt matches its step_started events; every created step finished. */
async function assertFilesAgree(runId) {
  const evs = await events(runId)
  const steps = (await world.steps.list({ runId, pagination: { sortOrder: 'asc' } })).data
  for (const s of steps) {
    const mine = evs.filter((e) => e.correlationId === s.stepId)
    assert.equal(mine.filter((e) => e.eventType === 'step_started').length, s.attempt, `${s.stepId} attempts`)
    const closing = mine.filter((e) => e.eventType === 'step_completed' || e.eventType === 'step_failed')
    assert.equal(closing.length, 1, `${s.stepId} closed once`)
    assert.equal(s.status, closing[0].eventType === 'step_completed' ? 'completed' : 'failed')
  }
  assert.equal(evs.at(-1).eventType, 'run_completed')
}

// ------------------------------------------------------------------ steps

test('step file says completed, no step_completed event: the event is written from the step file, the step does not run again', async () => {
  let ranA = 0
  let ranB = 0
  const a = step('rec-a', async (x) => {
    ranA++
    return x * 2
  })
  const b = step('rec-b', async (x) => {
    ranB++
    return x + 1
  })
  const w = workflow('rec-completed', async (x) => b(await a(x)))
  const runId = newRun(w, [21])
  const corr = startStep(runId, a, [21])
  // the kill: after the lock and the step file, before the event
  const done = create(runId, { eventType: 'step_completed', correlationId: corr, eventData: { stepName: a.stepId, result: bytes(42) } })
  lose(done)
  const stepFile = readJson('steps', `${runId}-${corr}.json`)
  assert.equal(stepFile.status, 'completed')
  assert.ok(!(await types(runId)).includes('step_completed'))

  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 43)
  assert.equal(await official.getRun(runId).returnValue, 43)
  assert.equal(ranA, 0, 'the completed step did not run again')
  assert.equal(ranB, 1)
  const evs = await events(runId)
  assert.deepEqual(
    evs.map((e) => e.eventType),
    ['run_created', 'run_started', 'step_created', 'step_started', 'step_completed', 'step_created', 'step_started', 'step_completed', 'run_completed'],
  )
  // where the lost event would have been: at the step's completion instant
  const repaired = evs[4]
  assert.equal(repaired.correlationId, corr)
  assert.equal(new Date(repaired.createdAt).toISOString(), stepFile.completedAt)
  await assertFilesAgree(runId)
})

test('step file says failed, no step_failed event: the workflow gets the recorded failure, the step does not run again', async () => {
  let ran = 0
  const boom = step('rec-boom', async () => {
    ran++
    throw new FatalError('boom')
  })
  const w = workflow('rec-failed', async () => {
    try {
      await boom()
      return 'no'
    } catch (e) {
      return `caught ${e.message}`
    }
  })
  const runId = newRun(w, [])
  const corr = startStep(runId, boom, [])
  lose(create(runId, { eventType: 'step_failed', correlationId: corr, eventData: { stepName: boom.stepId, error: 'boom', stack: 'Error: boom' } }))
  assert.equal(readJson('steps', `${runId}-${corr}.json`).status, 'failed')
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 'caught boom')
  assert.equal(ran, 0)
  const failed = (await events(runId)).find((e) => e.eventType === 'step_failed')
  assert.equal(failed.eventData.error, 'boom')
  await assertFilesAgree(runId)
})

test('step file says running, no step_started event: the attempt is recorded, the step runs once more', async () => {
  let ran = 0
  const s = step('rec-started', async () => ++ran)
  const w = workflow('rec-started-wf', async () => s())
  const runId = newRun(w, [])
  const corr = corrId('step')
  create(runId, { eventType: 'step_created', correlationId: corr, eventData: { stepName: s.stepId, input: bytes({ args: [] }) } })
  lose(create(runId, { eventType: 'step_started', correlationId: corr, eventData: { stepName: s.stepId } }))
  assert.deepEqual([readJson('steps', `${runId}-${corr}.json`).status, readJson('steps', `${runId}-${corr}.json`).attempt], ['running', 1])
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 1)
  assert.equal(ran, 1)
  const step1 = (await world.steps.list({ runId })).data[0]
  assert.equal(step1.attempt, 2, 'the interrupted attempt counts, as in the official runtime')
  await assertFilesAgree(runId)
})

test('a terminal lock left without its step file (killed between the two): the lock is removed, the step runs and completes', async () => {
  let ran = 0
  const s = step('rec-lock', async () => ++ran * 10)
  const w = workflow('rec-lock-wf', async () => s())
  const runId = newRun(w, [])
  const corr = startStep(runId, s, [])
  const lock = path.join(dataDir, '.locks', 'steps', `${runId}-${corr}.terminal`)
  fs.mkdirSync(path.dirname(lock), { recursive: true })
  fs.writeFileSync(lock, '')
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 10)
  assert.equal(ran, 1)
  await assertFilesAgree(runId)
})

test('step file says pending after a failed attempt, no step_retrying event: the retry is recorded, the step runs again', async () => {
  let ran = 0
  const s = step('rec-retry', async () => ++ran)
  const w = workflow('rec-retry-wf', async () => s())
  const runId = newRun(w, [])
  const corr = startStep(runId, s, [])
  lose(create(runId, { eventType: 'step_retrying', correlationId: corr, eventData: { stepName: s.stepId, error: 'flaky' } }))
  assert.equal(readJson('steps', `${runId}-${corr}.json`).status, 'pending')
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 1)
  const t = (await events(runId)).filter((e) => e.correlationId === corr).map((e) => e.eventType)
  assert.deepEqual(t, ['step_created', 'step_started', 'step_retrying', 'step_started', 'step_completed'])
  await assertFilesAgree(runId)
})

// ------------------------------------------------------------------ waits, hooks, the run

test('wait file says completed, no wait_completed event: the event is written, the sleep is not waited again', async () => {
  let after = 0
  const s = step('rec-after-sleep', async () => ++after)
  const w = workflow('rec-wait', async () => {
    await sleep('1h')
    return s()
  })
  const runId = newRun(w, [])
  const corr = corrId('wait')
  create(runId, { eventType: 'wait_created', correlationId: corr, eventData: { resumeAt: new Date(Date.now() + 3600_000).toISOString() } })
  lose(create(runId, { eventType: 'wait_completed', correlationId: corr }))
  assert.equal(readJson('waits', `${runId}-${corr}.json`).status, 'completed')
  await resume(runId)
  // an hour-long sleep: resolving at all shows it was not waited again
  assert.equal(await ours.getRun(runId).returnValue, 1)
  assert.equal((await types(runId)).filter((t) => t === 'wait_completed').length, 1)
})

test('a wait completion lock left without the wait change: removed; the sleep completes with its event', async () => {
  const w = workflow('rec-wait-lock', async () => {
    await sleep(1)
    return 'woke'
  })
  const runId = newRun(w, [])
  const corr = corrId('wait')
  create(runId, { eventType: 'wait_created', correlationId: corr, eventData: { resumeAt: new Date(Date.now() - 1000).toISOString() } })
  const lock = path.join(dataDir, '.locks', 'waits', `${runId}-${corr}.completed`)
  fs.mkdirSync(path.dirname(lock), { recursive: true })
  fs.writeFileSync(lock, '')
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 'woke')
  const t = await types(runId)
  assert.equal(t.filter((x) => x === 'wait_completed').length, 1)
})

test('hook_created event without its hook file (the hook file comes after the event): restored, resumeHook() reaches the run', async () => {
  const token = `rec-hook-${process.pid}`
  const w = workflow('rec-hook', async () => {
    const h = createHook({ token })
    return await h
  })
  const runId = newRun(w, [])
  const corr = corrId('hook')
  create(runId, { eventType: 'hook_created', correlationId: corr, eventData: { token, isWebhook: false } })
  fs.unlinkSync(path.join(dataDir, 'hooks', `${corr}.json`))
  await resume(runId)
  assert.ok(fs.existsSync(path.join(dataDir, 'hooks', `${corr}.json`)))
  await ours.resumeHook(token, { got: 1 })
  assert.deepEqual(await ours.getRun(runId).returnValue, { got: 1 })
})

test('hook disposed (lock written, hook removed) without its hook_disposed event: the event is written, once', async () => {
  const token = `rec-disposed-${process.pid}`
  const w = workflow('rec-disposed', async () => {
    const h = createHook({ token })
    h.dispose()
    return 'disposed'
  })
  const runId = newRun(w, [])
  const corr = corrId('hook')
  create(runId, { eventType: 'hook_created', correlationId: corr, eventData: { token, isWebhook: false } })
  lose(create(runId, { eventType: 'hook_disposed', correlationId: corr, eventData: { token } }))
  assert.ok(!fs.existsSync(path.join(dataDir, 'hooks', `${corr}.json`)))
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 'disposed')
  assert.equal((await types(runId)).filter((t) => t === 'hook_disposed').length, 1)
})

test('run file says running, no run_started event: the event is written at the run start instant', async () => {
  const w = workflow('rec-run-started', async (x) => x + 1)
  const runId = create(null, {
    eventType: 'run_created',
    eventData: { deploymentId: 'dpl_test', workflowName: w.workflowId, input: bytes([1]) },
  }).event.runId
  lose(create(runId, { eventType: 'run_started' }))
  const started = readJson('runs', `${runId}.json`).startedAt
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 2)
  const evs = await events(runId)
  assert.deepEqual(evs.map((e) => e.eventType), ['run_created', 'run_started', 'run_completed'])
  assert.equal(new Date(evs[1].createdAt).toISOString(), started)
})

test('run file without its run_created event (start() killed between them): the event is written from the run file and the run runs', async () => {
  const w = workflow('rec-run-created', async (x) => x * 3)
  const res = create(null, {
    eventType: 'run_created',
    eventData: { deploymentId: 'dpl_test', workflowName: w.workflowId, input: bytes([5]) },
  })
  const runId = res.event.runId
  lose(res)
  await resume(runId)
  assert.equal(await ours.getRun(runId).returnValue, 15)
  const evs = await events(runId)
  assert.deepEqual(evs.map((e) => e.eventType), ['run_created', 'run_started', 'run_completed'])
  assert.equal(evs[0].eventData.workflowName, w.workflowId)
  assert.equal((await types(runId)).filter((t) => t === 'run_failed').length, 0)
})

test('run file says completed, no run_completed event, lease of a dead process left: resumeRuns() writes the event and removes the run\'s hooks', async () => {
  const token = `rec-finished-${process.pid}`
  const w = workflow('rec-finished', async () => 'done')
  const runId = newRun(w, [])
  const corr = corrId('hook')
  create(runId, { eventType: 'hook_created', correlationId: corr, eventData: { token, isWebhook: false } })
  // the kill: after the run file, before its hooks went and before the event
  const hookFile = path.join(dataDir, 'hooks', `${corr}.json`)
  const claims = fs
    .readdirSync(path.join(dataDir, 'hooks', 'tokens'))
    .map((c) => path.join(dataDir, 'hooks', 'tokens', c))
    .filter((f) => fs.readFileSync(f, 'utf8').includes(runId))
  assert.equal(claims.length, 1)
  const saved = [hookFile, ...claims].map((f) => [f, fs.readFileSync(f)])
  lose(create(runId, { eventType: 'run_completed', eventData: { output: bytes('done') } }))
  for (const [f, b] of saved) fs.writeFileSync(f, b)
  // the dead process's lease (its owner record names a pid that does not exist)
  const base = path.join(dataDir, '.workflow-native')
  fs.mkdirSync(path.join(base, 'owners'), { recursive: true })
  fs.mkdirSync(path.join(base, 'leases'), { recursive: true })
  const owner = path.join(base, 'owners', 'dead-owner.json')
  fs.writeFileSync(owner, JSON.stringify({ owner: 'dead-owner', pid: 2 ** 22 + 17, host: os.hostname(), createdAt: Date.now() }))
  fs.linkSync(owner, path.join(base, 'leases', `${runId}.json`))
  assert.equal(await official.getRun(runId).status, 'completed')

  const resumed = await wf.resumeRuns()
  assert.ok(!resumed.includes(runId), 'a finished run is not executed')
  assert.deepEqual(resumed.failures.filter((f) => f.runId === runId), [])
  const t = await types(runId)
  assert.equal(t.at(-1), 'run_completed')
  assert.equal(t.filter((x) => x === 'run_completed').length, 1)
  assert.ok(!fs.existsSync(hookFile), 'the finished run\'s hook is gone')
  await assert.rejects(ours.getHookByToken(token))
  assert.ok(!fs.existsSync(path.join(base, 'leases', `${runId}.json`)), 'the stale lease is gone')
  assert.equal(await official.getRun(runId).returnValue, 'done')
})

// ------------------------------------------------------------------ reported, not continued

for (const [kind, corrupt] of [
  ['truncated', (text) => text.slice(0, Math.floor(text.length / 2))],
  ['empty', () => ''],
  ['without its result', (text) => {
    const ev = JSON.parse(text)
    delete ev.eventData.result
    return JSON.stringify(ev)
  }],
  ['not an object', () => '[1,2,3]'],
]) {
  test(`a corrupt step_completed event (${kind}): resumeRuns() reports CORRUPT_FILE naming it, the run is left as it was`, async () => {
    let ran = 0
    const slug = kind.replace(/ /g, '-')
    const s = step(`rec-corrupt-${slug}`, async () => ++ran)
    const w = workflow(`rec-corrupt-${slug}`, async () => s())
    const runId = newRun(w, [])
    const corr = startStep(runId, s, [])
    const done = create(runId, { eventType: 'step_completed', correlationId: corr, eventData: { stepName: s.stepId, result: bytes(7) } })
    const file = eventFile(runId, done.event.eventId)
    fs.writeFileSync(file, corrupt(fs.readFileSync(file, 'utf8')))
    const names = () => fs.readdirSync(path.join(dataDir, 'events')).filter((n) => n.startsWith(runId)).sort()
    const before = names()
    const stepBefore = fs.readFileSync(path.join(dataDir, 'steps', `${runId}-${corr}.json`), 'utf8')

    const { value: resumed, lines } = await capture(() => wf.resumeRuns())
    assert.ok(!resumed.includes(runId))
    const mine = resumed.failures.filter((f) => f.runId === runId)
    assert.equal(mine.length, 1)
    assert.equal(mine[0].error.code, 'CORRUPT_FILE')
    assert.equal(mine[0].error.name, 'WorkflowWorldError')
    assert.ok(mine[0].error.message.includes(file), mine[0].error.message)
    assert.ok(lines.error.some((l) => l.includes(runId) && l.includes(file)), lines.error.join('\n'))
    // left as it was: nothing written, no verdict, the step not run
    assert.equal(ran, 0)
    assert.deepEqual(names(), before)
    assert.equal(fs.readFileSync(path.join(dataDir, 'steps', `${runId}-${corr}.json`), 'utf8'), stepBefore)
    assert.equal(await official.getRun(runId).status, 'running')
    // reported again by the next resumeRuns() (the fault is not fixed)
    const { value: again } = await capture(() => wf.resumeRuns())
    assert.equal(again.failures.filter((f) => f.runId === runId).length, 1)
    // (finished, so later tests' resumeRuns() calls do not meet it again)
    await ours.getRun(runId).cancel()
  })
}

test('a write the world refuses although the run goes on (a step closed behind the engine): the run is repaired and replayed once, then completes', async () => {
  let ran = 0
  const s = step('rec-behind', async () => {
    ran++
    if (ran === 1) {
      // something closes this step behind the engine: its terminal lock appears
      const { stepId } = getStepMetadata()
      const lock = path.join(dataDir, '.locks', 'steps', `${getWorkflowMetadata().workflowRunId}-${stepId}.terminal`)
      fs.mkdirSync(path.dirname(lock), { recursive: true })
      fs.writeFileSync(lock, '')
    }
    return ran
  })
  const w = workflow('rec-behind-wf', async () => s())
  let runId
  const { value, lines } = await capture(async () => {
    const run = await ours.start(w, [])
    runId = run.runId
    return run.returnValue
  })
  assert.equal(value, 2)
  assert.equal(ran, 2)
  // returnValue follows the run file, written just before the run_completed event; the
  // execution ends after it
  await getEngine().completion(runId)
  assert.ok(lines.warn.some((l) => l.includes(runId) && /refused step_completed/.test(l) && /repairing/.test(l)), lines.warn.join('\n'))
  await assertFilesAgree(runId)
})

test('a write the world keeps refusing although the run goes on: reported loudly with the run id, the run left running (no verdict)', async () => {
  const s = step('rec-always-behind', async () => {
    const { stepId } = getStepMetadata()
    const lock = path.join(dataDir, '.locks', 'steps', `${getWorkflowMetadata().workflowRunId}-${stepId}.terminal`)
    fs.mkdirSync(path.dirname(lock), { recursive: true })
    fs.writeFileSync(lock, '')
    return 1
  })
  const w = workflow('rec-always-behind-wf', async () => s())
  let reported
  const seen = new Promise((r) => (reported = r))
  let current
  const { lines } = await capture(
    async () => {
      current = (await ours.start(w, [])).runId
      await seen
    },
    (line) => {
      if (/cannot continue/.test(line)) reported()
    },
  )
  const msg = lines.error.find((l) => /cannot continue/.test(l))
  assert.match(msg, new RegExp(`Run ${current} cannot continue`))
  assert.match(msg, /refused step_completed/)
  assert.equal(await official.getRun(current).status, 'running')
  const t = await types(current)
  assert.ok(!t.includes('run_failed'))
  // (left running: mark it finished so later resumeRuns() calls in this file skip it)
  await ours.getRun(current).cancel()
})
