'use strict'

const { durationToDate } = require('./lib/duration.js')
// Error classes with the names, messages and fields of `workflow/errors` (@workflow/errors
// 4.2.1) and world-local's own errors. `X.is(err)` compares `name`, as WDK does, so errors
// thrown by either package are recognised by the other's checks.

const DOCS = 'https://useworkflow.dev/err'

function hasName(value, name) {
  return (
    typeof value === 'object' &&
    value !== null &&
    'name' in value &&
    'message' in value &&
    value.name === name
  )
}

class WorkflowError extends Error {
  // A defined (enumerable) own field, like the official class field.
  cause
  constructor(message, options) {
    const text = options && options.slug ? `${message}\n\nLearn more: ${DOCS}/${options.slug}` : message
    super(text, { cause: options && options.cause })
    this.cause = options && options.cause
    if (options && options.cause instanceof Error) {
      this.stack = `${this.stack}\nCaused by: ${options.cause.stack}`
    }
  }
  static is(value) {
    return hasName(value, 'WorkflowError')
  }
}

/** Defines `class Name extends Base` whose constructor names itself and whose `is` checks it. */
function named(Base, name, init) {
  const cls = {
    [name]: class extends Base {
      constructor(...args) {
        super(...init.args(...args))
        this.name = name
        if (init.fields) Object.assign(this, init.fields(...args))
      }
      static is(value) {
        return hasName(value, name)
      }
    },
  }[name]
  return cls
}

const passMessage = { args: (message, options) => [message, options] }

class WorkflowWorldError extends WorkflowError {
  constructor(message, options) {
    super(message, { cause: options && options.cause })
    this.name = 'WorkflowWorldError'
    this.status = options && options.status
    this.code = options && options.code
    this.url = options && options.url
    this.retryAfter = options && options.retryAfter
  }
  static is(value) {
    return hasName(value, 'WorkflowWorldError')
  }
}

const EntityConflictError = named(WorkflowWorldError, 'EntityConflictError', passMessage)
const RunExpiredError = named(WorkflowWorldError, 'RunExpiredError', passMessage)
const TooEarlyError = named(WorkflowWorldError, 'TooEarlyError', {
  args: (message, options) => [message, { retryAfter: options && options.retryAfter }],
})
const ThrottleError = named(WorkflowWorldError, 'ThrottleError', {
  args: (message) => [message],
  fields: (_m, options) => ({ retryAfter: options && options.retryAfter }),
})
const PreconditionFailedError = named(WorkflowWorldError, 'PreconditionFailedError', {
  args: (message, options) => [message, { status: 412, retryAfter: options && options.retryAfter }],
})

/** world-local's error for ids that would escape the data directory. */
class UnsafeEntityIdError extends WorkflowWorldError {
  constructor(kind, value) {
    // One argument = an already formatted message (as the native layer produces it).
    const message =
      value === undefined
        ? kind
        : `Unsafe ${kind} "${truncate(value)}": must not be empty, contain ".", "/", "\\", or null bytes`
    super(message)
    this.name = 'UnsafeEntityIdError'
  }
  static is(value) {
    return value instanceof Error && value.name === 'UnsafeEntityIdError'
  }
}

function truncate(value) {
  const s = typeof value === 'string' ? value : String(value)
  return s.length > 48 ? `${s.slice(0, 48)}…` : s
}

const WorkflowRunNotFoundError = named(WorkflowError, 'WorkflowRunNotFoundError', {
  args: (runId) => [`Workflow run "${runId}" not found`, {}],
  fields: (runId) => ({ runId }),
})

class WorkflowRunFailedError extends WorkflowError {
  constructor(runId, error) {
    const cause = new Error(error.message)
    if (error.stack) cause.stack = error.stack
    if (error.code) cause.code = error.code
    super(`Workflow run "${runId}" failed: ${error.message}`, { cause })
    this.name = 'WorkflowRunFailedError'
    this.runId = runId
  }
  static is(value) {
    return hasName(value, 'WorkflowRunFailedError')
  }
}

const WorkflowRunCancelledError = named(WorkflowError, 'WorkflowRunCancelledError', {
  args: (runId) => [`Workflow run "${runId}" cancelled`, {}],
  fields: (runId) => ({ runId }),
})
const WorkflowRunNotCompletedError = named(WorkflowError, 'WorkflowRunNotCompletedError', {
  args: (runId) => [`Workflow run "${runId}" has not completed`, {}],
  fields: (runId, status) => ({ runId, status }),
})
const HookNotFoundError = named(WorkflowError, 'HookNotFoundError', {
  args: () => ['Hook not found', {}],
  fields: (token) => ({ token }),
})
const HookConflictError = named(WorkflowError, 'HookConflictError', {
  args: (token, conflictingRunId) => [
    `Hook token "${token}" is already in use by another workflow${conflictingRunId ? ` (run "${conflictingRunId}")` : ''}`,
    { slug: 'hook-conflict' },
  ],
  fields: (token, conflictingRunId) => ({ token, conflictingRunId }),
})
const RunNotSupportedError = named(WorkflowError, 'RunNotSupportedError', {
  args: (runSpecVersion, worldSpecVersion) => [
    `Run requires spec version ${runSpecVersion}, but world supports version ${worldSpecVersion}. Please upgrade 'workflow' package.`,
    {},
  ],
  fields: (runSpecVersion, worldSpecVersion) => ({ runSpecVersion, worldSpecVersion }),
})
const MaxEventsExceededError = named(WorkflowError, 'MaxEventsExceededError', {
  args: (eventCount, limit, options) => [`Workflow exceeded the maximum of ${limit} events per run`, options],
  fields: (eventCount, limit) => ({ eventCount, limit }),
})

const WorkflowRuntimeError = named(WorkflowError, 'WorkflowRuntimeError', {
  args: (message, options) => [message, { ...options }],
})
const CorruptedEventLogError = named(WorkflowRuntimeError, 'CorruptedEventLogError', {
  args: (message, options) => [message, { ...options, slug: 'corrupted-event-log' }],
})
const ReplayDivergenceError = named(WorkflowRuntimeError, 'ReplayDivergenceError', {
  args: (message, options) => [message, { ...options, slug: 'replay-divergence' }],
  fields: (_m, options) => ({ eventId: options && options.eventId }),
})
const RuntimeDecryptionError = named(WorkflowRuntimeError, 'RuntimeDecryptionError', {
  args: (message, options) => [message, { cause: options && options.cause, slug: 'runtime-decryption-failed' }],
  fields: (_m, options) => (options && options.context !== undefined ? { context: options.context } : {}),
})
const StepNotRegisteredError = named(WorkflowRuntimeError, 'StepNotRegisteredError', {
  args: (stepName) => [
    `Step "${stepName}" is not registered in the current deployment. This usually indicates a build or bundling issue that caused the step to not be included in the deployment.`,
    { slug: 'step-not-registered' },
  ],
  fields: (stepName) => ({ stepName }),
})
const WorkflowNotRegisteredError = named(WorkflowRuntimeError, 'WorkflowNotRegisteredError', {
  args: (workflowName) => [
    `Workflow "${workflowName}" is not registered in the current deployment. This usually means a run was started against a deployment that does not have this workflow, or there was a build/bundling issue.`,
    { slug: 'workflow-not-registered' },
  ],
  fields: (workflowName) => ({ workflowName }),
})

class FatalError extends Error {
  constructor(message) {
    super(message)
    this.name = 'FatalError'
    this.fatal = true
  }
  static is(value) {
    return hasName(value, 'FatalError')
  }
}

class RetryableError extends Error {
  constructor(message, options = {}) {
    super(message)
    this.name = 'RetryableError'
    const ra = options.retryAfter
    // (only an absent retryAfter defaults to 1 s: null is parsed, and refused, as the official does)
    this.retryAfter = ra === undefined ? new Date(Date.now() + 1000) : durationToDate(ra)
  }
  static is(value) {
    return hasName(value, 'RetryableError')
  }
}

// Named exports for ESM importers (cjs-module-lexer sees these assignments).
exports.WorkflowError = WorkflowError
exports.WorkflowWorldError = WorkflowWorldError
exports.EntityConflictError = EntityConflictError
exports.RunExpiredError = RunExpiredError
exports.TooEarlyError = TooEarlyError
exports.ThrottleError = ThrottleError
exports.PreconditionFailedError = PreconditionFailedError
exports.UnsafeEntityIdError = UnsafeEntityIdError
exports.WorkflowRunNotFoundError = WorkflowRunNotFoundError
exports.WorkflowRunFailedError = WorkflowRunFailedError
exports.WorkflowRunCancelledError = WorkflowRunCancelledError
exports.WorkflowRunNotCompletedError = WorkflowRunNotCompletedError
exports.HookNotFoundError = HookNotFoundError
exports.HookConflictError = HookConflictError
exports.RunNotSupportedError = RunNotSupportedError
exports.MaxEventsExceededError = MaxEventsExceededError
exports.WorkflowRuntimeError = WorkflowRuntimeError
exports.CorruptedEventLogError = CorruptedEventLogError
exports.ReplayDivergenceError = ReplayDivergenceError
exports.RuntimeDecryptionError = RuntimeDecryptionError
exports.StepNotRegisteredError = StepNotRegisteredError
exports.WorkflowNotRegisteredError = WorkflowNotRegisteredError
exports.FatalError = FatalError
exports.RetryableError = RetryableError
