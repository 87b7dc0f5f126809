'use strict'
// The PostgreSQL World as the JS layer sees it: the same methods as the local
// NativeWorld, all asynchronous (the connection is made on first use, off the JS thread).
// Queue messages go to the graphile-worker queue of the official world-postgres app that
// executes the runs (`graphile_worker.add_job`, world-postgres's payload).

const { binding } = require('./native.js')

/** world-postgres 4.3.7's defaults. */
const DEFAULT_URL = 'postgres://world:world@localhost:5432/world'

function connectOptions(env) {
  const pool = parseInt(env.WORKFLOW_POSTGRES_MAX_POOL_SIZE || '', 10)
  return {
    url: env.WORKFLOW_POSTGRES_URL || DEFAULT_URL,
    maxPoolSize: Number.isFinite(pool) && pool > 0 ? pool : undefined,
    jobPrefix: env.WORKFLOW_POSTGRES_JOB_PREFIX || undefined,
  }
}

/** A stream reader that waits for the connection on its first read. */
class LazyReader {
  #open
  #reader = null
  #closed = false
  constructor(open) {
    this.#open = open
  }
  /** Items the native reader already read ahead (none before it is open). */
  nextManySync(max) {
    return this.#reader && !this.#closed ? this.#reader.nextManySync(max) : null
  }
  async nextMany(max) {
    if (!this.#reader) this.#reader = await this.#open()
    if (this.#closed) {
      this.#reader.close()
      return { text: '', buffers: [], done: true }
    }
    return this.#reader.nextMany(max)
  }
  close() {
    this.#closed = true
    if (this.#reader) this.#reader.close()
  }
}

class PgWorld {
  kind = 'postgres'
  /** world-postgres's `getDeploymentId()`. */
  deploymentId = 'postgres'
  #options
  #native = null

  constructor(env = process.env) {
    this.#options = connectOptions(env)
  }

  /** The connected native world; a failed connection is retried by the next call. */
  native() {
    if (!this.#native) {
      this.#native = binding.pgConnect(this.#options)
      this.#native.catch(() => {
        this.#native = null
      })
    }
    return this.#native
  }

  async getRunSync(runId) {
    return (await this.native()).getRun(runId, true)
  }
  async getRun(runId, withData) {
    return (await this.native()).getRun(runId, withData)
  }
  async runStatusSync(runId) {
    return (await this.native()).runStatus(runId)
  }
  async runStatus(runId) {
    return (await this.native()).runStatus(runId)
  }
  async waitTerminal(runId) {
    return (await this.native()).waitTerminal(runId)
  }
  async cancel(runId) {
    return (await this.native()).cancel(runId)
  }
  async wakeUp(runId, ids, namespace) {
    return (await this.native()).wakeUp(runId, ids, namespace)
  }
  async streamInfo(name) {
    return (await this.native()).streamInfo(name)
  }
  async createRun(req) {
    return (await this.native()).createRun(req)
  }
  async getHookByToken(token) {
    return (await this.native()).getHookByToken(token)
  }
  async hookReceived(runId, hookId, token, bytes, json) {
    return (await this.native()).hookReceived(runId, hookId, token, bytes, json)
  }
  async writeStreamChunks(name, runId, chunks) {
    return (await this.native()).writeStreamChunks(name, runId, chunks)
  }
  async closeStream(name, runId) {
    return (await this.native()).closeStream(name, runId)
  }
  async createEvent(runId, request) {
    return (await this.native()).createEvent(runId, request)
  }
  async listEventsJson(runId) {
    return (await this.native()).listEventsJson(runId)
  }
  async listRunsJson(statuses) {
    return (await this.native()).listRunsJson(statuses)
  }
  openStream(name, start, mode) {
    return new LazyReader(async () => (await this.native()).openStream(name, start, mode))
  }
  // ---------------------------------------------------------------- the embedded engine

  /** One batch of events in one transaction, fenced by `leaseOwner` (see journal.js). */
  async appendBatch(runId, requests, leaseOwner, leaseToken) {
    return (await this.native()).appendBatch(runId, requests, leaseOwner, leaseToken)
  }
  async createRunLeased(req, owner, ttlMs) {
    return (await this.native()).createRunLeased(req, owner, ttlMs)
  }
  async acquireLease(runId, owner, ttlMs) {
    return (await this.native()).acquireLease(runId, owner, ttlMs)
  }
  async renewLease(runId, owner, token, ttlMs) {
    return (await this.native()).renewLease(runId, owner, token, ttlMs)
  }
  async releaseLease(runId, owner, token) {
    return (await this.native()).releaseLease(runId, owner, token)
  }
  async leasedRuns() {
    return (await this.native()).leasedRuns()
  }
  async claimableRuns(names, limit) {
    return (await this.native()).claimableRuns(names, limit)
  }
  async readRuns(statuses) {
    return (await this.native()).readRuns(statuses)
  }
  async recoverRun(runId) {
    return (await this.native()).recoverRun(runId)
  }
  /** Follows what other writers add to the run: `{ poll(), close() }` at once. */
  followRun(runId, knownIds, callback) {
    let closed = false
    const follower = this.native().then((n) => {
      const f = n.followRun(runId, knownIds, callback)
      if (closed) f.close()
      return f
    })
    follower.catch(() => {})
    return {
      poll: async () => (await follower).poll(),
      close: () => {
        closed = true
        follower.then((f) => f.close(), () => {})
      },
    }
  }
  /** Calls `onRun(runId | '')` when runs are created; `{ close() }`. */
  watchNewRuns(onRun) {
    let closed = false
    const watch = this.native().then((n) => {
      const w = n.watchNewRuns(onRun)
      if (closed) w.close()
      return w
    })
    watch.catch((e) => console.error('[workflow-native] Could not watch for new runs:', e))
    return {
      close: () => {
        closed = true
        watch.then((w) => w.close(), () => {})
      },
    }
  }

  /** A queue message `{ queueName, messageId, body }` into the official app's queue. */
  async enqueue(message) {
    const n = await this.native()
    return n.enqueue(message.queueName, message.messageId, message.body, message.idempotencyKey, message.delaySeconds)
  }
}

module.exports = { PgWorld, connectOptions, DEFAULT_URL }
