'use strict'
// workflow-native/workflow: declare durable workflows and steps without a compiler and run
// them in this process (the embedded engine), on the local data directory.
//
//   const { workflow, step, sleep } = require('workflow-native/workflow')
//   const add = step('add', async (a, b) => a + b)
//   const sum = workflow('sum', async (a, b) => { await sleep('1s'); return add(a, b) })
//   const run = await start(sum, [1, 2])   // start from workflow-native/api

const { binding } = require('./lib/native.js')
const { workflowStore, stepStore } = require('./lib/engine/context.js')
const { getEngine } = require('./lib/engine/engine.js')
const { resumeHook } = require('./lib/hooks.js')
const errors = require('./errors.js')

const ENGINE_DEF = Symbol.for('workflow-native.engine.workflow')
const STREAM_NAME = Symbol.for('WORKFLOW_STREAM_NAME')
const NAME_RE = /^[A-Za-z0-9_\-.@()[\]/]+$/

function checkName(kind, name) {
  if (typeof name !== 'string' || name.length === 0 || !NAME_RE.test(name)) {
    throw new TypeError(
      `${kind} name must be a non-empty string of letters, digits and _ - . @ ( ) [ ] /, received ${JSON.stringify(name)}`,
    )
  }
}

/**
 * Declares a workflow. `start(theWorkflow, args)` from workflow-native/api runs it in this
 * process; `theWorkflow.workflowId` is its name in the event log (`workflow//native//<name>`
 * unless `options.id` is given). Calling it directly runs the function as plain code.
 */
function workflow(name, fn, options = {}) {
  checkName('Workflow', name)
  if (typeof fn !== 'function') throw new TypeError('workflow() needs a function')
  const workflowId = options.id ?? `workflow//native//${name}`
  binding.workflowQueueName(workflowId, undefined) // validates the name like WDK
  const def = { workflowId, name, fn }
  const wf = function (...args) {
    return fn.apply(this, args)
  }
  Object.defineProperty(wf, 'name', { value: name })
  wf.workflowId = workflowId
  wf[ENGINE_DEF] = def
  getEngine().register(def)
  return wf
}

/**
 * Declares a step: inside a workflow, each call is durable (recorded, retried, replayed);
 * anywhere else (a unit test, another step) it simply runs.
 */
function step(name, fn, options = {}) {
  checkName('Step', name)
  if (typeof fn !== 'function') throw new TypeError('step() needs a function')
  const maxRetries = options.maxRetries
  if (maxRetries !== undefined && !(Number.isInteger(maxRetries) && maxRetries >= 0)) {
    throw new TypeError(`maxRetries must be a non-negative integer, received ${maxRetries}`)
  }
  const def = { stepName: options.id ?? `step//native//${name}`, fn, maxRetries }
  const s = function (...args) {
    if (stepStore.getStore()) return fn.apply(this, args)
    const w = workflowStore.getStore()
    if (!w) return fn.apply(this, args)
    return w.exec.step(def, args)
  }
  Object.defineProperty(s, 'name', { value: name })
  s.stepId = def.stepName
  if (maxRetries !== undefined) s.maxRetries = maxRetries
  return s
}

function execOrThrow(message) {
  const w = workflowStore.getStore()
  if (!w || stepStore.getStore()) throw new Error(message)
  return w.exec
}

/** A durable sleep: a duration ("1s", "5m", ms) or a Date. */
function sleep(param) {
  const exec = execOrThrow('`sleep()` can only be called inside a workflow function')
  return exec.sleep(param)
}

function createHook(options) {
  const exec = execOrThrow('`createHook()` can only be called inside a workflow function')
  return exec.createHook(options, options && options.isWebhook === true)
}

function createWebhook(options) {
  const exec = execOrThrow('`createWebhook()` can only be called inside a workflow function')
  const { respondWith, token, ...rest } = options ?? {}
  if (token !== undefined) {
    throw new Error(
      '`createWebhook()` does not accept a `token` option. Webhook tokens are always randomly generated. Use `createHook()` with `resumeHook()` for deterministic token patterns.',
    )
  }
  const metadata = respondWith === undefined ? undefined : { respondWith }
  return exec.createHook({ ...rest, metadata }, true)
}

/** A typed hook: `create()` inside a workflow, `resume()` from outside (schema-validated). */
function defineHook({ schema } = {}) {
  return {
    create(options) {
      execOrThrow('`defineHook().create()` can only be called inside a workflow function.')
      return createHook(options)
    },
    async resume(token, payload) {
      if (workflowStore.getStore() && !stepStore.getStore()) {
        throw new Error('`defineHook().resume()` can only be called from external contexts (e.g. API routes).')
      }
      if (!schema || !schema['~standard']) return resumeHook(token, payload)
      let result = schema['~standard'].validate(payload)
      if (result instanceof Promise) result = await result
      if (result.issues) throw new Error(JSON.stringify(result.issues, null, 2))
      return resumeHook(token, result.value)
    },
  }
}

/**
 * The run's stream (`namespace` optional). In a step: a WritableStream whose values are
 * appended to the run's stream. In the workflow body: a handle to pass to steps.
 */
function getWritable(options = {}) {
  const ns = options && typeof options.namespace === 'string' ? options.namespace : undefined
  const s = stepStore.getStore()
  const w = workflowStore.getStore()
  if (!w) throw new Error('`getWritable()` can only be called inside a workflow or step function')
  const name = binding.runStreamName(w.exec.runId, ns)
  // The step ends only once every write it made has landed.
  if (s) return w.exec.stepWritable(name, s.ops)
  const handle = new WritableStream({
    write() {
      throw new Error('A workflow function cannot write to getWritable() directly: pass it to a step and write there.')
    },
  })
  handle[STREAM_NAME] = name
  return handle
}

function getStepMetadata() {
  const s = stepStore.getStore()
  if (!s) throw new Error('`getStepMetadata()` can only be called inside a step function')
  return { stepName: s.stepName, stepId: s.stepId, stepStartedAt: s.stepStartedAt, attempt: s.attempt }
}

function getWorkflowMetadata() {
  const w = workflowStore.getStore()
  if (!w) throw new Error('`getWorkflowMetadata()` can only be called inside a workflow or step function')
  const env = process.env
  const url = env.VERCEL_URL ? `https://${env.VERCEL_URL}` : `http://localhost:${env.PORT || 3000}`
  return {
    workflowName: w.exec.workflowName,
    workflowRunId: w.exec.runId,
    workflowStartedAt: new Date(w.exec.log.runStartedAt),
    url,
  }
}

/** `fetch` as a step (recorded and retried like any step). */
const fetchStep = step('fetch', (...args) => globalThis.fetch(...args), { id: 'step//workflow-native//fetch' })

// ----------------------------------------------------------------- engine controls

/** Resumes the pending and running runs of the workflows declared in this process. */
function resumeRuns() {
  return getEngine().resumeRuns()
}

/**
 * Virtual time for tests: durable sleeps and step retry delays no longer wait in real
 * time. With `auto` (default) they complete as soon as nothing else in the engine is
 * running, in due order; with `{ auto: false }` only `advanceTime()` moves the clock.
 */
function useVirtualTime(options) {
  getEngine().clock.useVirtual(options)
}

function useRealTime() {
  getEngine().clock.useReal()
}

/** Moves virtual time forward, firing every sleep and retry delay that falls due. */
async function advanceTime(duration) {
  const ms = typeof duration === 'number' ? duration : require('ms')(String(duration))
  if (typeof ms !== 'number' || !(ms >= 0)) throw new Error(`Invalid duration: ${JSON.stringify(duration)}`)
  await getEngine().clock.advance(ms)
}

/** Resolves once run `runId` (executing in this process) is in a durable sleep. */
function nextSleep(runOrId) {
  const runId = typeof runOrId === 'string' ? runOrId : runOrId && runOrId.runId
  return getEngine().nextSleep(runId)
}

module.exports = {
  workflow,
  step,
  sleep,
  createHook,
  createWebhook,
  defineHook,
  getWritable,
  getStepMetadata,
  getWorkflowMetadata,
  fetch: fetchStep,
  FatalError: errors.FatalError,
  RetryableError: errors.RetryableError,
  resumeRuns,
  useVirtualTime,
  useRealTime,
  advanceTime,
  nextSleep,
}
