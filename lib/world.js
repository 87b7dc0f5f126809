'use strict'
// Which World a Run talks to, read from the environment at first use (not at import),
// as WDK reads it: WORKFLOW_TARGET_WORLD (default "local", "vercel" when
// VERCEL_DEPLOYMENT_ID is set), WORKFLOW_LOCAL_DATA_DIR (default ".workflow-data") for the
// local World, WORKFLOW_POSTGRES_URL / WORKFLOW_POSTGRES_MAX_POOL_SIZE for PostgreSQL.

const path = require('node:path')
const { binding } = require('./native.js')
const { WorkflowRuntimeError } = require('../errors.js')

let resolved = null

/** WORKFLOW_TARGET_WORLD values that select the PostgreSQL World. */
const POSTGRES_TARGETS = new Set(['@workflow/world-postgres', 'postgres'])

/**
 * Returns `{ world }` or `{ error }`; never throws (getRun must not). Resolved once per
 * process at first use and then kept, as WDK memoizes its World.
 */
function resolveWorld() {
  if (!resolved) resolved = createWorld()
  return resolved
}

function createWorld() {
  const env = process.env
  const target = env.WORKFLOW_TARGET_WORLD || (env.VERCEL_DEPLOYMENT_ID ? 'vercel' : 'local')
  if (POSTGRES_TARGETS.has(target)) {
    // Connected on first use, off the JS thread; a connection failure rejects that call.
    const { PgWorld } = require('./pg-world.js')
    return { world: new PgWorld(env) }
  }
  if (target !== 'local' && target !== '@workflow/world-local') {
    return {
      error: new WorkflowRuntimeError(
        `workflow-native does not support WORKFLOW_TARGET_WORLD "${target}"; supported: "local" (the default, also "@workflow/world-local") and "@workflow/world-postgres".`,
      ),
    }
  }
  const dir = path.resolve(env.WORKFLOW_LOCAL_DATA_DIR || '.workflow-data')
  try {
    return { world: new binding.NativeWorld(dir) }
  } catch (e) {
    return { error: e }
  }
}

const BASE_PATH = Symbol.for('@workflow/core/basePath')

/** Where queue messages go, read at call time like world-local does. */
function queueTarget() {
  const env = process.env
  return {
    baseUrl: env.WORKFLOW_LOCAL_BASE_URL || undefined,
    port: env.PORT || undefined,
    basePath: globalThis[BASE_PATH] || '',
  }
}

/**
 * Delivers a queue message over HTTP in the background (the local directory), one attempt at a time, as the core
 * decides; failures are logged, never thrown. Waiting for a failed attempt's retry keeps
 * the process alive (like world-local); a redelivery the handler scheduled with
 * `timeoutSeconds` (a sleeping workflow) waits on an unref'd timer, so it does not keep
 * a finished script or test alive — like world-local's in-memory queue, it is then lost
 * with the process (the run resumes when something re-enqueues it).
 */
function deliverInBackground(message) {
  ;(async () => {
    let attempt = 1
    let connectFailures = 0
    for (;;) {
      const r = await binding.deliverAttemptJs(message, queueTarget(), attempt, connectFailures)
      if (r.log) console.error(r.log)
      if (r.next === 'done') return
      if (r.next !== 'again') {
        console.error(
          `[workflow-native] Queue message ${message.messageId} to ${message.queueName} was not delivered after ${attempt} attempt(s)`,
        )
        return
      }
      connectFailures = r.connectFailures
      attempt++
      if (r.delayMs > 0) {
        await new Promise((resolve) => {
          const t = setTimeout(resolve, r.delayMs)
          if (r.scheduled) t.unref()
        })
      }
    }
  })().catch((e) => console.error('[workflow-native] Queue operation failed:', e))
}

/**
 * Hands a queue message on as `start()`, `resumeHook()` and `wakeUp()` do: on PostgreSQL
 * the job is in the official app's graphile-worker queue when this resolves, and a
 * failure to enqueue rejects (as world-postgres's `queue()` makes the official call
 * resolve or reject). Elsewhere, delivered in the background.
 */
async function deliver(message) {
  // A workflow the embedded engine runs in this process takes its messages directly.
  if (localDispatcher && localDispatcher(message)) return
  const { world } = resolveWorld()
  if (world && world.kind === 'postgres') return world.enqueue(message)
  deliverInBackground(message)
}

let localDispatcher = null

/** Installs the embedded engine's dispatcher (returns true for messages it handles). */
function setLocalDispatcher(fn) {
  localDispatcher = fn
}

/** Forgets the resolved World (tests switch worlds within one process). */
function resetWorldForTests() {
  resolved = null
}

module.exports = { resolveWorld, deliver, queueTarget, setLocalDispatcher, resetWorldForTests }
