'use strict'
// The engine's clock: real time (setTimeout) or virtual time for tests, where timers
// (durable sleeps, step retry delays) fire only when time is advanced — explicitly with
// `advanceTime()`, or automatically when nothing else in the engine is running.

class Clock {
  #virtual = false
  #auto = true
  #offset = 0
  #timers = new Set()
  #idleCheck = null
  #busy = () => false

  /** `busy()` tells whether engine work (a step, a write) is in flight. */
  setBusyProbe(busy) {
    this.#busy = busy
  }

  now() {
    return Date.now() + this.#offset
  }

  get virtual() {
    return this.#virtual
  }

  useVirtual({ auto = true } = {}) {
    this.#virtual = true
    this.#auto = auto !== false
    // Timers already waiting in real time move to virtual time.
    for (const t of this.#timers) {
      if (t.handle) clearTimeout(t.handle)
      t.handle = null
    }
    this.poke()
  }

  useReal() {
    this.#virtual = false
    this.#offset = 0
    for (const t of this.#timers) this.#arm(t)
  }

  /**
   * Resolves at `at` (ms since epoch, clock time). `keepAlive` false: does not keep the
   * process alive. Returns { promise, cancel() }.
   */
  at(at, { keepAlive = true } = {}) {
    let resolve
    const promise = new Promise((r) => (resolve = r))
    const t = { at, resolve, keepAlive, handle: null }
    this.#timers.add(t)
    const fire = () => {
      // setTimeout caps delays at ~24.8 days: re-arm until the instant is reached
      if (!this.#virtual && t.at > this.now()) return this.#arm(t)
      this.#timers.delete(t)
      if (t.handle) clearTimeout(t.handle)
      t.handle = null
      t.resolve()
    }
    t.fire = fire
    this.#arm(t)
    this.poke()
    return {
      promise,
      cancel: () => {
        this.#timers.delete(t)
        if (t.handle) clearTimeout(t.handle)
        t.handle = null
      },
    }
  }

  #arm(t) {
    if (this.#virtual) return
    const delay = Math.max(0, Math.min(t.at - this.now(), 2_147_483_647))
    t.handle = setTimeout(t.fire, delay)
    if (!t.keepAlive) t.handle.unref()
  }

  /** Moves virtual time forward by `ms`, firing every timer that falls due, in order. */
  async advance(ms) {
    if (!this.#virtual) throw new Error('advanceTime() needs virtual time: call useVirtualTime() first')
    const target = this.now() + ms
    for (;;) {
      const next = this.#earliest()
      if (!next || next.at > target) break
      if (next.at > this.now()) this.#offset += next.at - this.now()
      next.fire()
      await settle()
      // let what the timer released (a step, its writes) run before looking again
      while (this.#busy()) await settle()
      await settle()
    }
    if (target > this.now()) this.#offset += target - this.now()
  }

  #earliest() {
    let best = null
    for (const t of this.#timers) if (!best || t.at < best.at) best = t
    return best
  }

  /** Pending timers (virtual or real). */
  get pending() {
    return this.#timers.size
  }

  /**
   * In automatic virtual time, fire the earliest timer once the engine has been idle for
   * a full turn of the event loop.
   */
  poke() {
    if (!this.#virtual || !this.#auto || this.#idleCheck) return
    this.#idleCheck = setImmediate(() => {
      this.#idleCheck = null
      if (!this.#virtual || this.#timers.size === 0) return
      if (this.#busy()) return // the busy work pokes again when it ends
      setImmediate(() => {
        if (!this.#virtual || this.#busy()) return
        const next = this.#earliest()
        if (!next) return
        if (next.at > this.now()) this.#offset += next.at - this.now()
        next.fire()
        this.poke()
      })
    })
  }
}

/** Lets promise reactions and immediate callbacks run. */
function settle() {
  return new Promise((r) => setImmediate(r))
}

module.exports = { Clock, settle }
