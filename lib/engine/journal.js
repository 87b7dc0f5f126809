'use strict'
// A run's event log as the engine uses it: writes go to the Rust core off the JS thread,
// in order, batched (everything queued before the microtasks queued with it have run is
// one native call: the steps `Promise.all([a(), b()])` creates travel together), and the events
// other writers add (a hook payload, a wakeUp(), a cancel()) arrive through the core's
// change feed, which leaves out the journal's own writes.
//
// Ordering is the durability rule: a write is on disk before any write queued after it
// is attempted, so the log never holds a later event without the earlier ones.

const { performance } = require('node:perf_hooks')
const { errorFromData, fromNative } = require('../native.js')

/**
 * How long the JS side keeps looking for answers, one turn of the event loop at a time,
 * before it parks and lets the writer ping it. Looking costs one native call per turn and
 * never blocks the loop (timers, I/O and other callbacks run in between); being woken by
 * the writer costs a thread wake-up, which on virtual machines takes longer than a whole
 * append on a fast disk.
 */
const POLL_BUDGET_MS = 2
/** Answers slower than this on average (a slow disk): looking is wasted, park at once. */
const SLOW_ANSWER_MS = 1

/**
 * The world's journal writer: one native thread performing appends in order. While
 * answers are pending a timer keeps the process alive (the writer's ping does not).
 */
const writers = new WeakMap() // native world -> writer
/** `leaseOwner`: batches are written only while it holds the run's lease (see lease.rs). */
function writerFor(world, leaseOwner) {
  let w = writers.get(world)
  if (w) return w
  if (world.kind === 'postgres') {
    // one transaction per batch, on the pool's connections (async: nothing to poll for)
    w = { append: (runId, requests, leaseToken) => world.appendBatch(runId, requests, leaseOwner, leaseToken), warm() {} }
    writers.set(world, w)
    return w
  }
  const pending = new Map() // id -> { resolve(text), sent }
  let nextId = 1
  // Keeps the process alive while answers are pending: one timer, referenced only then
  // (ref/unref is cheaper than a timer per append).
  const keepAlive = setInterval(() => {}, 0x3fffffff)
  keepAlive.unref()
  let alive = false
  let polling = false
  let parked = false
  let pollStart = 0
  let typicalMs = 0 // moving average of the time an append takes to answer
  const deliver = () => {
    const now = performance.now()
    for (const { id, text } of native.take()) {
      const entry = pending.get(id)
      if (!entry) continue
      pending.delete(id)
      typicalMs = typicalMs * 0.9 + (now - entry.sent) * 0.1
      entry.resolve(text)
    }
    if (pending.size === 0 && alive) {
      keepAlive.unref()
      alive = false
    }
  }
  const poll = () => {
    polling = false
    deliver()
    if (pending.size === 0) return
    if (typicalMs < SLOW_ANSWER_MS && performance.now() - pollStart < POLL_BUDGET_MS) {
      polling = true
      setImmediate(poll)
      return
    }
    // Park: from now on the writer pings. Look once more: an answer may have landed
    // before the writer could see the flag.
    parked = true
    native.park(true)
    deliver()
  }
  const startPolling = () => {
    if (polling || parked) return
    polling = true
    pollStart = performance.now()
    setImmediate(poll)
  }
  const native = world.journalWriter(() => {
    if (!parked) return
    parked = false
    native.park(false)
    deliver()
    if (pending.size > 0) startPolling()
  }, leaseOwner)
  /** Sends one job (`post(id)`); resolves to its answer's text. */
  const send = (post) => {
    const id = nextId++
    if (nextId > 0xfffffff0) nextId = 1
    return new Promise((resolve) => {
      post(id) // (throws when the writer cannot take it: nothing is pending then)
      pending.set(id, { resolve, sent: performance.now() })
      if (!alive) {
        keepAlive.ref()
        alive = true
      }
      if (!parked) startPolling()
      else pollStart = performance.now()
    })
  }
  w = {
    /** Wakes the journal thread of `runId`. */
    warm(runId) {
      native.warm(runId)
    },
    append(runId, requests) {
      return send((id) => native.write(id, runId, requests))
    },
    /**
     * `start()` of a run this process executes, on the run's journal thread (created,
     * leased and started, made durable by the thread's group commit; see
     * `JournalWriter#createRun`): resolves to `{ startedAt }`, or undefined when only the
     * run was created; rejects with the core's error.
     */
    async createRun(req, ttlMs) {
      const out = JSON.parse(await send((id) => native.createRun(id, req, ttlMs)))
      if (out === null) return undefined
      if (out.nativeError !== undefined) throw fromNative(new Error(String(out.nativeError)))
      if (out.failed) throw errorFromData(out.failed.error)
      return out
    },
  }
  writers.set(world, w)
  return w
}

/** Refusals that mean the run ended under us (cancelled, or finished by another writer). */
const RUN_GONE = new Set(['RunExpiredError', 'EntityConflictError'])

/** What queued writes settle with once the run stopped here. */
class Halted extends Error {
  constructor() {
    super('the run stopped executing in this process')
    this.name = 'Halted'
  }
}

class RunJournal {
  #engine
  #world
  #runId
  #queue = []
  #scheduled = false
  #inFlight = false
  #closed = false
  #halted = false
  #follower = null
  #onFault
  #leaseToken
  #writer
  #tail = Promise.resolve()
  #invocationsClosed = false
  #turn = 0
  #turnOpen = false

  /**
   * @param onFault (err, entry) for a refused write nobody awaits (a step's closing event):
   *   the execution decides (the run ended under us, or a storage fault).
   * @param leaseToken () => the fencing token of this execution's lease (PostgreSQL)
   */
  constructor(engine, world, runId, onFault, leaseToken = () => undefined) {
    this.#engine = engine
    this.#world = world
    this.#runId = runId
    this.#onFault = onFault
    this.#leaseToken = leaseToken
    this.#writer = writerFor(world, engine.leaseOwner)
  }

  /**
   * Queues one event; resolves to `{ event, run?, step? }` once it is written, rejects with
   * the refusal (a JS error of the core's class). `background`: nobody awaits it; a
   * refusal goes to `onFault`.
   */
  write(eventType, correlationId, eventData, background = false, invocation = false) {
    const req = { eventType, specVersion: 3 }
    if (correlationId !== undefined) req.correlationId = correlationId
    if (eventData !== undefined) req.eventData = eventData
    if (this.#halted || (invocation && this.#invocationsClosed)) {
      return background ? Promise.resolve(undefined) : Promise.reject(new Halted())
    }
    // (an invocation belongs to the turn that made it until the next macrotask)
    const turn = invocation ? this.#currentTurn() : 0
    const p = new Promise((resolve, reject) => {
      this.#queue.push({ req, resolve, reject, background, invocation, turn })
      this.#engine.busy++
      this.#schedule()
    })
    this.#tail = p.then(
      () => {},
      () => {},
    )
    return p
  }

  /**
   * Drops the queued, not yet sent, writes that commit an invocation (`invocation`: a
   * step's creation and first start, a sleep, a hook, a disposal): the workflow body
   * settled in the same turn that made them, and the official runtime commits
   * invocations only when the body suspends — a step called without `await` right
   * before a `return` never runs. Their callers halt (background writes resolve).
   */
  dropInvocations() {
    // Invocations asked for after this (a write that waited for a look at other writers'
    // events, say) are dropped too: the body has settled, nothing of it is committed.
    this.#invocationsClosed = true
    const turn = this.#turn
    const dropped = this.#queue.filter((e) => e.invocation && e.turn === turn && this.#turnOpen)
    if (dropped.length === 0) return
    this.#queue = this.#queue.filter((e) => !dropped.includes(e))
    for (const entry of dropped) {
      this.#settled(entry, () => {
        if (entry.background) entry.resolve(undefined)
        else entry.reject(new Halted())
      })
    }
  }

  /**
   * The number of the current turn (invocations made before the next macrotask share it;
   * what an earlier turn made was committed when the body suspended, as the official
   * commits it, even if its batch is still waiting to be sent).
   */
  #currentTurn() {
    if (!this.#turnOpen) {
      this.#turnOpen = true
      this.#turn++
      setImmediate(() => {
        this.#turnOpen = false
      })
    }
    return this.#turn
  }

  /** A write is coming soon: the writer thread is woken now rather than by that write. */
  warm() {
    if (!this.#halted) this.#writer.warm(this.#runId)
  }

  /** Resolves once every write queued so far is settled (written or refused). */
  settledUpTo() {
    return this.#tail
  }

  #schedule() {
    if (this.#scheduled || this.#inFlight || this.#queue.length === 0) return
    this.#scheduled = true
    // After the microtasks queued now: the workflow code has then run on to the calls it
    // makes in the same turn (`Promise.all([a(), b()])`), whose writes join this batch.
    // Not a whole turn of the event loop later: that would add an iteration (timers, a
    // poll of the OS) to every step's critical path.
    queueMicrotask(() =>
      queueMicrotask(() => {
        this.#scheduled = false
        this.#flush()
      }),
    )
  }

  async #flush() {
    if (this.#inFlight || this.#halted || this.#queue.length === 0) return
    this.#inFlight = true
    const batch = this.#queue.splice(0)
    let out
    try {
      out = JSON.parse(await this.#writer.append(this.#runId, JSON.stringify(batch.map((e) => e.req)), this.#leaseToken()))
    } catch (e) {
      out = { nativeError: e }
    }
    if (out.nativeError) {
      const err = out.nativeError instanceof Error ? out.nativeError : fromNative(new Error(String(out.nativeError)))
      out = { results: [], failed: { index: 0, nativeError: err } }
    }
    this.#inFlight = false
    const done = out.results.length
    for (let i = 0; i < done; i++) this.#settled(batch[i], () => batch[i].resolve(out.results[i]))
    if (out.failed) {
      const { index } = out.failed
      const err = out.failed.nativeError || errorFromData(out.failed.error)
      const entry = batch[index]
      // which write was refused, for the engine's report (not enumerable: the error is
      // the core's, as the world raised it)
      if (err && typeof err === 'object' && !('request' in err)) {
        Object.defineProperty(err, 'request', { value: entry.req, configurable: true, writable: true })
      }
      // Writes after the refused one were not attempted: back to the head of the queue
      // (a refusal that ends the run closes the journal and halts them).
      this.#queue.unshift(...batch.slice(index + 1))
      if (this.#halted) this.#dropQueued()
      this.#settled(entry, () => {
        if (entry.background) {
          entry.resolve(undefined)
          this.#onFault(err, entry.req)
        } else entry.reject(err)
      })
    }
    this.#schedule()
  }

  #settled(entry, fn) {
    this.#engine.busy--
    try {
      fn()
    } finally {
      this.#engine.clock.poke()
    }
  }

  /**
   * Follows the events other writers add; `onEvents(events)` gets them in log order,
   * `onError(err)` a fault reading them. `knownIds`: event ids already read.
   */
  follow(knownIds, onEvents, onError) {
    if (this.#follower || this.#closed) return
    this.#follower = this.#world.followRun(this.#runId, knownIds, (text) => {
      if (this.#closed) return
      let msg
      try {
        msg = JSON.parse(text)
      } catch {
        return
      }
      for (const fault of msg.faults || []) onError(errorFromData(fault))
      if (msg.error) onError(errorFromData(msg.error))
      else if (msg.events && msg.events.length > 0) onEvents(msg.events)
    })
  }

  /** Events other writers added that were not reported yet (looks now). */
  async poll() {
    if (!this.#follower || this.#closed) return []
    const msg = JSON.parse(await this.#follower.poll())
    for (const fault of msg.faults || []) {
      console.error(`[workflow-native] Skipped a file among the events of run ${this.#runId}:`, errorFromData(fault))
    }
    if (msg.error) throw errorFromData(msg.error)
    return msg.events || []
  }

  /** No more writes: queued ones are dropped (their callers halt). Idempotent. */
  haltWrites() {
    if (this.#halted) return
    this.#halted = true
    this.#dropQueued()
  }

  /** Settles every queued write as dropped (background ones resolve, others halt). */
  #dropQueued() {
    for (const entry of this.#queue.splice(0)) {
      this.#settled(entry, () => {
        if (entry.background) entry.resolve(undefined)
        else entry.reject(new Halted())
      })
    }
  }

  /** The run stopped here: writes halt and following ends. */
  close() {
    this.haltWrites()
    if (this.#closed) return
    this.#closed = true
    if (this.#follower) {
      try {
        this.#follower.close()
      } catch {
        // already closed
      }
      this.#follower = null
    }
  }
}

module.exports = { RunJournal, Halted, RUN_GONE, writerFor }
