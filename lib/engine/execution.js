'use strict'
// One run executing in this process. The workflow function runs once, in memory; each
// step / sleep / hook it calls is an *invocation* recorded in the run's event log
// (world-local format, written by the Rust core). After a restart the function runs
// again from the top and every invocation already in the log is answered from it
// (deterministic replay): the k-th invocation must match the k-th recorded one (same
// kind, same step name / hook token), or the run fails with ReplayDivergenceError.

const { stringify } = require('../vendor/devalue.cjs')
const { binding, fromNative } = require('../native.js')
const { clientReducers, serializeValue, frame } = require('../serialize.js')
const { externalRevivers, hydratePayload } = require('../hydrate.js')
const { refReadable, worldStreams } = require('../streams.js')
const { workflowStore, stepStore } = require('./context.js')
const { durationToDate } = require('../duration.js')
const errors = require('../../errors.js')

const STREAM_NAME = Symbol.for('WORKFLOW_STREAM_NAME')
const HALT = Symbol('workflow-native halt')
const DEFAULT_MAX_RETRIES = 3
/** Recorded events that settle an invocation (released in log order on replay). */
const OUTCOMES = new Set(['step_completed', 'step_failed', 'wait_completed'])
/** Writes that mean the run ended under us (cancelled or finished by another writer). */
const RUN_GONE = new Set(['RunExpiredError', 'EntityConflictError'])

/** `{"__type":"Uint8Array","data":<base64>}`: how world-local encodes bytes in JSON. */
function tagged(buf) {
  return { __type: 'Uint8Array', data: Buffer.from(buf).toString('base64') }
}

function untag(v) {
  if (v && typeof v === 'object' && v.__type === 'Uint8Array' && typeof v.data === 'string') {
    return Buffer.from(v.data, 'base64')
  }
  return undefined
}

function isTerminalRunEvent(type) {
  return type === 'run_completed' || type === 'run_failed' || type === 'run_cancelled'
}

function errorText(err) {
  if (err instanceof Error) return err.message
  if (typeof err === 'string') return err
  try {
    return JSON.stringify(err)
  } catch {
    return String(err)
  }
}

class Execution {
  /**
   * @param engine the Engine
   * @param world the native World
   * @param runId
   * @param def { workflowId, fn }
   */
  constructor(engine, world, runId, def, fresh) {
    /** `{ workflowName, input }` of a run just created here: its log need not be read. */
    this.fresh = fresh
    this.engine = engine
    this.world = world
    this.runId = runId
    this.def = def
    this.known = new Set() // event ids already applied
    this.invocations = [] // recorded creations, in log order: { kind, corr, key, event }
    this.nextInvocation = 0
    this.eventsByCorr = new Map() // correlationId -> [event]
    this.handlers = new Map() // correlationId -> live invocation (onEvent)
    this.timers = new Set()
    this.stopped = null
    this.divergence = null
    this.ops = []
    this.runStartedAt = undefined
    this.terminal = false
    this.sleeping = 0 // sleeps in progress
    this.outcomes = [] // recorded outcome events, in log order (replay)
    this.outcomeCursor = 0
    this.outcomeWaiters = new Map() // correlationId -> release
    this.pumping = false
    this.stallCheck = null
    const open = (name, start, mode) => world.openStream(name, start, mode)
    this.streams = worldStreams(world, globalThis)
    const base = externalRevivers(globalThis, (ref) => refReadable(globalThis, open, ref))
    this.revivers = {
      ...base,
      // A writable handed to a step (getWritable() in the workflow body) is the run's stream.
      WritableStream: (ref) => this.stepWritable(ref.name, stepStore.getStore()?.ops),
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
  }

  // ------------------------------------------------------------------ event log

  /** Writes one event through the core (synchronously, in call order). */
  write(eventType, correlationId, eventData) {
    const req = { eventType, specVersion: 3 }
    if (correlationId !== undefined) req.correlationId = correlationId
    if (eventData !== undefined) req.eventData = eventData
    let res
    try {
      res = JSON.parse(this.world.createEventSync(this.runId, JSON.stringify(req)))
    } catch (e) {
      throw fromNative(e)
    }
    if (res.event && res.event.eventId) {
      this.known.add(res.event.eventId)
      this.index(res.event, false)
    }
    return res
  }

  /** Files an event into the replay indexes. `recorded`: read from the log (not written now). */
  index(ev, recorded) {
    const t = ev.eventType
    if (ev.correlationId) {
      let list = this.eventsByCorr.get(ev.correlationId)
      if (!list) this.eventsByCorr.set(ev.correlationId, (list = []))
      list.push(ev)
    }
    if (recorded) {
      if (t === 'step_created') {
        this.invocations.push({ kind: 'step', corr: ev.correlationId, key: ev.eventData && ev.eventData.stepName, event: ev })
      } else if (t === 'hook_created' || t === 'hook_conflict') {
        this.invocations.push({ kind: 'hook', corr: ev.correlationId, key: ev.eventData && ev.eventData.token, event: ev })
      } else if (t === 'wait_created') {
        this.invocations.push({ kind: 'wait', corr: ev.correlationId, key: undefined, event: ev })
      }
    }
    if (t === 'run_started' && this.runStartedAt === undefined) this.runStartedAt = Date.parse(ev.createdAt)
    if (isTerminalRunEvent(t)) this.terminal = true
  }

  /** Loads the whole log (at start or resume). */
  load() {
    let events
    try {
      events = JSON.parse(this.world.listEventsJson(this.runId))
    } catch (e) {
      throw fromNative(e)
    }
    for (const ev of events) {
      if (this.known.has(ev.eventId)) continue
      this.known.add(ev.eventId)
      this.index(ev, true)
      if (ev.eventType === 'run_created') this.runCreated = ev
      if (OUTCOMES.has(ev.eventType) && ev.correlationId) this.outcomes.push(ev)
    }
  }

  /**
   * Replay hands recorded outcomes (step results, completed sleeps) back in the order the
   * log recorded them, one per turn of the event loop, as the official events consumer
   * does: parallel branches then reach their next calls in the recorded order.
   */
  replayOutcome(corr) {
    return new Promise((resolve) => {
      this.outcomeWaiters.set(corr, resolve)
      this.pumpOutcomes()
    })
  }

  pumpOutcomes() {
    if (this.pumping || this.stopped) return
    const ev = this.outcomes[this.outcomeCursor]
    if (!ev) {
      // nothing recorded is left: release whatever waits (cannot happen with a
      // consistent log, but never hang)
      for (const [corr, resolve] of this.outcomeWaiters) {
        this.outcomeWaiters.delete(corr)
        resolve()
      }
      return
    }
    const resolve = this.outcomeWaiters.get(ev.correlationId)
    if (resolve) {
      this.outcomeWaiters.delete(ev.correlationId)
      this.outcomeCursor++
      this.pumping = true
      resolve()
      setImmediate(() => {
        this.pumping = false
        this.pumpOutcomes()
      })
      return
    }
    // The next recorded outcome belongs to a call the code has not made yet. If the
    // workflow stays stuck (nothing else can run), release the earliest outcome that is
    // waited for, out of order, rather than hang.
    if (this.outcomeWaiters.size === 0 || this.stallCheck) return
    const at = this.outcomeCursor
    this.stallCheck = setImmediate(() =>
      setImmediate(() => {
        this.stallCheck = null
        if (this.outcomeCursor !== at || this.stopped) return this.pumpOutcomes()
        const idx = this.outcomes.findIndex((e, i) => i >= at && this.outcomeWaiters.has(e.correlationId))
        if (idx < 0) return
        const [late] = this.outcomes.splice(idx, 1)
        const r = this.outcomeWaiters.get(late.correlationId)
        this.outcomeWaiters.delete(late.correlationId)
        r()
        this.pumpOutcomes()
      }),
    )
  }

  /**
   * Picks up events written by others since the last look (a hook payload, a wait
   * completed by wakeUp(), a cancellation) and hands them to the waiting invocations.
   */
  refresh() {
    if (this.stopped) return
    let events
    try {
      events = JSON.parse(this.world.listEventsJson(this.runId))
    } catch (e) {
      console.error(`[workflow-native] Could not read the events of run ${this.runId}:`, fromNative(e))
      return
    }
    for (const ev of events) {
      if (this.known.has(ev.eventId)) continue
      this.known.add(ev.eventId)
      this.index(ev, false)
      if (isTerminalRunEvent(ev.eventType)) {
        this.stop(ev.eventType === 'run_cancelled' ? 'cancelled' : 'finished elsewhere')
        return
      }
      const h = ev.correlationId && this.handlers.get(ev.correlationId)
      if (h) h.onEvent(ev)
    }
  }

  /** Stops the run here: timers cancelled, pending invocations never settle. */
  stop(reason) {
    if (this.stopped) return
    this.stopped = reason
    for (const t of this.timers) t.cancel()
    this.timers.clear()
    for (const h of this.handlers.values()) if (h.onStop) h.onStop()
    this.handlers.clear()
    this.settle()
  }

  /** The next recorded invocation if replaying, checked against what the code calls now. */
  claim(kind, key, describe) {
    if (this.stopped) return HALT
    if (this.nextInvocation >= this.invocations.length) return null
    const inv = this.invocations[this.nextInvocation++]
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
    if (this.divergence || this.stopped) return
    this.divergence = err
    this.fail(err, 'REPLAY_DIVERGENCE')
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

  // ------------------------------------------------------------------ values

  serialize(value, context) {
    return serializeValue(value, this.reducers, context, false).bytes
  }

  hydrate(taggedBytes) {
    const bytes = untag(taggedBytes)
    if (!bytes) return undefined
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

  /** Runs (or resumes) the workflow to its end here. Resolves when it stopped or ended. */
  async run() {
    try {
      if (this.fresh) this.runCreated = { eventData: this.fresh }
      else this.load()
      if (this.terminal) return this.stop('already finished')
      if (!this.runCreated) throw new errors.WorkflowRuntimeError(`Run ${this.runId} has no run_created event`)
      if (this.runStartedAt === undefined) {
        const res = this.write('run_started', undefined, undefined)
        if (res.run && res.run.startedAt) this.runStartedAt = Date.parse(res.run.startedAt)
      }
      const data = this.runCreated.eventData || {}
      this.workflowName = data.workflowName
      const input = this.hydrate(data.input)
      const args = Array.isArray(input) ? input : []
      // A run started from inside a step (or a hook resumed there) must not inherit the
      // step's context: its body is a workflow body.
      const result = await stepStore.exit(() => workflowStore.run({ exec: this }, () => this.def.fn(...args)))
      if (this.stopped) return
      if (this.divergence) return
      if (this.nextInvocation < this.invocations.length) {
        const inv = this.invocations[this.nextInvocation]
        return this.diverge(
          new errors.ReplayDivergenceError(
            `Replay divergence in run ${this.runId}: the workflow finished, but the event log recorded more (event ${inv.event.eventId}).`,
            { eventId: inv.event.eventId },
          ),
        )
      }
      let output
      try {
        output = this.serialize(result, 'workflow return value')
      } catch (e) {
        return this.fail(e, 'USER_ERROR')
      }
      this.flushOps()
      this.write('run_completed', undefined, { output: tagged(output) })
      this.stop('completed')
    } catch (err) {
      if (this.stopped) return
      if (errors.ReplayDivergenceError.is(err)) return this.diverge(err)
      const code = err && typeof err.name === 'string' && /^(WorkflowRuntimeError|CorruptedEventLogError|RuntimeDecryptionError|StepNotRegisteredError|WorkflowNotRegisteredError)$/.test(err.name)
        ? 'RUNTIME_ERROR'
        : 'USER_ERROR'
      this.fail(err, code)
    } finally {
      this.settle()
    }
  }

  fail(err, errorCode) {
    if (this.stopped) return
    try {
      this.write('run_failed', undefined, {
        error: { message: errorText(err), stack: err instanceof Error && err.stack ? err.stack : undefined },
        errorCode,
      })
    } catch (e) {
      if (!(e && (e.name === 'EntityConflictError' || e.name === 'RunExpiredError'))) {
        console.error(`[workflow-native] Could not record the failure of run ${this.runId}:`, e)
      }
    }
    this.stop('failed')
  }

  // ------------------------------------------------------------------ steps

  /** A step called from the workflow body. */
  async step(def, args) {
    const inv = this.claim('step', def.stepName, `step "${def.stepName}"`)
    if (inv === HALT) return this.halt()
    let stepId
    if (inv) {
      stepId = inv.corr
    } else {
      stepId = `step_${binding.newUlid()}`
      const input = this.serialize({ args, closureVars: undefined, thisVal: undefined }, 'step arguments')
      this.flushOps()
      if (!this.writeOrStop('step_created', stepId, { stepName: def.stepName, workflowName: this.workflowName, input: tagged(input) })) {
        return this.halt()
      }
    }
    const recorded = this.eventsByCorr.get(stepId) || []
    const created = recorded.find((e) => e.eventType === 'step_created')
    const completed = recorded.find((e) => e.eventType === 'step_completed')
    const failed = recorded.find((e) => e.eventType === 'step_failed')
    if (completed || failed) {
      await this.replayOutcome(stepId)
      if (this.stopped) return this.halt()
      if (completed) return this.hydrate(completed.eventData && completed.eventData.result)
      throw this.stepError(failed)
    }
    let startedAt
    let lastRetry
    for (const e of recorded) {
      if (e.eventType === 'step_started' && startedAt === undefined) startedAt = Date.parse(e.createdAt)
      if (e.eventType === 'step_retrying') lastRetry = e
    }
    if (lastRetry && lastRetry.eventData && lastRetry.eventData.retryAfter) {
      const at = Date.parse(lastRetry.eventData.retryAfter)
      if (at > this.engine.clock.now() && !(await this.wait(at))) return this.halt()
    }
    // Each attempt gets its own copy of the arguments, from the recorded input.
    const input = created && created.eventData && created.eventData.input
    const argsOf = () => {
      const stored = input && this.hydrate(input)
      return stored && Array.isArray(stored.args) ? stored.args : args
    }
    return this.attempts(def, stepId, argsOf, startedAt)
  }

  /** An invocation's creation event; false when the run ended under us (stop quietly). */
  writeOrStop(type, corr, data) {
    try {
      this.write(type, corr, data)
      return true
    } catch (e) {
      if (e && RUN_GONE.has(e.name)) {
        this.refresh()
        if (!this.stopped) this.stop('run ended')
        return false
      }
      throw e
    }
  }

  stepError(ev) {
    const d = ev.eventData || {}
    const msg = typeof d.error === 'string' ? d.error : (d.error && d.error.message) || 'Step failed'
    const err = new errors.FatalError(msg)
    const stack = typeof d.stack === 'string' ? d.stack : d.error && d.error.stack
    if (stack) err.stack = stack
    return err
  }

  /** Waits until `at` (clock time); false when the run stopped meanwhile. */
  async wait(at) {
    const t = this.timer(at)
    this.engine.clock.poke()
    await t.promise
    return !this.stopped
  }

  async attempts(def, stepId, argsOf, firstStartedAt) {
    const maxRetries = def.maxRetries ?? DEFAULT_MAX_RETRIES
    for (;;) {
      if (this.stopped) return this.halt()
      let started
      try {
        started = this.write('step_started', stepId, { stepName: def.stepName })
      } catch (e) {
        if (e && e.name === 'TooEarlyError') {
          // the timer fired a little before the world's clock reached retryAfter
          const until = e.retryAfter ? new Date(e.retryAfter).getTime() : Date.now() + 1000
          if (!(await this.wait(Math.max(until, Date.now()) + 5))) return this.halt()
          continue
        }
        if (e && RUN_GONE.has(e.name)) {
          this.refresh()
          if (!this.stopped) this.stop('run ended')
          return this.halt()
        }
        throw e
      }
      const attempt = (started.step && started.step.attempt) || 1
      const stepStartedAt =
        firstStartedAt ?? (started.step && started.step.startedAt ? Date.parse(started.step.startedAt) : Date.now())
      if (attempt > maxRetries + 1) {
        const message = `Step "${def.stepName}" exceeded max retries (${maxRetries} ${maxRetries === 1 ? 'retry' : 'retries'})`
        this.write('step_failed', stepId, { stepName: def.stepName, error: message })
        throw new errors.FatalError(message)
      }
      const ops = []
      const meta = {
        exec: this,
        stepName: def.stepName,
        stepId,
        stepStartedAt: new Date(stepStartedAt),
        attempt,
        ops,
      }
      let result
      let failure
      let ok = false
      this.engine.busy++
      try {
        const args = stepStore.run(meta, argsOf)
        result = await stepStore.run(meta, () => def.fn(...args))
        await Promise.all(ops)
        ok = true
      } catch (err) {
        failure = err
      } finally {
        this.engine.busy--
        this.engine.clock.poke()
      }
      if (this.stopped) return this.halt()
      if (ok) {
        let bytes
        try {
          bytes = this.serialize(result, 'step return value')
        } catch (e) {
          failure = e
          ok = false
        }
        if (ok) {
          this.flushOps()
          const data = { stepName: def.stepName, workflowName: this.workflowName, result: tagged(bytes) }
          if (!this.writeStepEnd('step_completed', stepId, data)) return this.halt()
          return this.hydrate(tagged(bytes))
        }
      }
      const message = errorText(failure)
      const stack = failure instanceof Error && failure.stack ? failure.stack : undefined
      if (errors.FatalError.is(failure)) {
        if (!this.writeStepEnd('step_failed', stepId, { stepName: def.stepName, error: message, stack })) return this.halt()
        throw this.stepError({ eventData: { error: message, stack } })
      }
      if (attempt >= maxRetries + 1) {
        const full = `Step "${def.stepName}" failed after ${maxRetries} ${maxRetries === 1 ? 'retry' : 'retries'}: ${message}`
        if (!this.writeStepEnd('step_failed', stepId, { stepName: def.stepName, error: full, stack })) return this.halt()
        throw this.stepError({ eventData: { error: full, stack } })
      }
      const retryable = errors.RetryableError.is(failure) && failure.retryAfter instanceof Date
      const data = { stepName: def.stepName, error: message, stack }
      // In virtual time the world (which checks retryAfter against the real clock) would
      // refuse the early restart, so the delay is kept by the engine only.
      if (retryable && !this.engine.clock.virtual) data.retryAfter = failure.retryAfter.toISOString()
      if (!this.writeStepEnd('step_retrying', stepId, data)) return this.halt()
      // The official runtime redelivers after max(1 s, retryAfter - now).
      const at = retryable
        ? Math.max(failure.retryAfter.getTime(), this.engine.clock.now() + 1000)
        : this.engine.clock.now() + 1000
      if (!(await this.wait(at))) return this.halt()
    }
  }

  /** A step's closing event; false when the run ended meanwhile (cancelled): stop quietly. */
  writeStepEnd(type, stepId, data) {
    try {
      this.write(type, stepId, data)
      return true
    } catch (e) {
      if (e && (e.name === 'RunExpiredError' || e.name === 'EntityConflictError')) {
        this.refresh()
        if (!this.stopped) this.stop('run ended during a step')
        return false
      }
      throw e
    }
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
        const p = world.writeStreamChunks(name, runId, [chunk]).catch((e) => {
          throw fromNative(e)
        })
        if (ops) ops.push(p.catch(() => {}))
        await p
      },
      async close() {
        const p = world.closeStream(name, runId).catch((e) => {
          throw fromNative(e)
        })
        if (ops) ops.push(p.catch(() => {}))
        await p
      },
    })
    writable[STREAM_NAME] = name
    return writable
  }

  // ------------------------------------------------------------------ sleeps

  async sleep(param) {
    const inv = this.claim('wait', undefined, 'sleep()')
    if (inv === HALT) return this.halt()
    let corr
    let resumeAt
    if (inv) {
      corr = inv.corr
      resumeAt = Date.parse(inv.event.eventData && inv.event.eventData.resumeAt)
    } else {
      resumeAt = durationToDate(param, this.engine.clock.now()).getTime()
      corr = `wait_${binding.newUlid()}`
      if (!this.writeOrStop('wait_created', corr, { resumeAt: new Date(resumeAt).toISOString() })) return this.halt()
    }
    const recorded = this.eventsByCorr.get(corr) || []
    if (recorded.some((e) => e.eventType === 'wait_completed')) {
      await this.replayOutcome(corr)
      if (this.stopped) return this.halt()
      return
    }
    let wake
    const woken = new Promise((r) => (wake = r))
    const t = this.timer(resumeAt)
    this.handlers.set(corr, {
      onEvent: (ev) => {
        if (ev.eventType === 'wait_completed') wake()
      },
    })
    this.sleeping++
    this.engine.noteSleeping(this.runId)
    this.engine.clock.poke()
    await Promise.race([t.promise.then(() => 'timer'), woken.then(() => 'event')]).then((how) => {
      this.sleeping--
      t.cancel()
      this.handlers.delete(corr)
      if (how === 'timer' && !this.stopped) {
        try {
          this.write('wait_completed', corr, { resumeAt: new Date(resumeAt).toISOString() })
        } catch (e) {
          // completed meanwhile by wakeUp(): fine
          if (!(e && e.name === 'EntityConflictError')) throw e
        }
      }
    })
    if (this.stopped) return this.halt()
  }

  // ------------------------------------------------------------------ hooks

  createHook(options, isWebhook) {
    const opts = options || {}
    const given = typeof opts.token === 'string' ? opts.token : undefined
    const inv = this.claim('hook', given, `createHook(${given ? JSON.stringify(given) : ''})`)
    if (inv === HALT) return new EngineHook(this, null, given ?? '', isWebhook)
    let corr
    let token
    if (inv) {
      corr = inv.corr
      token = inv.key
    } else {
      corr = `hook_${binding.newUlid()}`
      token = given ?? newToken()
      // world-local's key order: token, metadata (when given), isWebhook
      const eventData = { token }
      if (opts.metadata !== undefined) eventData.metadata = tagged(this.serialize(opts.metadata, 'hook metadata'))
      eventData.isWebhook = !!isWebhook
      if (!this.writeOrStop('hook_created', corr, eventData)) return new EngineHook(this, null, token, isWebhook)
    }
    return new EngineHook(this, corr, token, isWebhook)
  }
}

const URL_ALPHABET = 'useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict'

/** A 21-character URL-safe random token (the shape of WDK's default hook tokens). */
function newToken() {
  const bytes = require('node:crypto').randomBytes(21)
  let out = ''
  for (let i = 0; i < 21; i++) out += URL_ALPHABET[bytes[i] & 63]
  return out
}

class EngineHook {
  #exec
  #corr
  #payloads = []
  #waiters = []
  #consumed = 0
  #conflict = null
  #disposed = false

  constructor(exec, corr, token, isWebhook) {
    this.#exec = exec
    this.#corr = corr
    this.token = token
    if (isWebhook) {
      this.url = `${webhookBase()}/.well-known/workflow/v1/webhook/${encodeURIComponent(token)}`
    }
    if (corr === null) return // the run stopped: this hook never yields
    for (const ev of exec.eventsByCorr.get(corr) || []) this.#onEvent(ev)
    exec.handlers.set(corr, { onEvent: (ev) => this.#onEvent(ev) })
  }

  #onEvent(ev) {
    if (ev.eventType === 'hook_conflict') {
      const d = ev.eventData || {}
      this.#conflict = { runId: d.conflictingRunId ?? d.runId ?? null }
      this.#flush()
    } else if (ev.eventType === 'hook_received') {
      this.#payloads.push(ev)
      this.#flush()
    } else if (ev.eventType === 'hook_disposed') {
      this.#disposed = true
    }
  }

  #flush() {
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0]
      if (this.#conflict) {
        this.#waiters.shift()
        w.reject(new errors.HookConflictError(this.token, this.#conflict.runId || undefined))
        continue
      }
      if (this.#consumed >= this.#payloads.length) break
      this.#waiters.shift()
      const ev = this.#payloads[this.#consumed++]
      try {
        w.resolve(this.#exec.hydrate(ev.eventData && ev.eventData.payload))
      } catch (e) {
        w.reject(e)
      }
    }
  }

  /** The next payload. */
  next() {
    if (this.#exec.stopped || this.#corr === null) return this.#exec.halt()
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject })
      this.#flush()
    })
  }

  then(onFulfilled, onRejected) {
    return this.next().then(onFulfilled, onRejected)
  }

  async *[Symbol.asyncIterator]() {
    for (;;) yield await this.next()
  }

  async getConflict() {
    return this.#conflict ? { runId: this.#conflict.runId } : null
  }

  dispose() {
    if (this.#disposed || this.#exec.stopped || this.#corr === null) return
    this.#disposed = true
    if (this.#conflict) return // no hook entity was created
    try {
      this.#exec.write('hook_disposed', this.#corr, { token: this.token })
    } catch (e) {
      if (!(e && ['EntityConflictError', 'HookNotFoundError', 'RunExpiredError'].includes(e.name))) throw e
    }
    this.#exec.handlers.delete(this.#corr)
  }

  [Symbol.dispose]() {
    this.dispose()
  }
}

function webhookBase() {
  const env = process.env
  if (env.WORKFLOW_LOCAL_BASE_URL) return env.WORKFLOW_LOCAL_BASE_URL.replace(/\/$/, '')
  return `http://localhost:${env.PORT || 3000}`
}

module.exports = { Execution, tagged, untag }
