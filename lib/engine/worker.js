'use strict'
// startWorker(): this process takes part in executing the declared workflows' runs on the
// local data directory or the PostgreSQL database, alongside any other processes (on any
// machines, for PostgreSQL) doing the same. At start it resumes
// what a restart interrupted (as resumeRuns() does, up to `concurrency`); then, every
// `pollMs`, it claims pending and running runs of its declared workflows that no live
// process executes: a run whose process was killed (its lease names a process of this
// host that no longer exists, or a heartbeat older than the lease's time to live)
// continues here, from its log — completed steps are not run again. `stop()` drains: attempts in flight finish and their outcome is
// written, no new attempt starts, leases are released, so another worker continues.

const { errorFromData } = require('../native.js')
const { WorkflowRuntimeError } = require('../../errors.js')

/** How long a run that could not be resumed here waits before the worker tries again. */
const RETRY_FIRST_MS = 5_000
const RETRY_MAX_MS = 300_000

class Worker {
  #engine
  #concurrency
  #pollMs
  #onError
  #timer = null
  #polling = null
  #stopped = false
  #stopping = null
  #claimed = new Set() // run ids this worker launched that are executing here
  #retryAt = new Map() // runId -> { at, delay } for runs that could not be resumed here
  #watch = null // PostgreSQL: new runs wake the worker
  #again = false // a wake-up came during a pass: one more pass after it

  constructor(engine, { concurrency, leaseMs, pollMs, onError }) {
    this.#engine = engine
    this.#concurrency = concurrency
    this.#pollMs = pollMs
    this.#onError = onError
    engine.leaseTtlMs = leaseMs
    /**
     * Resolves to the run ids the first pass claimed (what a restart interrupted, up to
     * `concurrency`); runs a dead process left finished get their terminal event.
     */
    this.ready = this.#pass(true)
      .catch((e) => {
        console.error('[workflow-native] startWorker(): the first pass failed:', e)
        this.#report(e)
        return []
      })
      .finally(() => this.#schedule())
    // On PostgreSQL a run created anywhere wakes the workers at once (NOTIFY); the poll
    // is the backstop.
    const world = engine.world()
    if (world.kind === 'postgres') {
      this.#watch = world.watchNewRuns((runId) => {
        // (a run this process started executes here already: nothing to look for)
        if (!runId || !engine.executions.has(runId)) this.#wake()
      })
    }
  }

  /** Looks for runs now (after the pass in progress, if any). */
  #wake() {
    if (this.#stopped) return
    if (this.#polling) {
      this.#again = true
      return
    }
    if (this.#timer) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    this.#polling = this.#poll().finally(() => {
      this.#polling = null
      if (this.#again) {
        this.#again = false
        this.#wake()
      } else this.#schedule()
    })
  }

  /** Runs executing in this process (claimed by this worker, started or resumed here). */
  get running() {
    return this.#engine.executions.size
  }

  /**
   * A run executing here stopped on a storage fault (reported with console.error by the
   * execution): passed to `onError`, and claimed again later, less often each time.
   */
  stoppedByFault(runId, error) {
    this.#settled(runId, error)
  }

  #report(error) {
    if (!this.#onError) return
    try {
      this.#onError(error)
    } catch (e) {
      console.error('[workflow-native] startWorker(): onError threw:', e)
    }
  }

  #track(runId) {
    const exec = this.#engine.executions.get(runId)
    if (!exec || this.#claimed.has(runId)) return
    this.#claimed.add(runId)
    exec.done.then(() => this.#claimed.delete(runId))
  }

  #schedule() {
    if (this.#stopped || this.#timer) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.#wake()
    }, this.#pollMs)
    // a worker alone does not keep the process alive (a server does)
    this.#timer.unref()
  }

  /** One look for runs no live process executes; resolves to the ids claimed and held. */
  async #pass(first = false) {
    const engine = this.#engine
    let world
    let listed
    try {
      world = engine.world()
      if (world.kind === 'postgres') {
        // only what can be claimed now: runs of the declared workflows without a live lease
        const room = this.#concurrency === Infinity ? 10_000 : Math.max(0, this.#concurrency - this.#claimed.size)
        if (room === 0 && !first) return []
        listed = JSON.parse(await world.claimableRuns([...engine.registry.keys()], Math.min(room, 10_000)))
      } else listed = JSON.parse(await world.readRuns(['pending', 'running']))
    } catch (e) {
      console.error('[workflow-native] startWorker(): could not list the runs:', e)
      this.#report(e)
      return []
    }
    for (const data of listed.faults || []) this.#report(errorFromData(data))
    const now = Date.now()
    const active = new Set(listed.runs.map((r) => r.runId))
    for (const id of this.#retryAt.keys()) if (!active.has(id)) this.#retryAt.delete(id)
    const tries = []
    for (const run of listed.runs) {
      if (this.#stopped) break
      if (this.#claimed.size >= this.#concurrency) break
      const def = engine.registry.get(run.workflowName)
      if (!def || engine.executions.has(run.runId)) continue
      const retry = this.#retryAt.get(run.runId)
      if (retry && retry.at > now) continue
      const exec = engine.launch(run.runId, def)
      this.#track(run.runId)
      tries.push(
        exec.ready.then(
          (r) => {
            if (exec.leaseReplaced) this.#report(exec.leaseReplaced)
            if (r.error) exec.faultReported = true
            this.#settled(run.runId, r.error)
            return r.held && !r.error ? run.runId : null
          },
          (error) => {
            this.#settled(run.runId, error)
            return null
          },
        ),
      )
    }
    if (first && world.kind !== 'postgres') {
      // runs a dead process left finished in their files but not in their logs (on
      // PostgreSQL an event and its entity change commit together: nothing to finish)
      const faults = (await engine.recoverFinished(world, active)).filter((r) => r.error)
      for (const r of faults) this.#report(r.error)
    }
    return (await Promise.all(tries)).filter(Boolean)
  }

  #poll() {
    return this.#pass(false).catch((e) => {
      console.error('[workflow-native] startWorker(): a pass failed:', e)
      this.#report(e)
    })
  }

  /** A claim's outcome: a run that could not be resumed is tried again later, less often. */
  #settled(runId, error) {
    if (!error) {
      this.#retryAt.delete(runId)
      return
    }
    const prev = this.#retryAt.get(runId)
    const delay = prev ? Math.min(prev.delay * 2, RETRY_MAX_MS) : Math.min(RETRY_FIRST_MS, this.#pollMs * 10)
    this.#retryAt.set(runId, { at: Date.now() + delay, delay })
    if (error && typeof error === 'object' && error.runId === undefined) {
      try {
        error.runId = runId
      } catch {
        // a frozen error: reported as it is
      }
    }
    this.#report(error)
  }

  /**
   * Stops claiming and drains every run executing in this process: attempts in flight
   * finish and their outcome is written, then each run stops here and its lease is
   * released. Resolves once all of them did. Idempotent.
   */
  stop() {
    if (this.#stopping) return this.#stopping
    this.#stopped = true
    this.#engine.quiescing = true
    if (this.#watch) this.#watch.close()
    if (this.#timer) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    const engine = this.#engine
    this.#stopping = (async () => {
      // (the first pass may still be claiming)
      await this.ready.catch(() => {})
      if (this.#polling) await this.#polling
      const executions = [...engine.executions.values()]
      // each execution's lease is released once it ended (`released`)
      await Promise.all(executions.map((exec) => exec.drain('worker stopped').then(() => exec.released)))
      // and the lease releases of runs that ended just before (no longer executing)
      await Promise.all([...engine.settling])
      engine.quiescing = false
      if (engine.worker === this) engine.worker = null
    })()
    return this.#stopping
  }
}

/** Starts the worker of this process (one at a time). */
function startWorker(engine, options) {
  if (engine.worker) {
    throw new WorkflowRuntimeError('A worker is already running in this process: stop() it before starting another')
  }
  const worker = new Worker(engine, options)
  engine.worker = worker
  return worker
}

module.exports = { startWorker }
