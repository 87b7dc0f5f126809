'use strict'
// The Run handle: a run's metadata, return value, streams, wake-up and cancellation.

const { errorFromData } = require('./native.js')
const { resolveWorld, deliver } = require('./world.js')
const { hydratePayload } = require('./hydrate.js')
const { refReadable, clientRevivers, startIndexOption, runStreamOf } = require('./streams.js')
const errors = require('../errors.js')
const { invalidArgType, optionsObject, display } = require('./validate.js')

/** The embedded engine, if this process has one (loaded lazily: no cycle, no cost). */
function peekEngine() {
  return require('./engine/engine.js').peekEngine()
}

/** A run id must be a string (the official Run fails deep inside on anything else). */
function checkRunId(runId) {
  if (typeof runId !== 'string') throw invalidArgType('runId', 'of type string', runId)
}

/** `wakeUp()`'s options: `{ correlationIds?: string[] }`; returns the ids (or undefined). */
function wakeUpIds(options) {
  const { correlationIds } = optionsObject('options', options)
  if (correlationIds === undefined || correlationIds === null) return undefined
  if (!Array.isArray(correlationIds)) {
    throw invalidArgType('options.correlationIds', 'an array of strings', correlationIds)
  }
  correlationIds.forEach((id, i) => {
    if (typeof id !== 'string') throw invalidArgType(`options.correlationIds[${i}]`, 'of type string', id)
  })
  return correlationIds.slice()
}

function toDate(ms) {
  return ms === undefined || ms === null ? undefined : new Date(ms)
}

/** A handle to a workflow run. Construction does no I/O and never throws. */
class Run {
  #world
  constructor(runId) {
    this.runId = runId
    // Bound to the World at construction, as the official Run captures getWorld().
    this.#world = resolveWorld()
  }

  /** Runs `fn(world)`; every failure, a bad run id included, is a rejection. */
  async #with(fn) {
    checkRunId(this.runId)
    if (this.#world.error) throw this.#world.error
    return fn(this.#world.world)
  }

  // Metadata getters read one small file synchronously in the addon (~10 µs, less than
  // a thread hop) and resolve a promise with it; errors still arrive as rejections.
  #info() {
    return this.#with((w) => w.getRunSync(this.runId))
  }

  /** Whether the workflow run exists. */
  get exists() {
    return this.#info().then(
      () => true,
      (e) => {
        if (errors.WorkflowRunNotFoundError.is(e)) return false
        throw e
      },
    )
  }

  /** The status of the workflow run. */
  get status() {
    return this.#with((w) => w.runStatusSync(this.runId))
  }

  /** The name of the workflow. */
  get workflowName() {
    return this.#info().then((r) => r.workflowName)
  }

  /** When the run was created. */
  get createdAt() {
    return this.#info().then((r) => new Date(r.createdAt))
  }

  /** When the run started (undefined while pending). */
  get startedAt() {
    return this.#info().then((r) => toDate(r.startedAt))
  }

  /** When the run completed, failed or was cancelled (undefined before). */
  get completedAt() {
    return this.#info().then((r) => toDate(r.completedAt))
  }

  /**
   * The return value: resolves when the run completes (woken by a filesystem watcher,
   * also for completions written by other processes); rejects with
   * WorkflowRunFailedError / WorkflowRunCancelledError / WorkflowRunNotFoundError.
   */
  get returnValue() {
    // A run the embedded engine executes here: wait for it in memory first.
    const local = typeof this.runId === 'string' ? peekEngine()?.completion(this.runId) : undefined
    return Promise.resolve(local)
      .then((done) =>
        done ? { status: 'completed', output: done.output, hasOutput: true } : this.#with((w) => w.waitTerminal(this.runId)),
      )
      .then((info) => {
      if (info.status === 'cancelled') throw new errors.WorkflowRunCancelledError(this.runId)
      if (info.status === 'failed') {
        throw new errors.WorkflowRunFailedError(this.runId, {
          message: info.errorMessage,
          stack: info.errorStack,
          code: info.errorCode,
        })
      }
      return hydratePayload(info.output, info.outputJson, info.hasOutput, this.#revivers(globalThis))
    })
  }

  /** The run's default readable stream (a new stream on each access). */
  get readable() {
    return this.getReadable()
  }

  /**
   * A `ReadableStream` of the run's default or namespaced stream, plus `getTailIndex()`.
   * Bad options throw here, synchronously (see `startIndexOption` and `runStreamOf`).
   */
  getReadable(options = {}) {
    // The official reads `options.ops` first: `null` fails the same way.
    if (options === null) throw new TypeError("Cannot read properties of null (reading 'ops')")
    const { global = globalThis, startIndex, namespace } = options
    const name = runStreamOf(String(this.runId), namespace)
    // Ends at the close marker, or once the run is terminal and every chunk written was
    // delivered (the official reader waits for a close marker for ever: vercel/workflow#943).
    // Like the official reader, which needs the run to decode its first chunk: a stream
    // of a run that does not exist errors (WorkflowRunNotFoundError) instead of delivering.
    const runOf = () => this.status
    const stream = refReadable(global, this.#open, { name, startIndex: startIndexOption(startIndex) }, String(this.runId), runOf)
    return Object.assign(stream, {
      getTailIndex: () => this.#with((w) => w.streamInfo(name)).then((i) => i.tailIndex),
    })
  }

  /** Opens a native reader on this run's World (errors surface as stream errors). */
  #open = (name, start, mode, endWithRun) => {
    checkRunId(this.runId)
    if (this.#world.error) throw this.#world.error
    return this.#world.world.openStream(name, start, mode, endWithRun)
  }

  #revivers(global) {
    return clientRevivers(global, this.#open)
  }


  /** Interrupts pending `sleep()` calls and re-enqueues the run. */
  async wakeUp(options) {
    let res
    try {
      // Like the official wakeUpRun, every failure but the per-wait AggregateError is
      // reported as "Failed to wake up run …", bad arguments included.
      const ids = wakeUpIds(options)
      res = await this.#with((w) =>
        w.wakeUp(this.runId, ids, process.env.WORKFLOW_QUEUE_NAMESPACE || undefined),
      )
    } catch (e) {
      throw new Error(
        `Failed to wake up run ${display(this.runId)}: ${e instanceof Error ? e.message : display(e)}`,
        { cause: e },
      )
    }
    if (res.message) await deliver(res.message)
    if (res.errors.length > 0) {
      const list = res.errors.map((j) => errorFromData(JSON.parse(j)))
      throw new AggregateError(
        list,
        `Failed to complete ${list.length}/${res.pendingCount} pending wait(s) for run ${display(this.runId)}`,
      )
    }
    return { stoppedCount: res.stoppedCount }
  }

  /** Cancels the run (a `run_cancelled` event, with world-local's effects). */
  async cancel() {
    // world-local's own check, before the run id's type is looked at.
    if (this.runId === undefined || this.runId === null) {
      throw new Error('runId is required for non-run_created events')
    }
    // The native outcome ('cancelled' | 'alreadyCancelled' | 'legacyCancelled') is not
    // public: WDK's cancel() resolves to undefined whichever happened.
    await this.#with((w) => w.cancel(this.runId))
    // A run executing in this process stops at once.
    peekEngine()?.notify(this.runId)
  }
}

/** Retrieves a `Run` for a run id. Synchronous, no I/O, never throws. */
function getRun(runId) {
  return new Run(runId)
}

module.exports = { Run, getRun, checkRunId }
