// Waiting costs no OS thread: 10,000 pending `returnValue`s are held by one registry per
// World (woken by the file watcher), not by a thread or a poll each. The process's thread
// count (/proc/self/status) is sampled throughout and must stay within a small constant
// of the count with 10 pending; then every run is completed (some by the official
// world-local, the rest through the addon's event writer, as another process would) and
// every `returnValue` must settle with its own run's outcome.
import {
  createRun,
  dataDir,
  encodeReturnValue,
  newRunId,
  ours,
  ourErrors,
  world,
} from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, existsSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { NativeWorld } = require('../lib/loader.js').loadNative()

const PENDING = 10_000
const BASELINE = 10
/** Threads allowed above the count with 10 pending (a spare blocking thread or two). */
const SLACK = 4

function threads() {
  return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1])
}

/** `{ ok, value | error }` of a promise, observed at once (no unhandled rejection). */
const outcomeOf = (promise) =>
  promise.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error }),
  )

/** Settles within `ms` or fails the test (a hang guard, not a timing assertion). */
function within(ms, promise, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

function assertCancelled(r, what = 'run') {
  assert.equal(r.ok, false, `${what} resolved`)
  assert.ok(r.error instanceof ourErrors.WorkflowRunCancelledError, `${what}: ${r.error && r.error.name}`)
}

test(
  `${PENDING} pending returnValues hold no thread each, then all settle with their run's outcome`,
  { skip: !existsSync('/proc/self/status') && 'needs /proc/self/status' },
  async () => {
    // A second writer on the same directory (its own World), for bulk writes.
    const writer = new NativeWorld(dataDir)
    const created = (runId) => {
      writer.createEventSync(
        runId,
        JSON.stringify({
          eventType: 'run_created',
          specVersion: 3,
          eventData: {
            deploymentId: 'dpl_local@4.4.1',
            workflowName: 'workflow//./src/x//wf',
            input: { __type: 'Uint8Array', data: Buffer.from('devl[[]]').toString('base64') },
          },
        }),
      )
      writer.createEventSync(runId, JSON.stringify({ eventType: 'run_started', specVersion: 3 }))
    }

    // Warm-up: the official writer (libuv's pool), our waiting machinery, one full cycle.
    const warm = await createRun({ status: 'running' })
    const warmValue = ours.getRun(warm).returnValue
    await world.events.create(warm, {
      eventType: 'run_completed',
      specVersion: 3,
      eventData: { output: await encodeReturnValue('warm', warm) },
    })
    assert.equal(await within(20_000, warmValue, 'warm-up run'), 'warm')

    // Baseline: 10 pending waiters.
    const baseIds = []
    for (let i = 0; i < BASELINE; i++) baseIds.push(await createRun({ status: 'running' }))
    const baseWaits = baseIds.map((id) => outcomeOf(ours.getRun(id).returnValue))
    // One more run completed and awaited: the waiters above are registered and read.
    const probe = await createRun({ status: 'running' })
    const probeValue = outcomeOf(ours.getRun(probe).returnValue)
    await world.events.create(probe, { eventType: 'run_cancelled', specVersion: 3 })
    assertCancelled(await within(20_000, probeValue, 'probe run'))
    const base = threads()

    // 10,000 more runs, then a waiter on each.
    const ids = []
    for (let i = 0; i < PENDING; i++) {
      const id = newRunId()
      created(id)
      ids.push(id)
    }
    let max = threads()
    const sampler = setInterval(() => {
      max = Math.max(max, threads())
    }, 10)
    try {
      const settled = ids.map((id) => outcomeOf(ours.getRun(id).returnValue))
      // A waiter registered after the 10,000 answers only once the registry has taken
      // them all in (one batch or more): the 10,000 are waiting now.
      const late = await createRun({ status: 'running' })
      const lateValue = outcomeOf(ours.getRun(late).returnValue)
      await world.events.create(late, { eventType: 'run_cancelled', specVersion: 3 })
      assertCancelled(await within(60_000, lateValue, 'late run'))
      max = Math.max(max, threads())
      const waiting = threads()

      // Complete them: the first 500 through the official world-local, the rest through
      // our writer (completed / failed / cancelled).
      const outcome = (i) => (i < 500 || i % 3 === 0 ? 'completed' : i % 3 === 1 ? 'failed' : 'cancelled')
      for (let i = 0; i < 500; i++) {
        await world.events.create(ids[i], {
          eventType: 'run_completed',
          specVersion: 3,
          eventData: { output: await encodeReturnValue({ i }, ids[i]) },
        })
      }
      for (let i = 500; i < PENDING; i++) {
        const o = outcome(i)
        let req
        if (o === 'completed') {
          const output = await encodeReturnValue({ i }, ids[i])
          req = {
            eventType: 'run_completed',
            specVersion: 3,
            eventData: { output: { __type: 'Uint8Array', data: Buffer.from(output).toString('base64') } },
          }
        } else if (o === 'failed') {
          req = {
            eventType: 'run_failed',
            specVersion: 3,
            eventData: { error: { message: `boom ${i}` }, errorCode: 'USER_ERROR' },
          }
        } else {
          req = { eventType: 'run_cancelled', specVersion: 3 }
        }
        writer.createEventSync(ids[i], JSON.stringify(req))
      }
      const results = await within(180_000, Promise.all(settled), 'all 10,000 returnValues')
      max = Math.max(max, threads())
      for (let i = 0; i < PENDING; i++) {
        const r = results[i]
        const o = outcome(i)
        if (o === 'completed') {
          assert.equal(r.ok, true, `run ${i}: ${r.error}`)
          assert.deepEqual(r.value, { i })
        } else if (o === 'failed') {
          assert.equal(r.ok, false, `run ${i} resolved`)
          assert.ok(r.error instanceof ourErrors.WorkflowRunFailedError, `run ${i}: ${r.error && r.error.name}`)
          assert.equal(r.error.cause.message, `boom ${i}`)
        } else {
          assertCancelled(r, `run ${i}`)
        }
      }
      // The baseline waiters are still pending and still answered.
      for (const id of baseIds) await world.events.create(id, { eventType: 'run_cancelled', specVersion: 3 })
      for (const r of await within(20_000, Promise.all(baseWaits), 'baseline runs')) assertCancelled(r)
      console.log(
        `threads: ${base} with ${BASELINE} pending, ${waiting} with ${PENDING + BASELINE} pending, at most ${max} throughout`,
      )
      assert.ok(
        max <= base + SLACK,
        `threads grew with the waiters: ${base} with ${BASELINE} pending, up to ${max} with ${PENDING + BASELINE}`,
      )
    } finally {
      clearInterval(sampler)
    }
  },
)
