// Error classes of workflow-native, with the names and messages of `workflow/errors`
// (@workflow/errors 4.2.1). `X.is(value)` compares `name`, so errors of either package
// are recognised by the other's checks.

type Slug = string

export declare class WorkflowError extends Error {
  readonly cause?: unknown
  constructor(message: string, options?: { slug?: Slug; cause?: unknown })
  static is(value: unknown): value is WorkflowError
}
export declare class WorkflowWorldError extends WorkflowError {
  status?: number
  code?: string
  url?: string
  retryAfter?: number
  constructor(message: string, options?: { status?: number; url?: string; code?: string; retryAfter?: number; cause?: unknown })
  static is(value: unknown): value is WorkflowWorldError
}
export declare class EntityConflictError extends WorkflowWorldError {
  static is(value: unknown): value is EntityConflictError
}
export declare class RunExpiredError extends WorkflowWorldError {
  static is(value: unknown): value is RunExpiredError
}
export declare class TooEarlyError extends WorkflowWorldError {
  constructor(message: string, options?: { retryAfter?: number })
  static is(value: unknown): value is TooEarlyError
}
export declare class ThrottleError extends WorkflowWorldError {
  constructor(message: string, options?: { retryAfter?: number })
  static is(value: unknown): value is ThrottleError
}
export declare class PreconditionFailedError extends WorkflowWorldError {
  constructor(message: string, options?: { retryAfter?: number })
  static is(value: unknown): value is PreconditionFailedError
}
/** world-local's error for ids that are empty or contain ".", "/", "\" or NUL. */
export declare class UnsafeEntityIdError extends WorkflowWorldError {
  constructor(kind: string, value: string)
  static is(value: unknown): value is UnsafeEntityIdError
}
export declare class WorkflowRunNotFoundError extends WorkflowError {
  runId: string
  constructor(runId: string)
  static is(value: unknown): value is WorkflowRunNotFoundError
}
export declare class WorkflowRunFailedError extends WorkflowError {
  runId: string
  cause: Error & { code?: string }
  constructor(runId: string, error: { message: string; stack?: string; code?: string })
  static is(value: unknown): value is WorkflowRunFailedError
}
export declare class WorkflowRunCancelledError extends WorkflowError {
  runId: string
  constructor(runId: string)
  static is(value: unknown): value is WorkflowRunCancelledError
}
export declare class WorkflowRunNotCompletedError extends WorkflowError {
  runId: string
  status: string
  constructor(runId: string, status: string)
  static is(value: unknown): value is WorkflowRunNotCompletedError
}
export declare class HookNotFoundError extends WorkflowError {
  token: string
  constructor(token: string)
  static is(value: unknown): value is HookNotFoundError
}
export declare class HookConflictError extends WorkflowError {
  token: string
  conflictingRunId?: string
  constructor(token: string, conflictingRunId?: string)
  static is(value: unknown): value is HookConflictError
}
export declare class RunNotSupportedError extends WorkflowError {
  runSpecVersion: number
  worldSpecVersion: number
  constructor(runSpecVersion: number, worldSpecVersion: number)
  static is(value: unknown): value is RunNotSupportedError
}
export declare class MaxEventsExceededError extends WorkflowError {
  readonly eventCount: number
  readonly limit: number
  constructor(eventCount: number, limit: number)
  static is(value: unknown): value is MaxEventsExceededError
}
export declare class WorkflowRuntimeError extends WorkflowError {
  constructor(message: string, options?: { slug?: Slug; cause?: unknown })
  static is(value: unknown): value is WorkflowRuntimeError
}
export declare class CorruptedEventLogError extends WorkflowRuntimeError {
  static is(value: unknown): value is CorruptedEventLogError
}
export declare class ReplayDivergenceError extends WorkflowRuntimeError {
  eventId?: string
  constructor(message: string, options: { eventId: string; cause?: unknown })
  static is(value: unknown): value is ReplayDivergenceError
}
export declare class RuntimeDecryptionError extends WorkflowRuntimeError {
  readonly context?: { operation?: 'encrypt' | 'decrypt'; byteLength?: number; formatPrefix?: string }
  static is(value: unknown): value is RuntimeDecryptionError
}
export declare class StepNotRegisteredError extends WorkflowRuntimeError {
  stepName: string
  constructor(stepName: string)
  static is(value: unknown): value is StepNotRegisteredError
}
export declare class WorkflowNotRegisteredError extends WorkflowRuntimeError {
  workflowName: string
  constructor(workflowName: string)
  static is(value: unknown): value is WorkflowNotRegisteredError
}
export declare class FatalError extends Error {
  fatal: true
  constructor(message: string)
  static is(value: unknown): value is FatalError
}
export declare class RetryableError extends Error {
  retryAfter: Date
  constructor(message: string, options?: { retryAfter?: number | string | Date })
  static is(value: unknown): value is RetryableError
}
