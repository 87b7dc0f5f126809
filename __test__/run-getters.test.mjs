// Run getters (exists, status, workflowName, createdAt, startedAt, completedAt) side by
// side with the official `workflow/api` on runs written by the official world-local.
import {
  createRun,
  describeError,
  official,
  ours,
  ourErrors,
  officialErrors,
  readJson,
  settle,
  newRunId,
  WORKFLOW_NAME,
} from './helpers/harness.mjs'
import { test, describe, before } from 'node:test'
import assert from 'node:assert/strict'

const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled']
const runs = {}

before(async () => {
  for (const status of STATUSES) {
    runs[status] = await createRun({
      status,
      value: { ok: true },
      workflowName: `workflow//./src/workflows/${status}//wf${status}`,
    })
  }
})

function assertSameDate(actual, expected, label) {
  if (expected === undefined) {
    assert.equal(actual, undefined, `${label}: expected undefined`)
    return
  }
  assert.ok(actual instanceof Date, `${label}: ours is not a Date (${Object.prototype.toString.call(actual)})`)
  assert.ok(expected instanceof Date, `${label}: official is not a Date`)
  assert.equal(actual.getTime(), expected.getTime(), `${label}: times differ`)
}

describe('getters on runs in every status', () => {
  for (const status of STATUSES) {
    test(`${status} run: exists/status/workflowName/createdAt/startedAt/completedAt equal the official`, async () => {
      const id = runs[status]
      const mine = ours.getRun(id)
      const theirs = official.getRun(id)
      assert.equal(mine.runId, id)
      assert.equal(await mine.exists, true)
      assert.equal(await theirs.exists, true)

      assert.equal(await mine.status, status)
      assert.equal(await mine.status, await theirs.status)

      assert.equal(await mine.workflowName, `workflow//./src/workflows/${status}//wf${status}`)
      assert.equal(await mine.workflowName, await theirs.workflowName)

      for (const getter of ['createdAt', 'startedAt', 'completedAt']) {
        assertSameDate(await mine[getter], await theirs[getter], `${status}.${getter}`)
      }
      // and those match the file the official world wrote
      const file = readJson('runs', `${id}.json`)
      assert.equal((await mine.createdAt).toISOString(), file.createdAt)
      if (status === 'pending') {
        assert.equal(await mine.startedAt, undefined)
      } else {
        assert.equal((await mine.startedAt).toISOString(), file.startedAt)
      }
      if (['completed', 'failed', 'cancelled'].includes(status)) {
        assert.equal((await mine.completedAt).toISOString(), file.completedAt)
      } else {
        assert.equal(await mine.completedAt, undefined)
      }
    })
  }

  test('every getter access is a fresh read (status changes are visible on the same Run)', async () => {
    const id = await createRun({ status: 'pending' })
    const mine = ours.getRun(id)
    assert.equal(await mine.status, 'pending')
    assert.equal(await mine.startedAt, undefined)
    const { world } = await import('./helpers/harness.mjs')
    await world.events.create(id, { eventType: 'run_started', specVersion: 3 })
    assert.equal(await mine.status, 'running')
    assert.ok((await mine.startedAt) instanceof Date)
    assert.equal(await mine.status, await official.getRun(id).status)
  })

  test('getters return promises (not values) and Run exposes runId', () => {
    const mine = ours.getRun(runs.completed)
    for (const g of ['exists', 'status', 'workflowName', 'createdAt', 'startedAt', 'completedAt', 'returnValue']) {
      const p = mine[g]
      assert.ok(p instanceof Promise, `${g} is not a Promise`)
    }
    assert.equal(mine.runId, runs.completed)
    assert.equal(typeof ours.getRun, 'function')
    assert.equal(typeof ours.Run, 'function')
    assert.ok(mine instanceof ours.Run)
  })

  test('new Run(id) works like getRun(id), as with the official Run class', async () => {
    const id = runs.running
    assert.equal(await new ours.Run(id).status, await new official.Run(id).status)
    assert.equal((await new ours.Run(id).createdAt).getTime(), (await new official.Run(id).createdAt).getTime())
  })
})

describe('unknown run', () => {
  const unknown = newRunId()

  test('exists is false for both', async () => {
    assert.equal(await official.getRun(unknown).exists, false)
    assert.equal(await ours.getRun(unknown).exists, false)
  })

  for (const getter of ['status', 'returnValue', 'createdAt', 'workflowName', 'startedAt', 'completedAt']) {
    test(`${getter} rejects with WorkflowRunNotFoundError like the official`, async () => {
      const theirs = await settle(() => official.getRun(unknown)[getter])
      const mine = await settle(() => ours.getRun(unknown)[getter])
      assert.equal(theirs.ok, false)
      assert.equal(mine.ok, false, `ours resolved with ${mine.value}`)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
      assert.equal(mine.error.name, 'WorkflowRunNotFoundError')
      assert.equal(mine.error.message, `Workflow run "${unknown}" not found`)
      assert.equal(mine.error.runId, unknown)
      assert.ok(mine.error instanceof ourErrors.WorkflowRunNotFoundError)
      assert.ok(mine.error instanceof Error)
      assert.ok(officialErrors.WorkflowRunNotFoundError.is(mine.error))
    })
  }
})

describe('unsafe run ids', () => {
  const UNSAFE = ['', '.', '..', 'a.b', '../x', 'a/b', 'a\\b', 'a\0b', '.hidden', `wrun_${'x'.repeat(60)}.json`]

  for (const id of UNSAFE) {
    for (const op of ['exists', 'status', 'returnValue', 'createdAt', 'cancel']) {
      test(`${op} on ${JSON.stringify(id)}: same error as the official`, async () => {
        const call = (run) => (op === 'cancel' ? run.cancel() : run[op])
        const theirs = await settle(() => call(official.getRun(id)))
        const mine = await settle(() => call(ours.getRun(id)))
        assert.equal(theirs.ok, false, 'official unexpectedly succeeded')
        assert.equal(mine.ok, false, `ours unexpectedly succeeded with ${JSON.stringify(mine.value)}`)
        assert.ok(mine.error instanceof Error)
        assert.deepEqual(
          { name: mine.error.name, message: mine.error.message },
          { name: theirs.error.name, message: theirs.error.message },
        )
      })
    }
  }

  test('getRun never throws for unsafe ids; getters return promises', () => {
    for (const id of UNSAFE) {
      let run
      assert.doesNotThrow(() => {
        run = ours.getRun(id)
      })
      for (const g of ['exists', 'status', 'returnValue']) {
        let p
        assert.doesNotThrow(() => {
          p = run[g]
        })
        assert.ok(p instanceof Promise)
        p.catch(() => {})
      }
    }
  })

  test('odd but safe ids behave like the official (not found, or the same filesystem error)', async () => {
    for (const id of ['wrun_' + 'A'.repeat(300), 'wrun_ä☃', 'wrun with space', 'CON', 'wrun_\n', 'WRUN_01ARZ3NDEKTSV4RRFFQ69G5FAV']) {
      for (const op of ['exists', 'status']) {
        const o = await settle(() => official.getRun(id)[op])
        const m = await settle(() => ours.getRun(id)[op])
        // raw filesystem errors: same outcome, same error name and errno code (messages are not a contract)
        const outcome = (r) =>
          r.ok
            ? { value: r.value }
            : r.error.name === 'WorkflowRunNotFoundError'
              ? describeError(r.error)
              : { name: r.error.name, code: r.error.code }
        assert.deepEqual(outcome(m), outcome(o), `${op} on ${JSON.stringify(id.slice(0, 30))}`)
      }
    }
  })

  test('nothing was written outside the data directory', async () => {
    const { existsSync } = await import('node:fs')
    const path = await import('node:path')
    const { dataDir } = await import('./helpers/harness.mjs')
    assert.equal(existsSync(path.join(dataDir, '..', 'x.json')), false)
    assert.equal(existsSync(path.join(dataDir, 'runs', '..', 'x.json')), false)
  })
})

describe('non-string run ids', () => {
  const VALUES = [123, null, undefined, {}, ['wrun_x'], true, Symbol('wrun'), 10n]

  for (const v of VALUES) {
    const label = typeof v === 'symbol' ? 'Symbol' : typeof v === 'bigint' ? '10n' : JSON.stringify(v) ?? 'undefined'
    test(`getRun(${label}) never throws; getters/cancel reject with TypeError`, async () => {
      let run
      assert.doesNotThrow(() => {
        run = ours.getRun(v)
      })
      for (const g of ['exists', 'status', 'returnValue', 'createdAt', 'workflowName']) {
        let p
        assert.doesNotThrow(() => {
          p = run[g]
        }, `${g} threw synchronously`)
        const r = await settle(p)
        assert.equal(r.ok, false, `${g} resolved with ${String(r.value)}`)
        assert.ok(r.error instanceof TypeError, `${g}: expected TypeError, got ${r.error && r.error.name}: ${r.error && r.error.message}`)
      }
      const c = await settle(() => run.cancel())
      assert.equal(c.ok, false)
      if (v === null || v === undefined) {
        // world-local checks a missing run id itself: the official error, as is
        const o = await settle(() => official.getRun(v).cancel())
        assert.deepEqual(describeError(c.error), describeError(o.error))
        assert.equal(c.error.message, 'runId is required for non-run_created events')
      } else {
        assert.ok(c.error instanceof TypeError, `cancel: got ${c.error && c.error.name}`)
      }
      // wakeUp wraps every non-aggregate failure (as the official wakeUpRun does)
      const w = await settle(() => run.wakeUp())
      assert.equal(w.ok, false)
      assert.ok(
        w.error instanceof TypeError || w.error.cause instanceof TypeError,
        `wakeUp: got ${w.error && w.error.name}: ${w.error && w.error.message}`,
      )
    })
  }

  test('official getRun also never throws for non-string ids (reference behaviour)', async () => {
    const run = official.getRun(123)
    const r = await settle(() => run.status)
    assert.equal(r.ok, false)
    assert.ok(r.error instanceof TypeError)
  })
})

test('workflowName of the default-named run is the workflow id', async () => {
  const id = await createRun({ status: 'running' })
  assert.equal(await ours.getRun(id).workflowName, WORKFLOW_NAME)
})
