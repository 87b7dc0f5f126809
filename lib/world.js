'use strict'
// Which World a Run talks to, read from the environment at first use (not at import),
// as WDK reads it: WORKFLOW_TARGET_WORLD (default "local", "vercel" when
// VERCEL_DEPLOYMENT_ID is set) and WORKFLOW_LOCAL_DATA_DIR (default ".workflow-data").

const path = require('node:path')
const { binding, fromNative } = require('./native.js')
const { WorkflowRuntimeError } = require('../errors.js')

let resolved = null

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
  if (target !== 'local' && target !== '@workflow/world-local') {
    return {
      error: new WorkflowRuntimeError(
        `workflow-native supports only the local world; WORKFLOW_TARGET_WORLD is "${target}".`,
      ),
    }
  }
  const dir = path.resolve(env.WORKFLOW_LOCAL_DATA_DIR || '.workflow-data')
  try {
    return { world: new binding.NativeWorld(dir) }
  } catch (e) {
    return { error: fromNative(e) }
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

/** Delivers a queue message in the background; failures are logged, never thrown. */
function deliverInBackground(message) {
  binding
    .deliverQueueMessage(message, queueTarget())
    .then((report) => {
      for (const line of report.log) console.error(line)
      if (!report.delivered) {
        console.error(
          `[workflow-native] Queue message ${message.messageId} to ${message.queueName} was not delivered after ${report.attempts} attempt(s)`,
        )
      }
    })
    .catch((e) => console.error('[workflow-native] Queue operation failed:', e))
}

module.exports = { resolveWorld, deliverInBackground, queueTarget }
