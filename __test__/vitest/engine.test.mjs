// Durable workflows under Vitest with virtual time: sleeps of hours and retry delays take
// no real time, and the test decides when they fire.
import { afterEach, expect, test } from 'vitest'
// The default (CommonJS) export works whether or not named ESM imports do.
import wf from 'workflow-native/workflow'
import api from 'workflow-native/api'

const { workflow, step, sleep, getWritable, getStepMetadata, useVirtualTime, useRealTime, advanceTime, nextSleep } = wf
const { start } = api

afterEach(() => useRealTime())

test('a run with a retried step and a one-day sleep completes at once under automatic virtual time', async () => {
  useVirtualTime()
  const flaky = step('vitest-flaky', async (x) => {
    if (getStepMetadata().attempt === 1) throw new Error('first attempt fails')
    return x * 2
  })
  const daily = workflow('vitest-daily', async (x) => {
    const y = await flaky(x)
    await sleep('1d')
    return { y, at: new Date(0), tags: new Set(['a']) }
  })
  const run = await start(daily, [21])
  const value = await run.returnValue
  expect(value.y).toBe(42)
  // values are built in the test's realm
  expect(value.at).toBeInstanceOf(Date)
  expect(value.tags).toBeInstanceOf(Set)
  expect(await run.status).toBe('completed')
})

test('with { auto: false } a sleep fires only when advanceTime() reaches it', async () => {
  useVirtualTime({ auto: false })
  let after = 0
  const mark = step('vitest-mark', async () => ++after)
  const reminder = workflow('vitest-reminder', async () => {
    await sleep('1h')
    return mark()
  })
  const run = await start(reminder, [])
  await nextSleep(run)
  expect(await run.status).toBe('running')
  await advanceTime('59m')
  // nothing was due: the step after the sleep has not run
  expect(after).toBe(0)
  await advanceTime('1m')
  expect(await run.returnValue).toBe(1)
  expect(after).toBe(1)
})

test("a run's stream, read live, ends when the run completes (no close needed)", async () => {
  useVirtualTime()
  const say = step('vitest-say', async (text) => {
    const writer = getWritable().getWriter()
    await writer.write(text)
    writer.releaseLock()
  })
  const talk = workflow('vitest-talk', async () => {
    await say('one')
    await sleep('10m')
    await say('two')
    return 'said'
  })
  const run = await start(talk, [])
  const chunks = []
  for await (const chunk of run.getReadable()) chunks.push(chunk)
  expect(chunks).toEqual(['one', 'two'])
  expect(await run.returnValue).toBe('said')
})
