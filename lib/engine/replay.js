'use strict'
// What a run's event log says, indexed for replay: the recorded invocations (steps,
// sleeps, hooks) in log order, the events of each correlation id, and the recorded
// outcomes, handed back in log order so parallel branches reach their next calls in the
// order the log recorded them.

/** Recorded events that settle an invocation (released in log order on replay). */
const OUTCOMES = new Set(['step_completed', 'step_failed', 'wait_completed'])

function isTerminalRunEvent(type) {
  return type === 'run_completed' || type === 'run_failed' || type === 'run_cancelled'
}

class ReplayLog {
  constructor() {
    this.known = new Set() // event ids already applied
    this.invocations = [] // recorded creations, in log order: { kind, corr, key, event }
    this.nextInvocation = 0
    this.eventsByCorr = new Map() // correlationId -> [event]
    this.outcomes = [] // recorded outcome events, in log order
    this.outcomeCursor = 0
    this.outcomeWaiters = new Map() // correlationId -> release
    this.pumping = false
    this.stallCheck = null
    this.runCreated = undefined
    this.runStartedAt = undefined
    this.terminal = false
  }

  /** Files an event; false if it was already known. `recorded`: read from the log at load. */
  add(ev, recorded) {
    if (!ev || !ev.eventId || this.known.has(ev.eventId)) return false
    this.known.add(ev.eventId)
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
      if (t === 'run_created') this.runCreated = ev
      if (OUTCOMES.has(t) && ev.correlationId) this.outcomes.push(ev)
    }
    if (t === 'run_started' && this.runStartedAt === undefined) this.runStartedAt = Date.parse(ev.createdAt)
    if (isTerminalRunEvent(t)) this.terminal = true
    return true
  }

  events(corr) {
    return this.eventsByCorr.get(corr) || []
  }

  /** The next recorded invocation, or null once the code is past the recorded ones. */
  nextRecorded() {
    if (this.nextInvocation >= this.invocations.length) return null
    return this.invocations[this.nextInvocation++]
  }

  /** The first recorded invocation the code has not reached (for the end-of-run check). */
  unreached() {
    return this.nextInvocation < this.invocations.length ? this.invocations[this.nextInvocation] : null
  }

  /**
   * Resolves when the recorded outcome of `corr` is next in log order, one per turn of the
   * event loop, as the official events consumer hands them out.
   */
  outcome(corr, stopped) {
    return new Promise((resolve) => {
      this.outcomeWaiters.set(corr, resolve)
      this.pump(stopped)
    })
  }

  pump(stopped) {
    if (this.pumping || stopped()) return
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
        this.pump(stopped)
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
        if (this.outcomeCursor !== at || stopped()) return this.pump(stopped)
        const idx = this.outcomes.findIndex((e, i) => i >= at && this.outcomeWaiters.has(e.correlationId))
        if (idx < 0) return
        const [late] = this.outcomes.splice(idx, 1)
        const r = this.outcomeWaiters.get(late.correlationId)
        this.outcomeWaiters.delete(late.correlationId)
        r()
        this.pump(stopped)
      }),
    )
  }
}

module.exports = { ReplayLog, isTerminalRunEvent }
