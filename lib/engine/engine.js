'use strict'
// The embedded engine: runs workflows declared with `workflow()` in this process, on the
// local data directory, with no build step and no HTTP. The Rust core writes every event
// (world-local format); this module runs user code and keeps runs moving: a run's queue
// messages (wakeUp(), resumeHook(), start()) are dispatched here instead of over HTTP when
// the workflow is registered in this process.

const path = require('node:path')
const { resolveWorld, setLocalDispatcher } = require('../world.js')
const { errorFromData } = require('../native.js')
const { Clock } = require('./clock.js')
const { Execution } = require('./execution.js')
const { workflowStore, stepStore } = require('./context.js')

const QUEUE_PREFIX = '__wkf_workflow_'

class Engine {
  constructor() {
    this.registry = new Map() // workflowId -> def
    this.executions = new Map() // runId -> Execution
    this.releasing = new Map() // runId -> the release of its lease in progress
    this.settling = new Set() // `released` of every execution whose lease is not released yet
    this.busy = 0
    this.clock = new Clock()
    this.clock.setBusyProbe(() => this.busy > 0)
    this.sleepWaiters = new Map() // runId -> [resolve]
    this.leaseOwner = `${process.pid}:${require('node:os').hostname()}:${Date.now()}`
    // A run's lease: held while it executes here, renewed every third of its time to
    // live, taken over by another process once stale (see startWorker()).
    this.leaseTtlMs = LEASE_TTL_MS
    this.worker = null
    this.quiescing = false // a worker is stopping: nothing is launched again by itself
    setLocalDispatcher((message) => this.dispatch(message))
  }

  /**
   * Declares `def` under its id. A later declaration under the same id replaces the
   * earlier one (a dev server re-evaluating an edited module, a test runner without
   * isolation): runs started, resumed or replayed from now on run the new code; a run
   * executing here keeps the code it started with until its next replay.
   */
  register(def) {
    this.registry.set(def.workflowId, def)
  }

  /** The current declaration for `def`'s id (declaring `def` if there is none). */
  current(def) {
    const latest = this.registry.get(def.workflowId)
    if (latest) return latest
    this.register(def)
    return def
  }

  world() {
    const { world, error } = resolveWorld()
    if (error) throw error
    return world
  }

  /**
   * Starts executing `runId` here unless it already is. Returns the Execution at once;
   * it stops by itself (reason "held by another process") when another process holds
   * the run's lease. Nothing here touches the disk on the JS thread.
   */
  launch(runId, def, fresh, recovered = false) {
    const running = this.executions.get(runId)
    if (running) return running
    // a run started from a step or a workflow body runs in its own context
    if (stepStore.getStore() || workflowStore.getStore()) {
      return stepStore.exit(() => workflowStore.exit(() => this.launch(runId, def, fresh, recovered)))
    }
    const world = this.world()
    const exec = new Execution(this, world, runId, def, fresh, recovered)
    this.executions.set(runId, exec)
    this.busy++
    // After the release of a previous execution of this run in this process, if any (the
    // same owner re-acquiring would count as a renewal, and that release would then
    // delete the new lease).
    const released = this.releasing.get(runId) || Promise.resolve()
    // (a run this process created, leased and started in one transaction holds its lease)
    const taken = fresh && fresh.started
    const leased = released
      .then(() => {
        if (!taken) return this.acquireLease(world, runId, (err) => (exec.leaseReplaced = err), exec)
        exec.leaseToken = taken.token
        return true
      })
      .finally(() => {
        this.busy--
        this.clock.poke()
      })
    exec.leased = leased
    let renew = null
    leased.then(
      (held) => {
        if (!held || exec.stopped) return
        renew = setInterval(() => {
          this.renewLease(world, runId, exec).then((ok) => {
            if (!ok) exec.stop('lease lost to another process')
          })
        }, Math.max(50, Math.floor(this.leaseTtlMs / 3)))
        renew.unref()
      },
      () => {}, // reported by the execution, which stops
    )
    exec.run(leased).catch((e) => console.error(`[workflow-native] Run ${runId} stopped unexpectedly:`, e))
    // settles once the run stopped here and its lease was released
    exec.released = exec.done.then(async () => {
      this.noteSleeping(runId) // nobody waits for a sleep of a run that ended
      if (renew) clearInterval(renew)
      if (this.executions.get(runId) === exec) this.executions.delete(runId)
      if (!(await leased.catch(() => false))) return
      const release = this.releaseLease(world, runId, exec)
      this.releasing.set(runId, release)
      await release
      if (this.releasing.get(runId) === release) this.releasing.delete(runId)
      // a storage fault stopped it: the worker reports it and claims it again later
      if (exec.failure && this.worker && !exec.faultReported) {
        exec.faultReported = true
        this.worker.stoppedByFault(runId, exec.failure)
      }
      // Its files disagreed with what it knew: once more, from the repaired log.
      if (exec.retry && !this.quiescing && !this.executions.has(runId)) {
        try {
          this.launch(runId, this.current(def), undefined, true)
        } catch (e) {
          console.error(`[workflow-native] Could not resume run ${runId}:`, e)
        }
      }
    })
    const settled = exec.released.catch(() => {}).finally(() => this.settling.delete(settled))
    this.settling.add(settled)
    return exec
  }

  /**
   * Takes or renews the run's lease: whether this process holds it now. A lease file that
   * is not a lease (corrupt, a directory) is not a live owner: the core takes it over and
   * names it; that is logged and handed to `onReplaced`.
   */
  async acquireLease(world, runId, onReplaced, holder) {
    const got = JSON.parse(await world.acquireLease(runId, this.leaseOwner, this.leaseTtlMs))
    // PostgreSQL: the fencing token of this take, carried by the execution's batches
    if (holder && typeof got.token === 'number') holder.leaseToken = got.token
    if (got.replaced) {
      const err = errorFromData(got.replaced)
      err.runId = runId
      err.recovered = true
      console.error(
        `[workflow-native] Replaced the lease of run ${runId}: its file is not a lease, so no live process holds it (${err.message})`,
      )
      if (onReplaced) onReplaced(err)
    }
    return got.held
  }

  /** False only when the lease is not this execution's any more (taken over, released). */
  async renewLease(world, runId, holder) {
    try {
      if (world.kind === 'postgres') {
        if (!holder || typeof holder.leaseToken !== 'number') return false
        return JSON.parse(await world.renewLease(runId, this.leaseOwner, holder.leaseToken, this.leaseTtlMs)).held
      }
      return JSON.parse(await world.renewLease(runId, this.leaseOwner)).held
    } catch (e) {
      console.error(`[workflow-native] Could not renew the lease of run ${runId}:`, e)
      return true
    }
  }

  async releaseLease(world, runId, holder) {
    // PostgreSQL: the fenced batch that ended the run released the lease with its commit
    if (world.kind === 'postgres' && holder && holder.endedHere && typeof holder.leaseToken === 'number') return
    try {
      if (world.kind === 'postgres') await world.releaseLease(runId, this.leaseOwner, holder && holder.leaseToken)
      else await world.releaseLease(runId, this.leaseOwner)
    } catch (e) {
      console.error(`[workflow-native] Could not release the lease of run ${runId}:`, e)
    }
  }

  /** A queue message for one of our workflows: handled here. Returns whether it was. */
  dispatch(message) {
    if (!message || typeof message.queueName !== 'string' || !message.queueName.startsWith(QUEUE_PREFIX)) {
      return false
    }
    const def = this.registry.get(message.queueName.slice(QUEUE_PREFIX.length))
    if (!def) return false
    let runId
    try {
      runId = JSON.parse(message.body).runId
    } catch {
      return false
    }
    if (typeof runId !== 'string') return false
    // On PostgreSQL a run not executing here is for a worker to claim (in any process).
    if (!this.executions.has(runId) && !this.worker && resolveWorld().world?.kind === 'postgres') return true
    // outside the caller's workflow/step context (resumeHook() may be called in a step)
    stepStore.exit(() => workflowStore.exit(() => setImmediate(() => this.notify(runId, def))))
    return true
  }

  /** Something happened to `runId` (a payload, a wake-up, a cancellation). */
  notify(runId, def) {
    const exec = this.executions.get(runId)
    if (exec) {
      exec.refresh()
      return
    }
    if (def) {
      try {
        this.launch(runId, def)
      } catch (e) {
        console.error(`[workflow-native] Could not resume run ${runId}:`, e)
      }
    }
  }

  /** Resolves when the run executing here stops or ends (undefined if not executing here). */
  completion(runId) {
    const exec = this.executions.get(runId)
    if (!exec) return undefined
    return exec.done.then(() => {
      // a run completed here: its stored output, without reading it back
      if (exec.stopped === 'completed' && exec.output) return { output: exec.output }
      // A storage fault stopped it here: what its files say may not be durable (a result
      // written whose sync failed reads as completed), so the fault answers, loudly.
      if (exec.stopped === 'write failed' && exec.failure) throw exec.failure
      return undefined
    })
  }

  noteSleeping(runId) {
    const list = this.sleepWaiters.get(runId)
    if (!list) return
    this.sleepWaiters.delete(runId)
    for (const r of list) r()
  }

  /** Resolves once `runId` is in a sleep here (at once if it is, or is not executing here). */
  nextSleep(runId) {
    const exec = this.executions.get(runId)
    // not executing here (or ended): nothing to wait for
    if (!exec || exec.sleeping > 0) return Promise.resolve()
    return new Promise((resolve) => {
      let list = this.sleepWaiters.get(runId)
      if (!list) this.sleepWaiters.set(runId, (list = []))
      list.push(resolve)
    })
  }

  /**
   * Resumes every pending or running run of a workflow registered here (after a restart):
   * each is recovered (what a crash left half-written is finished) and its log read.
   * Resolves to the run ids now executing in this process; the array's non-enumerable
   * `failures` lists `{ runId, error }` for the runs that could not be resumed (a run
   * file, a file of its log or its lease that cannot be read, a state recovery cannot
   * continue from), each also logged and passed to `options.onError` (with `runId` set)
   * as it is found. One of them never keeps the others from resuming. A lease file that
   * was not a lease is replaced (the run resumes) and reported to `onError` with
   * `recovered: true`. Runs a dead process left finished in their files but not in their
   * logs (its lease is still there) get their terminal event. Rejects only when the runs
   * cannot be listed.
   */
  async resumeRuns(options) {
    const onError = options && typeof options.onError === 'function' ? options.onError : undefined
    const report = (runId, error) => {
      if (!onError || !error) return
      if (typeof error === 'object' && error.runId === undefined) {
        try {
          error.runId = runId
        } catch {
          // a frozen error: handed on as it is
        }
      }
      try {
        onError(error)
      } catch (e) {
        console.error('[workflow-native] resumeRuns(): onError threw:', e)
      }
    }
    const world = this.world()
    const { runs, faults } = JSON.parse(await world.readRuns(['pending', 'running']))
    const skipped = faults.map((data) => {
      const error = errorFromData(data)
      const runId = typeof data.path === 'string' ? path.basename(data.path, '.json') : undefined
      console.error(`[workflow-native] resumeRuns() skipped a run file that cannot be read: ${error.message}`)
      report(runId, error)
      return { runId, held: false, error }
    })
    const launched = []
    for (const run of runs) {
      const def = this.registry.get(run.workflowName)
      if (!def) continue
      const already = this.executions.get(run.runId)
      const exec = this.launch(run.runId, def)
      launched.push(
        exec.ready.then(
          (r) => {
            // (an execution already running here was reported by the call that launched it)
            if (exec !== already) {
              report(run.runId, exec.leaseReplaced)
              report(run.runId, r.error)
            }
            return { runId: run.runId, ...r }
          },
          (error) => {
            report(run.runId, error)
            return { runId: run.runId, held: false, error }
          },
        ),
      )
    }
    // (a run whose file cannot be read is reported once, above)
    const listed = new Set([...runs.map((r) => r.runId), ...skipped.map((r) => r.runId)])
    const finished = this.recoverFinished(world, listed).then((out) => {
      for (const r of out) report(r.runId, r.error)
      return out
    })
    const results = [...skipped, ...(await Promise.all(launched)), ...(await finished)]
    const ids = results.filter((r) => r.held && !r.error && !r.finished).map((r) => r.runId)
    const failures = results.filter((r) => r.error).map((r) => ({ runId: r.runId, error: r.error }))
    Object.defineProperty(ids, 'failures', { value: failures, enumerable: false })
    return ids
  }

  /**
   * Runs with a lease left but not pending or running: a process died around their end.
   * Under the lease (taken over only if stale), recovery writes a terminal event the run's
   * file has and its log lacks (and removes the run's hooks and waits first, as the
   * interrupted transition would have).
   */
  async recoverFinished(world, active) {
    let leased
    try {
      leased = JSON.parse(await world.leasedRuns())
    } catch (e) {
      console.error('[workflow-native] Could not list the run leases:', e)
      return []
    }
    const out = []
    for (const runId of leased) {
      if (active.has(runId) || this.executions.has(runId)) continue
      let held = false
      const holder = {}
      try {
        held = await this.acquireLease(world, runId, undefined, holder)
        if (!held) continue
        const rec = JSON.parse(await world.recoverRun(runId))
        if (rec.status === 'pending' || rec.status === 'running') continue // not ours to run
      } catch (e) {
        if (!(e && e.name === 'WorkflowRunNotFoundError')) {
          console.error(`[workflow-native] Could not recover run ${runId} (left as it is):`, e)
          out.push({ runId, held: true, finished: true, error: e })
        }
      } finally {
        if (held) await this.releaseLease(world, runId, holder)
      }
    }
    return out
  }
}

/** A run's lease by default: held while it executes here, renewed, taken over once stale. */
const LEASE_TTL_MS = 30_000

let engine = null

function getEngine() {
  if (!engine) engine = new Engine()
  return engine
}

/** The engine if this process created one (the api side must not create it). */
function peekEngine() {
  return engine
}

module.exports = { getEngine, peekEngine, Engine }
