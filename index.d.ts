// Types of workflow-native's `workflow/api` surface (mirrors workflow@4.8.9).

/** Status of a workflow run. */
export type WorkflowRunStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled'

/** A stored payload: format-prefixed bytes (spec ≥ 2) or plain JSON (legacy spec 1). */
export type SerializedData = Uint8Array | unknown

export interface StructuredError {
  message: string
  stack?: string
  code?: string
}

/** A workflow run entity, as `world.runs.get()` returns it. */
export interface WorkflowRun {
  runId: string
  status: WorkflowRunStatus
  deploymentId: string
  workflowName: string
  specVersion?: number
  executionContext?: Record<string, any>
  input?: SerializedData
  output?: SerializedData
  error?: StructuredError
  expiredAt?: Date
  startedAt?: Date
  completedAt?: Date
  createdAt: Date
  updatedAt: Date
}

export type EventType =
  | 'run_created'
  | 'run_started'
  | 'run_completed'
  | 'run_failed'
  | 'run_cancelled'
  | 'step_created'
  | 'step_completed'
  | 'step_failed'
  | 'step_retrying'
  | 'step_started'
  | 'hook_created'
  | 'hook_received'
  | 'hook_disposed'
  | 'hook_conflict'
  | 'wait_created'
  | 'wait_completed'

/** An event of a run's log. */
export interface Event {
  eventType: EventType
  correlationId?: string
  specVersion?: number
  eventData?: any
  runId: string
  eventId: string
  createdAt: Date
  occurredAt?: Date
}

/** A `ReadableStream` extended with workflow-specific helpers. */
export type WorkflowReadableStream<R = any> = ReadableStream<R> & {
  /**
   * Index of the last known chunk (0-based) of the underlying workflow stream, or `-1`
   * when no chunks have been written.
   */
  getTailIndex(): Promise<number>
}

/** Options for a run's readable stream. */
export interface WorkflowReadableStreamOptions {
  /**
   * Distinguishes several streams of one run. A falsy value is the default stream; like the
   * official, any other value goes through `Buffer.from(namespace, 'utf-8')` (byte arrays
   * are accepted; other non-strings throw its `TypeError`).
   */
  namespace?: string
  /**
   * First chunk to read (0-based); negative values count from the end (-3 = last 3).
   * `NaN` and `-Infinity` read from the first chunk; `Infinity` and non-integers throw a
   * `RangeError`, non-numbers a `TypeError` (synchronously, from `getReadable`).
   */
  startIndex?: number
  /** Accepted for compatibility; workflow-native has no background operations to add. */
  ops?: Promise<any>[]
  /** Global object whose constructors build revived values. Defaults to `globalThis`. */
  global?: Record<string, any>
}

export interface StopSleepOptions {
  /** Only interrupt the sleeps with these correlation ids (all pending ones by default). */
  correlationIds?: string[]
}

export interface StopSleepResult {
  /** Number of pending sleeps that were stopped */
  stoppedCount: number
}

/** A handle to a workflow run. Creating one does no I/O and never throws. */
export declare class Run<TResult> {
  constructor(runId: string)
  /** The ID of the workflow run. */
  runId: string
  /** Interrupts pending `sleep()` calls and re-enqueues the run. */
  wakeUp(options?: StopSleepOptions): Promise<StopSleepResult>
  /** Cancels the workflow run. */
  cancel(): Promise<void>
  /** Whether the workflow run exists. */
  get exists(): Promise<boolean>
  /** The status of the workflow run. */
  get status(): Promise<WorkflowRunStatus>
  /** The return value; resolves when the run completes, rejects when it fails or is cancelled. */
  get returnValue(): Promise<TResult>
  /** The name of the workflow. */
  get workflowName(): Promise<string>
  /** When the run was created. */
  get createdAt(): Promise<Date>
  /** When the run started; undefined while pending. */
  get startedAt(): Promise<Date | undefined>
  /** When the run completed, failed or was cancelled; undefined before. */
  get completedAt(): Promise<Date | undefined>
  /** The run's default readable stream (a new stream on each access). */
  get readable(): WorkflowReadableStream
  /** The run's default or namespaced readable stream. */
  getReadable<R = any>(options?: WorkflowReadableStreamOptions): WorkflowReadableStream<R>
}

/** Retrieves a `Run` for a run id. Synchronous, no I/O, never throws. */
export declare function getRun<TResult>(runId: string): Run<TResult>

/** What `start()` accepts as a workflow: a transformed workflow function or `{ workflowId }`. */
export interface WorkflowMetadata {
  workflowId: string
}

export interface StartOptions {
  /** Deployment to run on; `'latest'` falls back to the current one (local world). */
  deploymentId?: string | 'latest'
  /**
   * A World object (the `World` interface of `@workflow/world`) used for creation and
   * enqueueing only; the returned `Run` reads the process's World, as in WDK.
   */
  world?: unknown
  /** Spec version of the new run (default 3). */
  specVersion?: number
}

/**
 * Starts a workflow run: writes `run_created` and sends the first queue message to the
 * app's `/.well-known/workflow/v1/flow` endpoint (delivered in the background). A workflow
 * declared with `workflow()` from `workflow-native/workflow` runs in this process instead
 * (the embedded engine; `options.world` and `options.specVersion` do not apply).
 */
export declare function start<TArgs extends unknown[], TResult>(
  workflow: ((...args: TArgs) => Promise<TResult>) | WorkflowMetadata,
  args: TArgs,
  options?: StartOptions,
): Promise<Run<TResult>>
export declare function start<TResult>(
  workflow: (() => Promise<TResult>) | WorkflowMetadata,
  options?: StartOptions,
): Promise<Run<TResult>>

/** A hook entity. */
export interface Hook {
  runId: string
  hookId: string
  token: string
  ownerId: string
  projectId: string
  environment: string
  metadata?: unknown
  createdAt: Date
  specVersion?: number
  isWebhook?: boolean
}

/** The hook with this token (metadata hydrated); `HookNotFoundError` when there is none. */
export declare function getHookByToken(token: string): Promise<Hook>

/** Delivers `payload` to the hook (a `hook_received` event) and re-enqueues its run. */
export declare function resumeHook<T = any>(tokenOrHook: string | Hook, payload: T): Promise<Hook>

/**
 * Delivers an HTTP request to a webhook created with `createWebhook()`; answers 202, the
 * stored `respondWith` Response, or (manual mode) the Response the workflow sends.
 */
export declare function resumeWebhook(token: string, request: Request): Promise<Response>

/** Exported for compatibility with `workflow/api`: a no-op. */
export declare function runStep(): void
