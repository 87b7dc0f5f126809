'use strict'
// One run executing in this process. The workflow function runs once, in memory; each
// step / sleep / hook it calls is an *invocation* recorded in the run's event log
// (world-local format, written by the Rust core off the JS thread, see journal.js).
// After a restart the function runs again from the top and every invocation already in
// the log is answered from it (deterministic replay, see replay.js): the k-th invocation
// must match the k-th recorded one (same kind, same step name / hook token), or the run
// fails with ReplayDivergenceError.
//
// Steps, sleeps and hooks live in steps.js, sleeps.js and hooks.js; this file holds the
// run's life cycle and the one place that handles "the run ended under us".

const { stringify } = require('../vendor/devalue.cjs')
const { clientReducers, serializeValue, frame } = require('../serialize.js')
const { externalRevivers, hydratePayload } = require('../hydrate.js')
const { refReadable, worldStreams } = require('../streams.js')
const { workflowStore, stepStore, declaredSteps } = require('./context.js')
const { RunJournal, Halted, RUN_GONE } = require('./journal.js')
const { ReplayLog, isTerminalRunEvent } = require('./replay.js')
const { callStep } = require('./steps.js')
const { sleep } = require('./sleeps.js')
const { createHook } = require('./hooks.js')
const { HALT, tagged, untag, normalizeError } = require('./values.js')
const errors = require('../../errors.js')

const STREAM_NAME = Symbol.for('WORKFLOW_STREAM_NAME')
const STREAM_TYPE = Symbol.for('WORKFLOW_STREAM_TYPE')
const STREAM_FRAMING = Symbol.for('WORKFLOW_STREAM_FRAMING')

/** The built-in steps a body read in a workflow body goes through (WDK's names). */
const BODY_STEPS = {
  arrayBuffer: '__builtin_response_array_buffer',
  json: '__builtin_response_json',
  text: '__builtin_response_text',
}

/** In the workflow body a revived Response keeps its recorded `type`, `url`, `redirected` (as WDK's). */
function withResponseFields(res, value) {
  if (stepStore.getStore() || !res || typeof res !== 'object' || !value) return res
  for (const k of ['type', 'url', 'redirected']) {
    if (value[k] !== undefined) Object.defineProperty(res, k, { value: value[k], writable: true, configurable: true, enumerable: true })
  }
  return res
}

function withBodySteps(obj) {
  if (stepStore.getStore() || !obj || typeof obj !== 'object') return obj
  for (const [method, id] of Object.entries(BODY_STEPS)) {
    const builtin = declaredSteps.get(id)
    if (builtin) Object.defineProperty(obj, method, { value: builtin, writable: true, configurable: true })
  }
  Object.defineProperty(obj, 'bytes', {
    value: async function () {
      return new Uint8Array(await this.arrayBuffer())
    },
    writable: true,
    configurable: true,
  })
  Object.defineProperty(obj, 'bodyUsed', { get: () => false, configurable: true })
  return obj
}

/**
 * A fault of the storage (a file it could not read or write, the database failing or out
 * of reach), not of the workflow.
 */
function isStorageFault(e) {
  return (
    !!e &&
    (e.path !== undefined || e.code === 'CORRUPT_FILE' || e.code === 'INTERNAL_PANIC' || e.code === 'DATABASE_ERROR')
  )
}
const RUNTIME_ERRORS =
  /^(WorkflowRuntimeError|CorruptedEventLogError|RuntimeDecryptionError|StepNotRegisteredError|WorkflowNotRegisteredError)$/

/** The storage fault of a run whose log has no `run_created` event (a lost file). */
function missingRunCreated(world, runId) {
  const dir = world.kind === 'postgres' ? 'workflow.workflow_events' : require('node:path').join(world.dataDir, 'events')
  const err = new errors.WorkflowWorldError(
    `Corrupt workflow data: the event log of run ${runId} in ${dir} has no run_created event (${world.kind === 'postgres' ? 'its row is missing' : 'its file is missing'})`,
    { code: 'CORRUPT_FILE' },
  )
  err.path = dir
  err.runId = runId
  return err
}

/**
 * A step's event refused because the step does not exist, though this execution wrote its
 * `step_created` (the log holds it): that write was lost — the database server crashed
 * before flushing it (a step's beginning commits without waiting for its flush, see
 * README: PostgreSQL), or its row was removed. (The local journal keeps the step it wrote
 * and rewrites its file.) A storage fault (the run stops here and is taken up again, the
 * step running again), never the workflow's error.
 */
function lostStep(exec, eventType, stepId, refusal) {
  if (
    !refusal ||
    refusal.name !== 'WorkflowWorldError' ||
    !eventType.startsWith('step_') ||
    refusal.message !== `Step "${stepId}" not found` ||
    !exec.log.events(stepId).some((e) => e.eventType === 'step_created')
  ) {
    return refusal
  }
  const where =
    exec.world.kind === 'postgres' ? 'workflow.workflow_steps' : require('node:path').join(exec.world.dataDir, 'steps')
  const err = new errors.WorkflowWorldError(
    `Corrupt workflow data: step ${stepId} of run ${exec.runId} is missing in ${where}, though its step_created was written (a lost write: the database server crashed before flushing it, or its ${exec.world.kind === 'postgres' ? 'row' : 'file'} was removed); ${eventType} was not written, and the step runs again when the run is taken up again`,
    { code: 'CORRUPT_FILE', cause: refusal },
  )
  err.path = where
  err.runId = exec.runId
  return err
}

class Execution {
  /**
   * @param engine the Engine
   * @param world the native World
   * @param runId
   * @param def { workflowId, fn }
   * @param fresh `{ workflowName, input, started? }` of a run just created here: its log need
   *   not be read (`started`: `{ token, startedAt }` when it was also leased and started)
   * @param recovered this execution follows one that met a state it could not continue
   *   from (see inconsistent()): meeting one again is reported, not retried
   */
  constructor(engine, world, runId, def, fresh, recovered = false) {
    this.fresh = fresh
    this.recovered = recovered
    this.failure = null // why this run could not go on here (reported by resumeRuns())
    this.retry = false // the engine launches the run again (repaired) once this one stopped
    this.repairs = [] // what crash recovery finished before the replay
    this.engine = engine
    this.world = world
    this.runId = runId
    this.def = def
    this.log = new ReplayLog()
    this.leaseToken = undefined // PostgreSQL: the fencing token of this execution's lease
    this.journal = new RunJournal(
      engine,
      world,
      runId,
      (err) => this.onWriteFault(err),
      () => this.leaseToken,
    )
    this.handlers = new Map() // correlationId -> live invocation (onEvent)
    this.timers = new Set()
    this.stopped = null
    this.divergence = null
    this.ops = []
    this.sleeping = 0 // sleeps in progress
    this.inflight = 0 // step attempts running (code, then their closing event)
    this.draining = null // why the run is to stop here once no step is in flight
    this.refreshing = null // the look at other writers' events in progress
    this.lookAgain = false
    this.following = false // see follow()
    const open = (name, start, mode) => world.openStream(name, start, mode)
    this.streams = worldStreams(world, globalThis)
    // A stream revived in the workflow body (a step's result, a webhook request's body)
    // keeps its name: handed to a step it travels as the same reference (every step reads
    // it whole, as in WDK), not as a copy that drains it.
    const base = externalRevivers(globalThis, (ref) => {
      const stream = refReadable(globalThis, open, ref)
      stream[STREAM_NAME] = ref.name
      if (ref.type) stream[STREAM_TYPE] = ref.type
      if (ref.framing) stream[STREAM_FRAMING] = ref.framing
      return stream
    })
    this.revivers = {
      ...base,
      // In the workflow body a revived Request or Response reads its body through WDK's
      // built-in steps (recorded, repeatable: bodyUsed stays false); in a step it is
      // the plain object.
      Request: (value) => withBodySteps(base.Request(value)),
      Response: (value) => withResponseFields(withBodySteps(base.Response(value)), value),
      // A writable handed to a step (getWritable() in the workflow body) is the run's stream.
      WritableStream: (ref) => this.stepWritable(ref.name, stepStore.getStore()?.ops),
      StepFunction: (value) => {
        const fn = declaredSteps.get(value && value.stepId)
        if (!fn) throw new Error(`Step function "${value && value.stepId}" not found. Make sure the step function is registered.`)
        return fn
      },
    }
    this.reducers = clientReducers({
      global: globalThis,
      runId,
      ops: this.ops,
      framedByteStreams: true,
      streams: this.streams,
      stepSide: true,
    })
    let settle
    this.done = new Promise((r) => (settle = r))
    this.settle = settle
    let ready
    // `{ held, error? }` once the run is recovered and its log read (or it stopped before)
    this.ready = new Promise((r) => (ready = r))
    this.markReady = (info) => {
      if (!ready) return
      const r = ready
      ready = null
      r(info)
    }
  }

  // ------------------------------------------------------------------ the event log

  /** Queues a write nobody waits for (its refusal goes to onWriteFault). */
  writeBackground(eventType, correlationId, eventData, invocation = false) {
    this.journal
      .write(eventType, correlationId, eventData, true, invocation)
      .then((res) => this.noteWritten(res))
      .catch((e) => this.onWriteFault(e))
  }

  /**
   * Writes an event and waits for it. Resolves to the core's answer, or to HALT when the
   * run ended under us (or stopped here); other refusals reject.
   */
  async record(eventType, correlationId, eventData, invocation = false) {
    // A look asked for before this write (an in-process cancel, say) comes first.
    if (this.refreshing) await this.refreshing
    if (this.stopped) return HALT
    let res
    try {
      res = await this.journal.write(eventType, correlationId, eventData, false, invocation)
    } catch (e) {
      return this.settleRefusal(lostStep(this, eventType, correlationId, e))
    }
    this.noteWritten(res)
    return res
  }

  /**
   * HALT for refusals that end the run here and for storage faults (the operator's
   * problem, never the run's: reported, and the run stops here, resumable); rethrows the
   * others (the rules refusing what the workflow asked, such as TooEarlyError).
   */
  async settleRefusal(e) {
    if (e instanceof Halted) return HALT
    if (e && e.code === 'LEASE_LOST') {
      this.leaseLost(e)
      return HALT
    }
    if (e && RUN_GONE.has(e.name)) {
      await this.runEnded(e)
      return HALT
    }
    if (isStorageFault(e)) {
      this.onWriteFault(e)
      return HALT
    }
    throw e
  }

  /** Another process took the run over (this one was stopped too long): it continues there. */
  leaseLost(err) {
    if (this.stopped) return
    console.warn(`[workflow-native] ${err.message}`)
    this.stop('lease lost to another process')
  }

  /** A written event joins the log (and reaches its invocation: a hook_conflict answer). */
  noteWritten(res) {
    const ev = res && res.event
    if (!ev || !this.log.add(ev, false)) return
    // (on PostgreSQL, the batch that ended the run released its lease too)
    if (isTerminalRunEvent(ev.eventType)) this.endedHere = true
    const h = ev.correlationId && this.handlers.get(ev.correlationId)
    if (h) h.onEvent(ev)
  }

  /** A write was refused or failed where nobody can handle it (or a storage fault). */
  onWriteFault(err) {
    if (this.stopped || err instanceof Halted) return
    // another process took the run over: it continues there; nothing more is written here
    if (err && err.code === 'LEASE_LOST') return this.leaseLost(err)
    if (err && RUN_GONE.has(err.name)) {
      this.runEnded(err)
      return
    }
    // Nothing after the failed write may be written; the run stays as it is on disk (not
    // failed: that is for user code) and can be resumed once the fault is fixed.
    if (err && typeof err === 'object' && err.runId === undefined) {
      try {
        err.runId = this.runId
      } catch {
        // a frozen error: reported as it is
      }
    }
    this.journal.haltWrites()
    this.failure = err
    console.error(`${this.faultStopped()}:`, err)
    this.stop('write failed')
  }

  /** How a storage fault that stops the run here is reported (one wording for all). */
  faultStopped() {
    return `[workflow-native] A storage fault stopped run ${this.runId} in this process (not failed: ${
      this.engine.worker ? 'the worker claims it again later' : 'resumeRuns() takes it up once the fault is fixed'
    })`
  }

  /**
   * The one place for a write refused as if the run had ended under us (cancelled, or
   * finished by another writer). What the run's files say decides, not the refusal: no
   * more writes; the run's own terminal event, if another writer stored one, is picked
   * up; a run whose file says it ended stops here quietly. A run that did not end has
   * files that disagree with what this execution knows (a step or wait already closed
   * without its event, say): see inconsistent().
   */
  async runEnded(refusal) {
    if (this.stopped) return
    this.journal.haltWrites()
    try {
      this.onForeign(await this.journal.poll())
    } catch {
      // the log could not be read: the run's file decides
    }
    if (this.stopped) return
    let status
    try {
      status = await this.world.runStatus(this.runId)
    } catch (e) {
      if (!this.stopped) this.onWriteFault(e)
      return
    }
    if (this.stopped) return
    if (status === 'cancelled') return this.stop('cancelled')
    if (status === 'completed' || status === 'failed') return this.stop('finished elsewhere')
    this.inconsistent(refusal, status)
  }

  /**
   * The run goes on, yet the world refused a write as if it had not: its files disagree
   * with this execution (a crash left an entity ahead of its event, or something changed
   * them behind the engine). The execution stops; the first time, the engine launches the
   * run again, which repairs the files and replays the log (see recoverRun()); a second
   * time, the run stays as it is and the reason is reported (never a verdict on the run).
   */
  inconsistent(refusal, status) {
    const req = refusal && refusal.request
    const what = req ? `${req.eventType}${req.correlationId ? ` for ${req.correlationId}` : ''}` : 'a write'
    const reason = `the world refused ${what} (${refusal && refusal.name}: ${refusal && refusal.message}) although the run is ${status}`
    if (!this.recovered) {
      console.warn(`[workflow-native] Run ${this.runId}: ${reason}; repairing its files and replaying it`)
      this.retry = true
    } else {
      const err = new errors.WorkflowRuntimeError(
        `Run ${this.runId} cannot continue in this process: ${reason}, and again after its files were repaired (left as it is; not failed)`,
        { cause: refusal },
      )
      err.runId = this.runId
      this.failure = err
      console.error(`[workflow-native] ${err.message}`)
    }
    this.stop('inconsistent')
  }

  /** Events written by others (a hook payload, a completed wait, a cancellation). */
  onForeign(events) {
    for (const ev of events) {
      if (this.stopped) return
      if (!this.log.add(ev, false)) continue
      if (isTerminalRunEvent(ev.eventType)) {
        this.stop(ev.eventType === 'run_cancelled' ? 'cancelled' : 'finished elsewhere')
        return
      }
      const h = ev.correlationId && this.handlers.get(ev.correlationId)
      if (h) h.onEvent(ev)
    }
  }

  /**
   * Something in this process says the run changed (a queue message for it: a cancel, a
   * hook payload, a wake-up): look now. Until the look is done, the run writes nothing
   * more (see record()), so a cancellation stops it before its next event.
   */
  refresh() {
    if (this.stopped) return Promise.resolve()
    // One look at a time; asks during a look get one more look after it.
    if (this.refreshing) {
      this.lookAgain = true
      return this.refreshing
    }
    const look = Promise.resolve(this.leased)
      .then(() => (this.stopped ? [] : this.journal.poll()))
      .then(
        (events) => this.onForeign(events),
        (e) => console.error(`[workflow-native] Could not read the events of run ${this.runId}:`, e),
      )
      .finally(() => {
        this.refreshing = null
        if (this.lookAgain) {
          this.lookAgain = false
          this.refresh()
        }
      })
    this.refreshing = look
    return look
  }

  /**
   * On resume: finishes what a crash left of the run (an entity written without its
   * event, a lock guarding nothing), then loads the whole log, read strictly (a corrupt
   * file rejects, naming it).
   */
  async recover() {
    const rec = JSON.parse(await this.world.recoverRun(this.runId))
    this.repairs = rec.repairs
    for (const ev of rec.events) this.log.add(ev, true)
  }

  /**
   * Stops the run here once no step attempt is in flight (a worker stopping): an attempt
   * running now finishes and its outcome is written; no new attempt starts. Resolves when
   * the run stopped here.
   */
  drain(reason) {
    if (this.stopped) return this.done
    if (!this.draining) this.draining = reason
    if (this.inflight === 0) this.stop(reason)
    return this.done
  }

  /** A step attempt began running (see drain()). */
  attemptBegan() {
    this.inflight++
  }

  /** A step attempt ended, its closing event written (or refused). */
  attemptEnded() {
    this.inflight--
    if (this.draining && this.inflight === 0) this.stop(this.draining)
  }

  /** Stops the run here: timers cancelled, pending invocations never settle. */
  stop(reason) {
    if (this.stopped) return
    this.stopped = reason
    for (const t of this.timers) t.cancel()
    this.timers.clear()
    for (const h of this.handlers.values()) if (h.onStop) h.onStop()
    this.handlers.clear()
    this.journal.close()
    this.markReady({ held: true, error: this.failure || undefined })
    this.settle()
  }

  /**
   * Starts following the events other writers add to the run (idempotent). A fresh run
   * starts at its first invocation rather than when it starts: a body that returns
   * without one (a no-step workflow) then costs no follower, whose setup and teardown
   * each wake a native thread. Nothing is missed by starting late: another writer can
   * address an invocation only after the run wrote its event (a hook's token, a wait's
   * id), which comes after this; and a cancel() made before it refuses the invocation's
   * write, which stops the run here (see settleRefusal()).
   */
  follow() {
    if (this.following || this.stopped) return
    this.following = true
    // (outside the workflow body's context: the follower's callbacks are not its code)
    stepStore.exit(() =>
      workflowStore.exit(() =>
        this.journal.follow(
          [...this.log.known],
          (events) => this.onForeign(events),
          (err) => console.error(`[workflow-native] Could not follow the events of run ${this.runId}:`, err),
        ),
      ),
    )
  }

  /** The next recorded invocation if replaying, checked against what the code calls now. */
  claim(kind, key, describe) {
    if (this.stopped) return HALT
    this.follow()
    const inv = this.log.nextRecorded()
    if (!inv) return null
    if (inv.kind !== kind || (key !== undefined && inv.key !== key)) {
      const err = new errors.ReplayDivergenceError(
        `Replay divergence in run ${this.runId}: the workflow called ${describe}, but the event log recorded ${
          inv.kind === 'step' ? `step "${inv.key}"` : inv.kind === 'hook' ? `hook "${inv.key}"` : 'a sleep'
        } (event ${inv.event.eventId}) at this point.`,
        { eventId: inv.event.eventId },
      )
      this.diverge(err)
      return HALT
    }
    return inv
  }

  /**
   * What an invocation returns once the run stopped here (cancelled, failed, finished
   * elsewhere): a promise that never settles, so the abandoned workflow code neither
   * continues nor raises unhandled rejections.
   */
  halt() {
    return new Promise(() => {})
  }

  diverge(err) {
    if (this.divergence || this.stopped) return Promise.resolve()
    this.divergence = err
    return this.fail(err, 'REPLAY_DIVERGENCE')
  }

  timer(at, keepAlive = true) {
    const t = this.engine.clock.at(at, { keepAlive })
    this.timers.add(t)
    return {
      promise: t.promise.then(() => this.timers.delete(t)),
      cancel: () => {
        t.cancel()
        this.timers.delete(t)
      },
    }
  }

  /** Waits until `at` (clock time); false when the run stopped meanwhile. */
  async wait(at) {
    const t = this.timer(at)
    this.engine.clock.poke()
    await t.promise
    return !this.stopped
  }

  // ------------------------------------------------------------------ values

  serialize(value, context) {
    return serializeValue(value, this.reducers, context, false).bytes
  }

  hydrate(taggedBytes) {
    const bytes = untag(taggedBytes)
    if (!bytes) return undefined
    return this.hydrateBytes(bytes)
  }

  hydrateBytes(bytes) {
    return hydratePayload(bytes, undefined, true, this.revivers)
  }

  flushOps() {
    const ops = this.ops.splice(0)
    for (const op of ops) {
      Promise.resolve(op).catch((e) => {
        if (e === undefined || (e && e.name === 'AbortError')) return
        console.error(`[workflow-native] Background stream of run ${this.runId} failed:`, e)
      })
    }
  }

  // ------------------------------------------------------------------ the run

  /**
   * Runs (or resumes) the workflow to its end here. Resolves when it stopped or ended.
   * `leased`: resolves to whether this process holds the run's lease.
   */
  async run(leased) {
    let held
    try {
      held = await leased
    } catch (e) {
      // a storage fault: the operator's problem, not the run's; it stays resumable
      console.error(`${this.faultStopped()}: could not take its lease:`, e)
      if (e && typeof e === 'object' && e.runId === undefined) e.runId = this.runId
      this.failure = e
      held = false
    }
    if (!held) {
      this.markReady({ held: false, error: this.failure || undefined })
      return this.stop(this.failure ? 'lease unreadable' : 'held by another process')
    }
    try {
      if (this.fresh) {
        this.log.runCreated = { eventData: { workflowName: this.fresh.workflowName, input: this.fresh.input } }
        // PostgreSQL, a worker's own start(): run_started is written already
        if (this.fresh.started) {
          this.log.runStartedAt = Date.parse(this.fresh.started.startedAt) || Date.now()
          // start() wrote run_started: the body's first write (a step, or the result)
          // comes soon, and the writer thread may be asleep
          this.journal.warm()
        }
      }
      else {
        try {
          await this.recover()
        } catch (e) {
          return this.notResumable(e)
        }
      }
      if (this.stopped) return
      // A resumed run follows the events other writers add from the start, and looks for
      // those added between the log read and the start of following. A fresh run starts
      // following at its first invocation (see follow()).
      if (!this.fresh) {
        this.follow()
        this.onForeign(await this.journal.poll())
      }
      if (this.stopped) return
      if (this.log.terminal) return this.stop('already finished')
      // The run file exists, so its log lost a file: a storage fault, not the run's.
      if (!this.log.runCreated) throw missingRunCreated(this.world, this.runId)
      this.markReady({ held: true })
      if (this.log.runStartedAt === undefined) {
        const res = await this.record('run_started', undefined, undefined)
        if (res === HALT) return
        if (res.run && res.run.startedAt) this.log.runStartedAt = Date.parse(res.run.startedAt)
      }
      const data = this.log.runCreated.eventData || {}
      this.workflowName = data.workflowName
      const input = this.hydrate(data.input)
      const args = Array.isArray(input) ? input : []
      // A run started from inside a step (or a hook resumed there) must not inherit the
      // step's context: its body is a workflow body.
      let result
      try {
        result = await stepStore.exit(() => workflowStore.run({ exec: this }, () => this.def.fn(...args)))
      } finally {
        // invocations the body made in the turn it settled in are never committed
        this.journal.dropInvocations()
      }
      if (this.stopped || this.divergence) return
      const unreached = this.log.unreached()
      if (unreached) {
        return await this.diverge(
          new errors.ReplayDivergenceError(
            `Replay divergence in run ${this.runId}: the workflow finished, but the event log recorded more (event ${unreached.event.eventId}).`,
            { eventId: unreached.event.eventId },
          ),
        )
      }
      let output
      try {
        output = this.serialize(result, 'workflow return value')
      } catch (e) {
        return await this.fail(e, 'USER_ERROR')
      }
      this.flushOps()
      const res = await this.record('run_completed', undefined, { output: tagged(output) })
      if (res === HALT) return
      // what the run's returnValue reads, as stored (the write above is durable)
      this.output = output
      this.stop('completed')
    } catch (err) {
      if (this.stopped) return
      if (errors.ReplayDivergenceError.is(err)) return await this.diverge(err)
      // A file of the run that cannot be read (its log, say): the operator's problem, not
      // a verdict on the run.
      if (isStorageFault(err)) return this.onWriteFault(err)
      const code = err && typeof err.name === 'string' && RUNTIME_ERRORS.test(err.name) ? 'RUNTIME_ERROR' : 'USER_ERROR'
      await this.fail(err, code)
    } finally {
      this.markReady({ held: true, error: this.failure || undefined })
      this.settle()
    }
  }

  /** Recovery could not bring the run to a state to replay from: reported, left as it is. */
  notResumable(e) {
    if (this.stopped) return
    if (isStorageFault(e)) return this.onWriteFault(e)
    this.journal.haltWrites()
    this.failure = e
    console.error(`[workflow-native] Run ${this.runId} could not be resumed (left as it is, not failed):`, e)
    this.stop('not resumable')
  }

  async fail(err, errorCode) {
    if (this.stopped) return
    try {
      const { message, stack } = await normalizeError(err)
      await this.journal.write('run_failed', undefined, { error: { message, stack }, errorCode })
    } catch (e) {
      // A storage fault: the run is not failed on disk (the core took the attempt back);
      // it stays resumable, and its replay reaches the same failure once the fault is fixed.
      if (isStorageFault(e)) return this.onWriteFault(e)
      if (!(e instanceof Halted || (e && RUN_GONE.has(e.name)))) {
        console.error(`[workflow-native] Could not record the failure of run ${this.runId}:`, e)
      }
    }
    this.stop('failed')
  }

  // ------------------------------------------------------------------ invocations

  step(def, args, thisVal) {
    return callStep(this, def, args, thisVal)
  }

  sleep(param) {
    return sleep(this, param)
  }

  createHook(options, isWebhook) {
    return createHook(this, options, isWebhook)
  }

  /** The run's stream as a step-side WritableStream (each value one devalue frame). */
  stepWritable(name, ops) {
    const world = this.world
    const runId = this.runId
    const reducers = this.reducers
    const exec = this
    const writable = new WritableStream({
      async write(value) {
        const chunk = frame(Buffer.from(`devl${stringify(value, reducers)}`, 'utf8'))
        exec.flushOps()
        const p = world.writeStreamChunks(name, runId, [chunk])
        if (ops) ops.push(p.catch(() => {}))
        await p
      },
      async close() {
        const p = world.closeStream(name, runId)
        if (ops) ops.push(p.catch(() => {}))
        await p
      },
    })
    writable[STREAM_NAME] = name
    return writable
  }
}

module.exports = { Execution, tagged, untag }
