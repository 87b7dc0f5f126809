// Values crossing a step boundary on the embedded engine: a step's arguments and its return
// value reach the other side as their serialization gives them back. Primitives (the
// engine hands them over without the round trip through bytes) arrive as themselves,
// -0, NaN, bigints and undefined included; objects arrive as copies, so neither side
// sees the other's later mutations; and the official World reads the same values from
// the log.
import { official } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import wf from '../workflow.js'
import api from '../index.js'

const { workflow, step } = wf

const seen = []
const echo = step('values-echo', async (...args) => {
  seen.push(args)
  return args.length === 1 ? args[0] : args
})
const mutateArg = step('values-mutate-arg', async (obj) => {
  obj.touchedByStep = true
  return obj
})
const PRIMITIVES = [0, -0, 1.5, NaN, Infinity, -Infinity, 10n ** 30n, '', 'text', true, false, null, undefined]

const primitives = workflow('values-primitives', async (values) => {
  const back = []
  for (const v of values) back.push(await echo(v))
  // several arguments at once, primitives only
  const many = await echo(...values)
  return { back, many }
})

const copies = workflow('values-copies', async () => {
  const original = { n: 1, nested: { list: [1, 2] } }
  const returned = await mutateArg(original)
  const sawMutation = 'touchedByStep' in original
  returned.nested.list.push(3)
  const again = await echo(returned)
  return { sawMutation, returned, again, originalList: original.nested.list }
})

test('primitive arguments and results cross a step as themselves (-0, NaN, bigint, undefined)', async () => {
  seen.length = 0
  const run = await api.start(primitives, [PRIMITIVES])
  const out = await run.returnValue
  assert.equal(out.back.length, PRIMITIVES.length)
  for (let i = 0; i < PRIMITIVES.length; i++) {
    assert.ok(Object.is(out.back[i], PRIMITIVES[i]), `value ${i}: ${String(out.back[i])}`)
    assert.ok(Object.is(seen[i][0], PRIMITIVES[i]), `argument ${i} as the step saw it`)
  }
  assert.equal(out.many.length, PRIMITIVES.length)
  for (let i = 0; i < PRIMITIVES.length; i++) assert.ok(Object.is(out.many[i], PRIMITIVES[i]))
  // the official World reads the same result from the log
  const viaOfficial = await official.getRun(run.runId).returnValue
  for (let i = 0; i < PRIMITIVES.length; i++) assert.ok(Object.is(viaOfficial.back[i], PRIMITIVES[i]))
})

test('objects cross a step as copies: neither side sees the other mutate them', async () => {
  const run = await api.start(copies, [])
  const out = await run.returnValue
  assert.equal(out.sawMutation, false, "the step's mutation of its argument did not reach the workflow's object")
  assert.deepEqual(out.returned, { n: 1, nested: { list: [1, 2, 3] }, touchedByStep: true })
  assert.deepEqual(out.again, { n: 1, nested: { list: [1, 2, 3] }, touchedByStep: true })
  assert.deepEqual(out.originalList, [1, 2])
})
