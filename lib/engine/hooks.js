'use strict'
// Hooks and webhooks created by a workflow body: `hook_created` (or the `hook_conflict`
// the core answers when another run holds the token), payloads as `hook_received`
// events written by others, `hook_disposed`.

const { binding } = require('../native.js')
const { tagged, HALT } = require('./values.js')
const errors = require('../../errors.js')

const URL_ALPHABET = 'useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict'

/** A 21-character URL-safe random token (the shape of WDK's default hook tokens). */
function newToken() {
  const bytes = require('node:crypto').randomBytes(21)
  let out = ''
  for (let i = 0; i < 21; i++) out += URL_ALPHABET[bytes[i] & 63]
  return out
}

function webhookBase() {
  const env = process.env
  if (env.WORKFLOW_LOCAL_BASE_URL) return env.WORKFLOW_LOCAL_BASE_URL.replace(/\/$/, '')
  return `http://localhost:${env.PORT || 3000}`
}

function createHook(exec, options, isWebhook) {
  const opts = options || {}
  const given = typeof opts.token === 'string' ? opts.token : undefined
  const inv = exec.claim('hook', given, `createHook(${given ? JSON.stringify(given) : ''})`)
  if (inv === HALT) return new EngineHook(exec, null, given ?? '', isWebhook)
  if (inv) return new EngineHook(exec, inv.corr, inv.key, isWebhook)
  const corr = `hook_${binding.newUlid()}`
  const token = given ?? newToken()
  // world-local's key order: token, metadata (when given), isWebhook
  const eventData = { token }
  if (opts.metadata !== undefined) eventData.metadata = tagged(exec.serialize(opts.metadata, 'hook metadata'))
  eventData.isWebhook = !!isWebhook
  // Queued: the hook object exists at once; the core's answer (hook_created, or
  // hook_conflict) reaches it as an event of its correlation id.
  const hook = new EngineHook(exec, corr, token, isWebhook)
  exec.writeBackground('hook_created', corr, eventData, true)
  return hook
}

class EngineHook {
  #exec
  #corr
  #payloads = []
  #waiters = []
  #consumed = 0
  #conflict = null
  /** dispose() was called (by this execution's workflow code: ends `for await`) */
  #disposed = false
  /** hook_disposed is in the log (a replay's dispose() writes nothing) */
  #disposedLogged = false

  constructor(exec, corr, token, isWebhook) {
    this.#exec = exec
    this.#corr = corr
    this.token = token
    if (isWebhook) {
      this.url = `${webhookBase()}/.well-known/workflow/v1/webhook/${encodeURIComponent(token)}`
    }
    if (corr === null) return // the run stopped: this hook never yields
    for (const ev of exec.log.events(corr)) this.#onEvent(ev)
    exec.handlers.set(corr, { onEvent: (ev) => this.#onEvent(ev) })
  }

  #onEvent(ev) {
    if (ev.eventType === 'hook_conflict') {
      const d = ev.eventData || {}
      this.#conflict = { runId: typeof d.conflictingRunId === 'string' ? d.conflictingRunId : null }
      this.#flush()
    } else if (ev.eventType === 'hook_received') {
      this.#payloads.push(ev)
      this.#flush()
    } else if (ev.eventType === 'hook_disposed') {
      this.#disposedLogged = true
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

  /** Payloads until the workflow code disposes the hook (the loop then ends). */
  async *[Symbol.asyncIterator]() {
    while (!this.#disposed) yield await this.next()
  }

  /**
   * `null` once the hook is registered; `{ runId }` of the run holding the token when it
   * is not; rejects with the HookConflictError when that run is not known (a conflict
   * event without `conflictingRunId`), as the official does.
   */
  async getConflict() {
    // the core's answer to hook_created must be in before the question is answered
    await this.#exec.journal.settledUpTo()
    if (!this.#conflict) return null
    if (this.#conflict.runId === null) throw new errors.HookConflictError(this.token)
    return { runId: this.#conflict.runId }
  }

  dispose() {
    if (this.#disposed) return
    this.#disposed = true
    if (this.#disposedLogged || this.#exec.stopped || this.#corr === null) return
    const exec = this.#exec
    const corr = this.#corr
    exec.handlers.delete(corr)
    // Queued in call order. After a conflict there is no hook entity: the core refuses
    // (HookNotFoundError), which is the expected answer.
    exec.journal.write('hook_disposed', corr, { token: this.token }, false, true).catch((e) => {
      if (e && ['EntityConflictError', 'HookNotFoundError', 'RunExpiredError', 'Halted'].includes(e.name)) return
      console.error(`[workflow-native] Could not dispose hook ${corr} of run ${exec.runId}:`, e)
    })
  }

  [Symbol.dispose]() {
    this.dispose()
  }
}

module.exports = { createHook }
