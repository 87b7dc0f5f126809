// Re-declaring a workflow or a step under the same id (what `next dev` does after an edit,
// and a test runner without isolation): the latest declaration wins for new runs, resumed
// runs and replays; a run executing here keeps the code it started with until its next
// replay. Before, the second declaration threw `A different workflow is already registered`.
import { dataDir } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import wf from '../workflow.js'
import api from '../index.js'

const { workflow, step, sleep, useVirtualTime, useRealTime, advanceTime, nextSleep, resumeRuns } = wf
const { start } = api

test('a second declaration under the same id replaces the first: new runs run the new code', async () => {
  const v1 = workflow('redeclared', async (x) => `v1:${x}`)
  assert.equal(await (await start(v1, [1])).returnValue, 'v1:1')
  const v2 = workflow('redeclared', async (x) => `v2:${x}`)
  assert.equal(v2.workflowId, v1.workflowId)
  assert.equal(await (await start(v2, [2])).returnValue, 'v2:2')
  // A module that kept the earlier function (not re-evaluated) starts the latest code too.
  assert.equal(await (await start(v1, [3])).returnValue, 'v2:3')
  // By id, as start({ workflowId }) callers do.
  const v3 = workflow('redeclared-by-id', async () => 'third', { id: 'custom//redeclared' })
  assert.equal(await (await start(v3, [])).returnValue, 'third')
  const v4 = workflow('other-name', async () => 'fourth', { id: 'custom//redeclared' })
  assert.equal(await (await start(v3, [])).returnValue, 'fourth')
  assert.equal(await (await start(v4, [])).returnValue, 'fourth')
})

test('a run in flight keeps the code it started with; runs started after the re-declaration get the new one', async () => {
  useVirtualTime({ auto: false })
  try {
    const mark = step('mark', async (v) => v)
    const before = workflow('in-flight', async () => {
      const a = await mark('old-a')
      await sleep('1h')
      return [a, await mark('old-b')]
    })
    const running = await start(before, [])
    await nextSleep(running)
    workflow('in-flight', async () => {
      const a = await mark('new-a')
      await sleep('1h')
      return [a, await mark('new-b')]
    })
    const fresh = await start(before, [])
    await nextSleep(fresh)
    await advanceTime('1h')
    assert.deepEqual(await running.returnValue, ['old-a', 'old-b'])
    assert.deepEqual(await fresh.returnValue, ['new-a', 'new-b'])
  } finally {
    useRealTime()
  }
})

test('a step re-declared under the same name: workflows declared with the new one run the new code', async () => {
  const s1 = step('redeclared-step', async () => 'step v1')
  const w1 = workflow('uses-step', async () => s1())
  assert.equal(await (await start(w1, [])).returnValue, 'step v1')
  const s2 = step('redeclared-step', async () => 'step v2')
  assert.equal(s2.stepId, s1.stepId)
  const w2 = workflow('uses-step', async () => s2())
  assert.equal(await (await start(w2, [])).returnValue, 'step v2')
})

// The child declares v1, starts a run that sleeps, and exits while it sleeps (its lease
// belongs to a dead process). This process declares v2 under the same id: resumeRuns()
// replays the run with v2's code (its next replay), which the recorded log still fits.
const CHILD = `
import wf from ${JSON.stringify(new URL('../workflow.js', import.meta.url).href)}
import api from ${JSON.stringify(new URL('../index.js', import.meta.url).href)}
const { workflow, step, sleep, nextSleep } = wf
const first = step('first', async () => 'recorded by v1')
const w = workflow('replayed', async () => {
  const a = await first()
  await sleep('1h')
  return 'v1 finished: ' + a
})
const run = await api.start(w, [])
await nextSleep(run)
process.stdout.write('RUN ' + run.runId + '\\n')
process.exit(0)
`

test('the next replay of a run started by an earlier declaration runs the latest one', async () => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
    env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const code = await new Promise((r) => child.on('exit', r))
  assert.equal(code, 0)
  const runId = /RUN (\S+)/.exec(out)?.[1]
  assert.ok(runId, `child printed ${out}`)

  let firstCalls = 0
  const first = step('first', async () => {
    firstCalls++
    return 'rerun'
  })
  workflow('replayed', async () => {
    const a = await first()
    await sleep('1h')
    return `v2 finished: ${a}`
  })
  useVirtualTime({ auto: false })
  try {
    const ids = await resumeRuns()
    assert.ok(ids.includes(runId), `resumed ${ids}`)
    await nextSleep(runId)
    await advanceTime('1h')
    const { getRun } = api
    assert.equal(await getRun(runId).returnValue, 'v2 finished: recorded by v1')
    assert.equal(firstCalls, 0, 'the completed step is answered from the log, not run again')
  } finally {
    useRealTime()
  }
})
