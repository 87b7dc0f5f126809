// When a run executing in this process follows the events other writers add (a cancel, a
// hook payload, a wakeUp()): a run started here starts following at its first invocation
// (a step, a hook, a sleep), so a body with none costs no follower; a cancel() made before
// that still stops the run, at the invocation whose write it refuses.
import { official, ours, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'
import { getEngine } from '../lib/engine/engine.js'

const { workflow, step, createHook } = wf

/** Counts the followers the engine's world is asked for, per run id, while `fn` runs. */
async function countingFollowers(fn) {
  const world = getEngine().world()
  const original = world.followRun
  const calls = []
  world.followRun = function (runId, ...rest) {
    calls.push(runId)
    return original.call(this, runId, ...rest)
  }
  try {
    await fn()
  } finally {
    world.followRun = original
  }
  return calls
}

function gate() {
  let open
  const p = new Promise((r) => (open = r))
  return { p, open }
}

const double = step('follow-double', async (x) => x * 2)
const noStep = workflow('follow-no-step', async (a, b) => ({ sum: a + b }))
const twoSteps = workflow('follow-two-steps', async (x) => (await double(x)) + (await double(x + 1)))

test('a no-step run starts no follower; a run with steps starts one, once', async () => {
  let first
  let second
  const calls = await countingFollowers(async () => {
    first = await ours.start(noStep, [2, 3])
    assert.deepEqual(await first.returnValue, { sum: 5 })
    second = await ours.start(twoSteps, [5])
    assert.equal(await second.returnValue, 22)
  })
  assert.deepEqual(calls, [second.runId])
  // both read back by the official package as any run
  assert.equal(await official.getRun(first.runId).status, 'completed')
  assert.deepEqual(await official.getRun(first.runId).returnValue, { sum: 5 })
  assert.equal(await official.getRun(second.runId).returnValue, 22)
})

test('a run cancelled before its first invocation stops there: the step never runs', async () => {
  const held = gate()
  let ran = 0
  const counted = step('follow-counted', async () => {
    ran++
    return 'ran'
  })
  const waitsFirst = workflow('follow-waits-first', async () => {
    await held.p // not an invocation: nothing is followed yet
    return await counted()
  })
  const run = await ours.start(waitsFirst, [])
  await ours.getRun(run.runId).cancel()
  held.open()
  await getEngine().completion(run.runId)
  assert.equal(ran, 0)
  assert.equal(await official.getRun(run.runId).status, 'cancelled')
  await assert.rejects(ours.getRun(run.runId).returnValue, (e) => e.name === 'WorkflowRunCancelledError')
  const page = await world.events.list({ runId: run.runId, pagination: { limit: 100, sortOrder: 'asc' } })
  assert.deepEqual(
    page.data.map((e) => e.eventType),
    ['run_created', 'run_started', 'run_cancelled'],
  )
})

test('a hook created by a run started here gets a payload sent as soon as it exists', async () => {
  const token = `follow-hook-${Date.now()}`
  const waitsForHook = workflow('follow-hook', async () => {
    const hook = createHook({ token })
    const got = await hook
    return got.n
  })
  const calls = await countingFollowers(async () => {
    const run = await ours.start(waitsForHook, [])
    for (;;) {
      const hook = await ours.getHookByToken(token).catch(() => undefined)
      if (hook) break
      await new Promise((r) => setImmediate(r))
    }
    await ours.resumeHook(token, { n: 42 })
    assert.equal(await run.returnValue, 42)
  })
  assert.equal(calls.length, 1)
})
