// run.cancel(): ours on one run, the official on an identical twin run; the files each
// leaves behind are compared structurally (same keys, same key order, same values apart
// from ids and timestamps), and the official package reads the result.
import {
  createRun,
  createWait,
  createHook,
  describeError,
  eventFiles,
  exists,
  file,
  listDir,
  official,
  officialErrors,
  ours,
  ourErrors,
  readJson,
  readText,
  settle,
  shape,
  newRunId,
  world,
} from './helpers/harness.mjs'
import { test, describe, before } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'

const sha256 = (s) => createHash('sha256').update(s).digest('hex')
const recoveryMarker = (token, runId, hookId) => `${sha256(`${token}\x00${runId}\x00${hookId}`)}.recovery.json`

/** A run with two hooks (one with metadata, one webhook), two waits and a recovery marker. */
async function populatedRun(status) {
  const runId = await createRun({ status })
  const tokens = [`tok-a-${runId}`, `tök-🚀-${runId}`]
  const hooks = [
    await createHook(runId, { token: tokens[0], metadata: { kind: 'approval', at: new Date(1) } }),
    await createHook(runId, { token: tokens[1], isWebhook: true }),
  ]
  const waits = [await createWait(runId), await createWait(runId, new Date('2040-01-01T00:00:00.000Z'))]
  const marker = recoveryMarker(tokens[0], runId, hooks[0])
  writeFileSync(file('hooks', 'tokens', marker), JSON.stringify({ eventId: 'evnt_01ARZ3NDEKTSV4RRFFQ69G5FAV' }))
  return { runId, tokens, hooks, waits, marker }
}

function assertSideEffectsGone(r) {
  for (const h of r.hooks) assert.equal(exists('hooks', `${h}.json`), false, `hook ${h} still exists`)
  for (const t of r.tokens) assert.equal(exists('hooks', 'tokens', `${sha256(t)}.json`), false, `token claim ${t} still exists`)
  assert.equal(exists('hooks', 'tokens', r.marker), false, 'recovery marker still exists')
  for (const w of r.waits) assert.equal(exists('waits', `${r.runId}-${w}.json`), false, `wait ${w} still exists`)
}

const runShape = (runId) => shape(readJson('runs', `${runId}.json`), { [runId]: '<RUN>' })
const eventShapes = (runId) => eventFiles(runId).map((e) => shape(e.json, { [runId]: '<RUN>' }))

for (const status of ['running', 'pending']) {
  describe(`cancel a ${status} run with hooks and waits`, () => {
    let mine
    let theirs
    let bystander
    let before_
    let result
    before(async () => {
      mine = await populatedRun(status)
      theirs = await populatedRun(status)
      bystander = await populatedRun('running')
      before_ = readJson('runs', `${mine.runId}.json`)
      result = {
        mine: await settle(() => ours.getRun(mine.runId).cancel()),
        theirs: await settle(() => official.getRun(theirs.runId).cancel()),
      }
    })

    test('both resolve with undefined', () => {
      assert.deepEqual(result.theirs, { ok: true, value: undefined })
      assert.deepEqual(result.mine, { ok: true, value: undefined }, `ours: ${result.mine.error && result.mine.error.stack}`)
    })

    test('the run file is cancelled, with the same keys in the same order as the official', () => {
      const run = readJson('runs', `${mine.runId}.json`)
      assert.equal(run.status, 'cancelled')
      assert.equal(run.createdAt, before_.createdAt)
      assert.equal(run.startedAt, before_.startedAt)
      assert.ok(run.completedAt)
      assert.equal(run.updatedAt, run.completedAt)
      assert.deepEqual(run.input, before_.input)
      assert.deepEqual(run.executionContext, before_.executionContext)
      assert.equal(runShape(mine.runId), runShape(theirs.runId))
      const text = readText('runs', `${mine.runId}.json`)
      assert.equal(text, JSON.stringify(run, null, 2), 'not formatted like world-local (2-space JSON, no newline)')
    })

    test('a run_cancelled event like the official one is appended', () => {
      assert.deepEqual(eventShapes(mine.runId), eventShapes(theirs.runId))
      const last = eventFiles(mine.runId).at(-1).json
      assert.equal(last.eventType, 'run_cancelled')
      assert.equal(last.specVersion, 3)
      assert.equal(last.eventData, undefined)
      assert.equal(last.correlationId, undefined)
      // world-local stamps the event and the run transition with one `now`
      const ref = eventFiles(theirs.runId).at(-1).json
      assert.equal(ref.createdAt, readJson('runs', `${theirs.runId}.json`).completedAt)
      assert.equal(
        last.createdAt,
        readJson('runs', `${mine.runId}.json`).completedAt,
        'run_cancelled.createdAt differs from run.completedAt (the official uses the same instant)',
      )
    })

    test('hooks, token claims, recovery markers and waits of the run are deleted', () => {
      assertSideEffectsGone(theirs)
      assertSideEffectsGone(mine)
    })

    test('another run’s hooks and waits are untouched', () => {
      for (const h of bystander.hooks) assert.ok(exists('hooks', `${h}.json`))
      for (const t of bystander.tokens) assert.ok(exists('hooks', 'tokens', `${sha256(t)}.json`))
      assert.ok(exists('hooks', 'tokens', bystander.marker))
      for (const w of bystander.waits) assert.ok(exists('waits', `${bystander.runId}-${w}.json`))
    })

    test('the official package sees the run as cancelled and the hooks as gone', async () => {
      assert.equal(await official.getRun(mine.runId).status, 'cancelled')
      const run = await world.runs.get(mine.runId)
      assert.equal(run.status, 'cancelled')
      assert.ok(run.completedAt instanceof Date)
      const hook = await settle(() => world.hooks.getByToken(mine.tokens[0]))
      assert.equal(hook.ok, false)
      assert.equal(hook.error.name, 'HookNotFoundError')
      // the freed token can be claimed again by a new hook of another run
      const other = await createRun({ status: 'running' })
      const reuse = await world.events.create(other, {
        eventType: 'hook_created',
        specVersion: 3,
        correlationId: `hook_01ARZ3NDEKTSV4RRFFQ69G5FA${status === 'running' ? 'V' : 'W'}`,
        eventData: { token: mine.tokens[0], isWebhook: false },
      })
      assert.equal(reuse.event.eventType, 'hook_created')
    })

    test('returnValue rejects with WorkflowRunCancelledError from both packages', async () => {
      const m = await settle(() => ours.getRun(mine.runId).returnValue)
      const t = await settle(() => official.getRun(mine.runId).returnValue)
      assert.equal(t.ok, false)
      assert.equal(m.ok, false)
      assert.deepEqual(describeError(m.error), describeError(t.error))
      assert.equal(m.error.name, 'WorkflowRunCancelledError')
      assert.equal(await ours.getRun(mine.runId).status, 'cancelled')
    })

    test('cancelling again is idempotent: resolves, appends another event, leaves the run unchanged', async () => {
      const runText = readText('runs', `${mine.runId}.json`)
      const n = eventFiles(mine.runId).length
      const m = await settle(() => ours.getRun(mine.runId).cancel())
      const t = await settle(() => official.getRun(theirs.runId).cancel())
      assert.deepEqual(t, { ok: true, value: undefined })
      assert.deepEqual(m, { ok: true, value: undefined }, `ours: ${m.error}`)
      assert.equal(readText('runs', `${mine.runId}.json`), runText)
      assert.equal(eventFiles(mine.runId).length, n + 1)
      assert.deepEqual(eventShapes(mine.runId), eventShapes(theirs.runId))
    })
  })
}

describe('cancel of terminal runs', () => {
  for (const status of ['completed', 'failed']) {
    test(`${status}: EntityConflictError from both, nothing written`, async () => {
      const id = await createRun({ status, value: 'done' })
      const runText = readText('runs', `${id}.json`)
      const n = eventFiles(id).length
      const t = await settle(() => official.getRun(id).cancel())
      const m = await settle(() => ours.getRun(id).cancel())
      assert.equal(t.ok, false)
      assert.equal(m.ok, false, 'ours resolved')
      assert.equal(m.error.name, 'EntityConflictError')
      assert.equal(m.error.message, `Cannot transition run from terminal state "${status}"`)
      assert.deepEqual(describeError(m.error), describeError(t.error))
      assert.ok(m.error instanceof ourErrors.EntityConflictError)
      assert.ok(m.error instanceof ourErrors.WorkflowWorldError)
      assert.ok(officialErrors.EntityConflictError.is(m.error))
      assert.equal(readText('runs', `${id}.json`), runText)
      assert.equal(eventFiles(id).length, n)
      assert.equal(await official.getRun(id).status, status)
    })
  }
})

describe('cancel of a run from a newer spec version', () => {
  test('specVersion 4: RunNotSupportedError from both, nothing written', async () => {
    const id = await createRun({ status: 'running' })
    const run = readJson('runs', `${id}.json`)
    run.specVersion = 4
    writeFileSync(file('runs', `${id}.json`), JSON.stringify(run, null, 2))
    const runText = readText('runs', `${id}.json`)
    const n = eventFiles(id).length
    const t = await settle(() => official.getRun(id).cancel())
    const m = await settle(() => ours.getRun(id).cancel())
    assert.equal(t.ok, false)
    assert.equal(m.ok, false, 'ours resolved')
    assert.deepEqual(describeError(m.error), describeError(t.error))
    assert.equal(m.error.runSpecVersion, t.error.runSpecVersion)
    assert.equal(m.error.worldSpecVersion, t.error.worldSpecVersion)
    assert.equal(readText('runs', `${id}.json`), runText)
    assert.equal(eventFiles(id).length, n)
  })
})

describe('cancel of an unknown run', () => {
  test('resolves and writes an orphan run_cancelled event, like world-local', async () => {
    const a = newRunId()
    const b = newRunId()
    const m = await settle(() => ours.getRun(a).cancel())
    const t = await settle(() => official.getRun(b).cancel())
    assert.deepEqual(t, { ok: true, value: undefined })
    assert.deepEqual(m, { ok: true, value: undefined }, `ours: ${m.error && `${m.error.name}: ${m.error.message}`}`)
    assert.deepEqual(eventShapes(a), eventShapes(b))
    assert.equal(exists('runs', `${a}.json`), false)
    assert.equal(await ours.getRun(a).exists, false)
  })
})

describe('cancel of a legacy (spec 1) run', () => {
  test('direct mutation, no event, hooks deleted, waits kept — like the official', async () => {
    const make = async () => {
      const r = await populatedRun('running')
      const run = readJson('runs', `${r.runId}.json`)
      delete run.specVersion
      writeFileSync(file('runs', `${r.runId}.json`), JSON.stringify(run, null, 2))
      return r
    }
    const mine = await make()
    const theirs = await make()
    const t = await settle(() => official.getRun(theirs.runId).cancel())
    const m = await settle(() => ours.getRun(mine.runId).cancel())
    assert.deepEqual(t, { ok: true, value: undefined })
    assert.deepEqual(m, { ok: true, value: undefined }, `ours: ${m.error}`)
    assert.equal(runShape(mine.runId), runShape(theirs.runId))
    assert.deepEqual(eventShapes(mine.runId), eventShapes(theirs.runId))
    const hooksLeft = (r) => r.hooks.filter((h) => exists('hooks', `${h}.json`)).length
    const waitsLeft = (r) => r.waits.filter((w) => exists('waits', `${r.runId}-${w}.json`)).length
    assert.equal(hooksLeft(mine), hooksLeft(theirs))
    assert.equal(waitsLeft(mine), waitsLeft(theirs))
    assert.equal(await official.getRun(mine.runId).status, 'cancelled')
  })
})

test('no temporary files are left behind by cancel', () => {
  for (const dir of [['runs'], ['events'], ['hooks'], ['hooks', 'tokens'], ['waits']]) {
    const tmp = listDir(...dir).filter((f) => f.includes('.tmp'))
    assert.deepEqual(tmp, [], `temporary files in ${dir.join('/')}`)
  }
})
