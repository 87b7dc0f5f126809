// workflow-native/workflow: durable workflows and steps declared without a compiler, run
// by the embedded engine in this process, on the local data directory or on PostgreSQL
// (WORKFLOW_TARGET_WORLD=@workflow/world-postgres: executed by startWorker() processes).

import type { FatalError as FatalErrorClass, RetryableError as RetryableErrorClass } from './errors'

/** A workflow declared with `workflow()`; `start()` from `workflow-native/api` accepts it. */
export interface EngineWorkflow<TArgs extends unknown[], TResult> {
  (...args: TArgs): Promise<TResult>
  /** `workflow//native//<name>` unless `options.id` was given. */
  readonly workflowId: string
}

export interface WorkflowOptions {
  /** The workflow's name in the event log (default `workflow//native//<name>`). */
  id?: string
}

export interface StepOptions {
  /** Retries after the first attempt (default 3, as in WDK). */
  maxRetries?: number
  /** The step's name in the event log (default `step//native//<name>`). */
  id?: string
}

/**
 * Declares a workflow. `name`: letters, digits and `_ - . @ ( ) [ ] /`. Calling the
 * returned function directly runs it as plain code; `start(wf, args)` runs it durably.
 */
export declare function workflow<TArgs extends unknown[], TResult>(
  name: string,
  fn: (...args: TArgs) => Promise<TResult> | TResult,
  options?: WorkflowOptions,
): EngineWorkflow<TArgs, TResult>

/** Declares a step: durable inside a workflow, a plain call anywhere else. */
export declare function step<TArgs extends unknown[], TResult>(
  name: string,
  fn: (...args: TArgs) => Promise<TResult> | TResult,
  options?: StepOptions,
): ((...args: TArgs) => Promise<TResult>) & { readonly stepId: string; readonly maxRetries?: number }

/** A durable sleep: an `ms` duration string (`'1s'`, `'5m'`, `'1h'`), milliseconds, or a `Date`. */
export declare function sleep(duration: string | number | Date): Promise<void>

export interface HookOptions {
  /** A token of your choice (default: 21 random URL-safe characters). */
  token?: string
  metadata?: unknown
}

export interface Hook<T = any> extends PromiseLike<T>, AsyncIterable<T> {
  readonly token: string
  /** `{ runId }` of the run holding the token when it was taken, else `null`. */
  getConflict(): Promise<{ runId: string | null } | null>
  dispose(): void
  [Symbol.dispose](): void
}

export interface Webhook<T = Request> extends Hook<T> {
  /** `<base URL>/.well-known/workflow/v1/webhook/<token>` */
  readonly url: string
}

export interface WebhookOptions {
  respondWith?: Response | 'manual'
  metadata?: unknown
}

export declare function createHook<T = any>(options?: HookOptions): Hook<T>
export declare function createWebhook(options?: WebhookOptions): Webhook<Request>

/** A Standard Schema (https://standardschema.dev) validator. */
export interface StandardSchemaV1<I = unknown, O = I> {
  readonly '~standard': {
    readonly version: 1
    readonly vendor: string
    validate(value: unknown): { value: O; issues?: undefined } | { issues: ReadonlyArray<{ message: string }> } | Promise<any>
    readonly types?: { readonly input: I; readonly output: O }
  }
}

export interface TypedHook<TInput, TOutput> {
  create(options?: HookOptions): Hook<TOutput>
  resume(token: string, payload: TInput): Promise<unknown>
}

export declare function defineHook<TInput, TOutput = TInput>(options?: {
  schema?: StandardSchemaV1<TInput, TOutput>
}): TypedHook<TInput, TOutput>

/**
 * The run's stream (`strm_<run>_user[_<namespace>]`): in a step a `WritableStream` whose
 * values are appended as devalue frames; in the workflow body a handle to pass to a step.
 */
export declare function getWritable<W = any>(options?: { namespace?: string }): WritableStream<W>

export interface StepMetadata {
  stepName: string
  stepId: string
  /** When the step first started. */
  stepStartedAt: Date
  /** 1-based. */
  attempt: number
}
export declare function getStepMetadata(): StepMetadata

export interface WorkflowMetadata {
  workflowName: string
  workflowRunId: string
  workflowStartedAt: Date
  url: string
}
export declare function getWorkflowMetadata(): WorkflowMetadata

/** `globalThis.fetch` as a step: recorded and retried like any step. */
export declare function fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>

export declare const FatalError: typeof FatalErrorClass
export declare const RetryableError: typeof RetryableErrorClass

/** A run `resumeRuns()` could not resume: `error` names the reason (and the file, for a storage fault). */
export interface ResumeFailure {
  runId: string
  error: Error
}

/**
 * Resumes the pending and running runs of the workflows declared in this process (after
 * a restart or a crash): crash recovery (the events a killed writer left out are written
 * from the entities it wrote), then a replay of their event logs. Returns the run ids now
 * running here; `failures` (not enumerable) lists the runs that could not be resumed — a
 * corrupt, missing or unreadable file (`CORRUPT_FILE`, or the errno `code`, with `path`), a
 * state recovery cannot continue from — each left as it was, logged and passed to
 * `options.onError`. One of them never keeps the others from resuming; only a `runs/`
 * directory that cannot be listed rejects.
 */
export interface ResumeRunsOptions {
  /**
   * Called with each problem as it is found: the error of every run in `failures` (with
   * `runId` set, and `path` naming the file for a storage fault), and a lease file that was
   * not a lease and was replaced (`recovered: true`: that run resumed).
   */
  onError?: (error: Error & { runId?: string; path?: string; code?: string; recovered?: boolean }) => void
}

export declare function resumeRuns(options?: ResumeRunsOptions): Promise<string[] & { readonly failures: ResumeFailure[] }>

export interface StartWorkerOptions {
  /** Runs this worker claims at most at once (runs started or resumed in this process by other means are not limited). Default 100; `Infinity` for no limit. */
  concurrency?: number
  /**
   * Time to live of the leases of the runs executing in this process, in ms (at least 100;
   * default 30,000), renewed every third of it. Another process takes a run over once its
   * lease is stale: at once when the lease names a process of this host that no longer
   * exists, else when its heartbeat is older than this (local data directory: judged by the
   * taking process's own `leaseMs`, use one value for every worker of a data directory;
   * PostgreSQL: by the holder's own). A process taken over while stopped writes nothing more
   * for the run once it resumes.
   */
  leaseMs?: number
  /** How often the worker looks for runs to claim, in ms (default: half of `leaseMs`, at most 5,000). */
  pollMs?: number
  /**
   * Called with each run that could not be claimed or resumed (with `runId` set), with a
   * failure to list the runs, and with each run a storage fault stopped in this process
   * (`runId` set; not failed: the worker claims it again later) — on PostgreSQL a database
   * error has `code: 'DATABASE_ERROR'` and the server's `sqlstate` when it sent one.
   */
  onError?: (
    error: Error & { runId?: string; path?: string; code?: string; sqlstate?: string; recovered?: boolean },
  ) => void
}

export interface Worker {
  /** Resolves to the run ids `resumeRuns()` resumed when the worker started. */
  readonly ready: Promise<string[]>
  /** Runs executing in this process now. */
  readonly running: number
  /**
   * Stops claiming and drains every run executing in this process: attempts in flight
   * finish and their outcome is written, no new attempt starts, each run's lease is
   * released (another worker continues it). Resolves once done; idempotent.
   */
  stop(): Promise<void>
}

/**
 * Makes this process a worker for the workflows declared in it: resumes what a restart
 * interrupted, then keeps claiming pending and running runs that no live process executes —
 * a run whose process was killed continues here, from its log, with no completed step run
 * again. On PostgreSQL, workers on any number of machines share the database (new runs wake
 * them by NOTIFY), and `start()` in a process without a worker leaves the run to them. One
 * worker per process (`WorkflowRuntimeError` otherwise).
 */
export declare function startWorker(options?: StartWorkerOptions): Worker

/**
 * Virtual time for tests: durable sleeps and step retry delays stop waiting in real time.
 * `auto` (default true): they complete as soon as nothing else in the engine is running,
 * in due order. `{ auto: false }`: only `advanceTime()` moves the clock.
 */
export declare function useVirtualTime(options?: { auto?: boolean }): void
export declare function useRealTime(): void
/** Moves virtual time forward, firing every sleep and retry delay that falls due. */
export declare function advanceTime(duration: string | number): Promise<void>
/** Resolves once the run (executing in this process) is in a durable sleep. */
export declare function nextSleep(run: string | { runId: string }): Promise<void>
