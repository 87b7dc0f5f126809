'use strict'
// workflow-native/workflow: declare durable workflows and steps without a compiler and run
// them in this process (the embedded engine), on the local data directory.
//
//   const { workflow, step, sleep } = require('workflow-native/workflow')
//   const add = step('add', async (a, b) => a + b)
//   const sum = workflow('sum', async (a, b) => { await sleep('1s'); return add(a, b) })
//   const run = await start(sum, [1, 2])   // start from workflow-native/api

const { binding } = require('./lib/native.js')
const { workflowStore, stepStore, declaredSteps } = require('./lib/engine/context.js')
const { getEngine } = require('./lib/engine/engine.js')
const { resumeHook } = require('./lib/hooks.js')
const errors = require('./errors.js')
const { invalidArgType, outOfRange, optionsObject, optionalString, requireString } = require('./lib/validate.js')
const { durationToDate } = require('./lib/duration.js')

const ENGINE_DEF = Symbol.for('workflow-native.engine.workflow')
const STREAM_NAME = Symbol.for('WORKFLOW_STREAM_NAME')
const NAME_RE = /^[A-Za-z0-9_\-.@()[\]/]+$/

function checkName(kind, name) {
  requireString('name', name)
  if (name.length === 0 || !NAME_RE.test(name)) {
    throw new TypeError(
      `${kind} name must be a non-empty string of letters, digits and _ - . @ ( ) [ ] /, received ${JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}…` : name)}`,
    )
  }
}

/**
 * Declares a workflow. `start(theWorkflow, args)` from workflow-native/api runs it in this
 * process; `theWorkflow.workflowId` is its name in the event log (`workflow//native//<name>`
 * unless `options.id` is given). Calling it directly runs the function as plain code.
 */
function workflow(name, fn, options) {
  checkName('Workflow', name)
  if (typeof fn !== 'function') throw invalidArgType('fn', 'of type function', fn)
  options = optionsObject('options', options)
  const workflowId = optionalString('options.id', options.id) ?? `workflow//native//${name}`
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
function step(name, fn, options) {
  checkName('Step', name)
  if (typeof fn !== 'function') throw invalidArgType('fn', 'of type function', fn)
  options = optionsObject('options', options)
  const stepName = optionalString('options.id', options.id) ?? `step//native//${name}`
  const maxRetries = options.maxRetries
  if (maxRetries !== undefined && !(Number.isInteger(maxRetries) && maxRetries >= 0)) {
    throw new TypeError(`maxRetries must be a non-negative integer, received ${maxRetries}`)
  }
  const s = function (...args) {
    if (stepStore.getStore()) return fn.apply(this, args)
    const w = workflowStore.getStore()
    if (!w) return fn.apply(this, args)
    return w.exec.step(def, args, this)
  }
  // `maxRetries` is read from the step function when a call is made (the official reads
  // `stepFn.maxRetries`): `myStep.maxRetries = 5` after declaring it applies too.
  const def = {
    stepName,
    fn,
    get maxRetries() {
      return s.maxRetries
    },
  }
  Object.defineProperty(s, 'name', { value: name })
  s.stepId = def.stepName
  if (maxRetries !== undefined) s.maxRetries = maxRetries
  declaredSteps.set(def.stepName, s)
  return s
}

// WDK's built-in steps: in a workflow body a Request's or Response's body is read by a
// step (`__builtin_response_json` …, called with the object as its receiver), so the
// read is recorded, replayed and repeatable (see the engine's revivers).
for (const [id, read] of [
  ['__builtin_response_array_buffer', (r) => r.arrayBuffer()],
  ['__builtin_response_json', (r) => r.json()],
  ['__builtin_response_text', (r) => r.text()],
]) {
  step(
    id,
    async function () {
      return read(this)
    },
    { id },
  )
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

/** `createHook()` / `createWebhook()` options: an object whose `token`, if any, is a string. */
function hookOptions(options) {
  const opts = optionsObject('options', options)
  optionalString('options.token', opts.token)
  return opts
}

function createHook(options) {
  const exec = execOrThrow('`createHook()` can only be called inside a workflow function')
  hookOptions(options)
  return exec.createHook(options, options && options.isWebhook === true)
}

function createWebhook(options) {
  const exec = execOrThrow('`createWebhook()` can only be called inside a workflow function')
  const { respondWith, token, ...rest } = optionsObject('options', options)
  if (token !== undefined) {
    throw new Error(
      '`createWebhook()` does not accept a `token` option. Webhook tokens are always randomly generated. Use `createHook()` with `resumeHook()` for deterministic token patterns.',
    )
  }
  if (respondWith === 'manual') {
    // (not supported: refused here rather than leaving resumeWebhook() callers waiting
    // for a response no step can write)
    throw new Error(
      "`createWebhook({ respondWith: 'manual' })` is not supported by the workflow-native engine: use the default (202) or a static Response.",
    )
  }
  const metadata = respondWith === undefined ? undefined : { respondWith }
  return exec.createHook({ ...rest, metadata }, true)
}

/** A typed hook: `create()` inside a workflow, `resume()` from outside (schema-validated). */
function defineHook(options) {
  const { schema } = optionsObject('options', options)
  return {
    create(options) {
      execOrThrow('`defineHook().create()` can only be called inside a workflow function.')
      return createHook(options)
    },
    resume(token, payload) {
      // (in a workflow body WDK's sandbox version throws synchronously)
      if (workflowStore.getStore() && !stepStore.getStore()) {
        throw new Error('`defineHook().resume()` can only be called from external contexts (e.g. API routes).')
      }
      return (async () => {
        if (!schema || !schema['~standard']) return resumeHook(token, payload)
        let result = schema['~standard'].validate(payload)
        if (result instanceof Promise) result = await result
        if (result.issues) throw new Error(JSON.stringify(result.issues, null, 2))
        return resumeHook(token, result.value)
      })()
    },
  }
}

/**
 * The run's stream (`namespace` optional). In a step: a WritableStream whose values are
 * appended to the run's stream. In the workflow body: a handle to pass to steps.
 */
function getWritable(options) {
  const s = stepStore.getStore()
  const w = workflowStore.getStore()
  if (!w) throw new Error('`getWritable()` can only be called inside a workflow or step function')
  const ns = streamNamespace(optionsObject('options', options).namespace)
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

/**
 * A stream namespace as the official getWritable() takes it: none when falsy, else a
 * string (the official code hands anything else to Buffer.from, which throws for most).
 */
function streamNamespace(namespace) {
  if (!namespace) return undefined
  if (typeof namespace === 'string') return namespace
  // The official code encodes it with Buffer.from: the same TypeError for what that rejects.
  Buffer.from(namespace, 'utf-8')
  // Array-likes and buffers it would encode as bytes: not a namespace.
  throw invalidArgType('options.namespace', 'of type string', namespace)
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

/**
 * Resumes the pending and running runs of the workflows declared in this process.
 * Resolves to their ids; a run that cannot be resumed (a run file, a file of its log or
 * its lease that cannot be read) is logged, listed in the array's `failures` property and
 * passed to `options.onError`, and never keeps the other runs from resuming.
 */
async function resumeRuns(options) {
  const opts = optionsObject('options', options)
  if (opts.onError !== undefined && typeof opts.onError !== 'function') {
    throw invalidArgType('options.onError', 'of type function', opts.onError)
  }
  return getEngine().resumeRuns(opts)
}

/** A positive integer option (or Infinity when `infinite`), checked. */
function positiveOption(name, value, fallback, { min = 1, infinite = false } = {}) {
  if (value === undefined) return fallback
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value)
  if (infinite && value === Infinity) return value
  if (!Number.isInteger(value) || value < min || value > 2 ** 31 - 1) {
    throw outOfRange(name, `an integer from ${min} to ${2 ** 31 - 1}${infinite ? ', or Infinity' : ''}`, value)
  }
  return value
}

/**
 * Makes this process a worker for the workflows declared in it, on the local data
 * directory: it resumes what a restart interrupted, then keeps claiming pending and
 * running runs that no live process executes (a run whose process was killed continues
 * here from its log). `stop()` drains: attempts in flight finish and their outcome is
 * written, no new attempt starts, leases are released.
 */
function startWorker(options) {
  const opts = optionsObject('options', options)
  if (opts.onError !== undefined && typeof opts.onError !== 'function') {
    throw invalidArgType('options.onError', 'of type function', opts.onError)
  }
  const concurrency = positiveOption('options.concurrency', opts.concurrency, 100, { infinite: true })
  const leaseMs = positiveOption('options.leaseMs', opts.leaseMs, 30_000, { min: 100 })
  const pollMs = positiveOption('options.pollMs', opts.pollMs, Math.min(5_000, Math.max(50, Math.floor(leaseMs / 2))), {
    min: 10,
  })
  const { resolveWorld } = require('./lib/world.js')
  const { world, error } = resolveWorld()
  if (error) throw error
  return require('./lib/engine/worker.js').startWorker(getEngine(), {
    concurrency,
    leaseMs,
    pollMs,
    onError: opts.onError,
  })
}

/**
 * Virtual time for tests: durable sleeps and step retry delays no longer wait in real
 * time. With `auto` (default) they complete as soon as nothing else in the engine is
 * running, in due order; with `{ auto: false }` only `advanceTime()` moves the clock.
 */
function useVirtualTime(options) {
  const opts = optionsObject('options', options)
  if (opts.auto !== undefined && typeof opts.auto !== 'boolean') {
    throw invalidArgType('options.auto', 'of type boolean', opts.auto)
  }
  getEngine().clock.useVirtual(opts)
}

function useRealTime() {
  getEngine().clock.useReal()
}

/** Moves virtual time forward, firing every sleep and retry delay that falls due. */
async function advanceTime(duration) {
  if (typeof duration !== 'number' && typeof duration !== 'string') {
    throw invalidArgType('duration', 'of type number or string', duration)
  }
  // Read as sleep() reads a duration (same errors for a bad one).
  const ms = durationToDate(duration, 0).getTime()
  if (!Number.isFinite(ms)) throw outOfRange('duration', 'a duration a Date can hold', duration)
  await getEngine().clock.advance(ms)
}

/** Resolves once run `runId` (executing in this process) is in a durable sleep. */
async function nextSleep(runOrId) {
  const runId =
    runOrId !== null && typeof runOrId === 'object' ? requireString('runOrId.runId', runOrId.runId) : runOrId
  if (typeof runId !== 'string') throw invalidArgType('runOrId', 'a run id (string) or a Run', runOrId)
  return getEngine().nextSleep(runId)
}

// One assignment per export, so Node's detection of CommonJS exports (cjs-module-lexer)
// sees every name and ESM can import each by name.
exports.workflow = workflow
exports.step = step
exports.sleep = sleep
exports.createHook = createHook
exports.createWebhook = createWebhook
exports.defineHook = defineHook
exports.getWritable = getWritable
exports.getStepMetadata = getStepMetadata
exports.getWorkflowMetadata = getWorkflowMetadata
exports.fetch = fetchStep
exports.FatalError = errors.FatalError
exports.RetryableError = errors.RetryableError
exports.resumeRuns = resumeRuns
exports.startWorker = startWorker
exports.useVirtualTime = useVirtualTime
exports.useRealTime = useRealTime
exports.advanceTime = advanceTime
exports.nextSleep = nextSleep
