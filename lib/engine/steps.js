'use strict'
// Steps called from a workflow body: creation, attempts, retries, and the recorded
// outcome on replay. A step costs two round trips to the core: `step_created` and
// `step_started` in one batch (the attempt is on disk before the step's code runs), and
// the closing event (`step_completed`, `step_failed`, `step_retrying`), on disk before
// the workflow sees the outcome — so a step whose result the workflow acted on never
// runs again after a crash.

const { binding } = require('../native.js')
const { stepStore } = require('./context.js')
const { tagged, errorText, normalizeError, HALT } = require('./values.js')
const errors = require('../../errors.js')

const DEFAULT_MAX_RETRIES = 3

/** A value its serialization gives back as itself (no object identity to copy). */
function isPrimitive(v) {
  return v === null || (typeof v !== 'object' && typeof v !== 'function')
}

/** The error a failed step raises in the workflow (from its recorded event data). */
function stepError(data) {
  const d = data || {}
  const msg = typeof d.error === 'string' ? d.error : (d.error && d.error.message) || 'Step failed'
  const err = new errors.FatalError(msg)
  const stack = typeof d.stack === 'string' ? d.stack : d.error && d.error.stack
  if (stack) err.stack = stack
  return err
}

/**
 * The receiver a step call records, as the official does: a method call's object, not
 * `undefined`, `null` or the global object.
 */
function receiverOf(thisVal) {
  return thisVal !== undefined && thisVal !== null && thisVal !== globalThis ? thisVal : undefined
}

/** The step's retries: its `maxRetries` property when the call is made (as the official reads it). */
function maxRetriesOf(def) {
  const n = def.maxRetries
  return typeof n === 'number' && n >= 0 ? n : DEFAULT_MAX_RETRIES
}

/** A step called from the workflow body of `exec` (`thisVal`: the call's receiver). */
async function callStep(exec, def, args, thisVal) {
  let receiver = receiverOf(thisVal)
  const inv = exec.claim('step', def.stepName, `step "${def.stepName}"`)
  if (inv === HALT) return exec.halt()
  let stepId
  let freshInput
  if (inv) {
    stepId = inv.corr
  } else {
    stepId = `step_${binding.newUlid()}`
    try {
      freshInput = tagged(exec.serialize({ args, closureVars: undefined, thisVal: receiver }, 'step arguments'))
    } catch (e) {
      // A receiver that cannot be serialized (a module's exports: `steps.charge()`,
      // `require('workflow-native/workflow').fetch()`) is left out rather than failing
      // the call — the official bundler calls such steps directly, with no receiver.
      let withoutReceiver
      if (receiver !== undefined) {
        try {
          withoutReceiver = tagged(exec.serialize({ args, closureVars: undefined, thisVal: undefined }, 'step arguments'))
        } catch {
          // the arguments themselves cannot be serialized
        }
      }
      if (withoutReceiver === undefined) return unserializableStep(exec, def, stepId, e)
      freshInput = withoutReceiver
      receiver = undefined
    }
    exec.flushOps()
    // Written in one batch with the step_started the attempt awaits below.
    exec.writeBackground(
      'step_created',
      stepId,
      {
        stepName: def.stepName,
        workflowName: exec.workflowName,
        input: freshInput,
      },
      true,
    )
  }
  const recorded = exec.log.events(stepId)
  const created = recorded.find((e) => e.eventType === 'step_created')
  const completed = recorded.find((e) => e.eventType === 'step_completed')
  const failed = recorded.find((e) => e.eventType === 'step_failed')
  if (completed || failed) {
    await exec.log.outcome(stepId, () => exec.stopped)
    if (exec.stopped) return exec.halt()
    if (completed) return exec.hydrate(completed.eventData && completed.eventData.result)
    throw stepError(failed.eventData)
  }
  let startedAt
  let lastRetry
  for (const e of recorded) {
    if (e.eventType === 'step_started' && startedAt === undefined) startedAt = Date.parse(e.createdAt)
    if (e.eventType === 'step_retrying') lastRetry = e
  }
  if (lastRetry && lastRetry.eventData && lastRetry.eventData.retryAfter) {
    const at = Date.parse(lastRetry.eventData.retryAfter)
    if (at > exec.engine.clock.now() && !(await exec.wait(at))) return exec.halt()
  }
  // Each attempt gets its own copy of the arguments, from the recorded input.
  const input = freshInput || (created && created.eventData && created.eventData.input)
  // `{ args, thisVal }` of an attempt; the step runs with `this` = the recorded receiver
  // (null without one, as the official applies it)
  const argsOf = () => {
    // Primitives come back from their serialization as themselves: a copy of the array
    // is the same copy, without the round trip through bytes.
    if (freshInput && receiver === undefined && args.every(isPrimitive)) return { args: args.slice(), thisVal: null }
    const stored = input && exec.hydrate(input)
    // The placeholder of a step whose arguments could not be serialized (its step_failed
    // not written yet: a crash in between): never run the code with it, fail the step.
    if (stored && typeof stored === 'object' && stored.__workflowUnserializableStepInput === true) {
      throw new errors.FatalError(UNSERIALIZABLE_MESSAGE)
    }
    if (!stored || !Array.isArray(stored.args)) return { args, thisVal: receiver ?? null }
    return { args: stored.args, thisVal: stored.thisVal ?? null }
  }
  return attempts(exec, def, stepId, argsOf, startedAt, freshInput !== undefined)
}

/** The official step handler's error for the placeholder input (`formatSerializationError`). */
const UNSERIALIZABLE_MESSAGE =
  "Failed to serialize step arguments. Ensure you're passing serializable types (plain objects, arrays, primitives, Date, RegExp, Map, Set)."

/** What the official writes for a step its arguments could not be serialized for. */
const UNSERIALIZABLE_INPUT = {
  args: ['[input unavailable: step argument serialization failed]'],
  closureVars: [],
  thisVal: undefined,
  __workflowUnserializableStepInput: true,
}

/**
 * A step whose arguments cannot be serialized fails like a step whose code threw a
 * FatalError, as the official does: `step_created` with a placeholder input, then
 * `step_failed` with the serialization error; the workflow can catch it, and uncaught
 * it fails the run as the workflow's own error.
 */
async function unserializableStep(exec, def, stepId, err) {
  const message = errorText(err)
  const stack = err instanceof Error && err.stack ? err.stack : undefined
  exec.flushOps()
  exec.writeBackground(
    'step_created',
    stepId,
    { stepName: def.stepName, workflowName: exec.workflowName, input: tagged(exec.serialize(UNSERIALIZABLE_INPUT)) },
    true,
  )
  const failed = await exec.record('step_failed', stepId, { stepName: def.stepName, error: message, stack }, true)
  if (failed === HALT) return exec.halt()
  throw stepError({ error: message, stack })
}

async function attempts(exec, def, stepId, argsOf, firstStartedAt, fresh) {
  const maxRetries = maxRetriesOf(def)
  // (a fresh step's first start commits the invocation with its creation)
  let first = fresh
  for (;;) {
    if (exec.stopped) return exec.halt()
    // A run draining here (its worker stopping) starts no new attempt.
    if (exec.draining) {
      exec.drain(exec.draining)
      return exec.halt()
    }
    let started
    try {
      const invocation = first
      first = false
      started = await exec.record('step_started', stepId, { stepName: def.stepName }, invocation)
    } catch (e) {
      if (e && e.name === 'TooEarlyError') {
        // the timer fired a little before the world's clock reached retryAfter
        const until = e.retryAfter ? new Date(e.retryAfter).getTime() : Date.now() + 1000
        if (!(await exec.wait(Math.max(until, Date.now()) + 5))) return exec.halt()
        continue
      }
      throw e
    }
    if (started === HALT) return exec.halt()
    const step = started.step || {}
    const attempt = step.attempt || 1
    const stepStartedAt = firstStartedAt ?? (step.startedAt ? Date.parse(step.startedAt) : Date.now())
    if (attempt > maxRetries + 1) {
      // (counted as the official counts them: every attempt made but the first)
      const retries = attempt - 1
      const message = `Step "${def.stepName}" exceeded max retries (${retries} ${retries === 1 ? 'retry' : 'retries'})`
      if ((await exec.record('step_failed', stepId, { stepName: def.stepName, error: message })) === HALT) {
        return exec.halt()
      }
      throw new errors.FatalError(message)
    }
    // In flight from here until its closing event is written: a draining run waits for it.
    exec.attemptBegan()
    let next
    try {
      next = await runAttempt(exec, def, stepId, argsOf, stepStartedAt, attempt, maxRetries)
    } finally {
      exec.attemptEnded()
    }
    if (next.halt) return exec.halt()
    if ('value' in next) return next.value
    if (next.error) throw next.error
    if (!(await exec.wait(next.retryAt))) return exec.halt()
  }
}

/**
 * One attempt: the step's code, then its closing event. Resolves to `{ value }`, `{ error }`
 * (thrown into the workflow), `{ retryAt }` (retried then) or `{ halt: true }`.
 */
async function runAttempt(exec, def, stepId, argsOf, stepStartedAt, attempt, maxRetries) {
  const ops = []
  const meta = { exec, stepName: def.stepName, stepId, stepStartedAt: new Date(stepStartedAt), attempt, ops }
  let result
  let failure
  let ok = false
  exec.engine.busy++
  try {
    const { args, thisVal } = stepStore.run(meta, argsOf)
    result = await stepStore.run(meta, () => def.fn.apply(thisVal, args))
    if (ops.length > 0) await Promise.all(ops)
    ok = true
  } catch (err) {
    failure = err
  } finally {
    exec.engine.busy--
    exec.engine.clock.poke()
  }
  if (exec.stopped) return { halt: true }
  if (ok) {
    let bytes
    try {
      bytes = exec.serialize(result, 'step return value')
    } catch (e) {
      failure = e
      ok = false
    }
    if (ok) {
      exec.flushOps()
      const done = await exec.record('step_completed', stepId, {
        stepName: def.stepName,
        workflowName: exec.workflowName,
        result: tagged(bytes),
      })
      if (done === HALT) return { halt: true }
      // (a primitive comes back from its serialization as itself)
      return { value: isPrimitive(result) ? result : exec.hydrateBytes(bytes) }
    }
  }
  const { message, stack } = await normalizeError(failure)
  if (errors.FatalError.is(failure)) {
    if ((await exec.record('step_failed', stepId, { stepName: def.stepName, error: message, stack })) === HALT) {
      return { halt: true }
    }
    return { error: stepError({ error: message, stack }) }
  }
  if (attempt >= maxRetries + 1) {
    const full = `Step "${def.stepName}" failed after ${maxRetries} ${maxRetries === 1 ? 'retry' : 'retries'}: ${message}`
    if ((await exec.record('step_failed', stepId, { stepName: def.stepName, error: full, stack })) === HALT) {
      return { halt: true }
    }
    return { error: stepError({ error: full, stack }) }
  }
  const retryable = errors.RetryableError.is(failure) && failure.retryAfter instanceof Date
  const data = { stepName: def.stepName, error: message, stack }
  // In virtual time the world (which checks retryAfter against the real clock) would
  // refuse the early restart, so the delay is kept by the engine only.
  if (retryable && !exec.engine.clock.virtual) data.retryAfter = failure.retryAfter.toISOString()
  if ((await exec.record('step_retrying', stepId, data)) === HALT) return { halt: true }
  // The official runtime redelivers after max(1 s, retryAfter - now).
  // Whole seconds, as the official queue delays the retry: max(1, ceil(retryAfter - now)).
  const now = exec.engine.clock.now()
  const seconds = retryable ? Math.max(1, Math.ceil((failure.retryAfter.getTime() - now) / 1000)) : 1
  return { retryAt: now + seconds * 1000 }
}

module.exports = { callStep }
