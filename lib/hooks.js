'use strict'
// getHookByToken / resumeHook / resumeWebhook over the local world.

const { binding } = require('./native.js')
const { resolveWorld, deliver } = require('./world.js')
const { clientReducers, serializeValue } = require('./serialize.js')
const { worldStreams, stopPipeInto, clientRevivers } = require('./streams.js')
const { hydratePayload } = require('./hydrate.js')
const { framedByteStreams } = require('./capabilities.js')
const { HookNotFoundError, WorkflowRuntimeError } = require('../errors.js')
const { invalidArgType, requireString } = require('./validate.js')

const WEBHOOK_RESPONSE_WRITABLE = Symbol.for('WEBHOOK_RESPONSE_WRITABLE')

function worldOrThrow() {
  const { world, error } = resolveWorld()
  if (error) throw error
  return world
}

function revivers(world) {
  return clientRevivers(globalThis, (name, start, mode) => world.openStream(name, start, mode))
}

/** Hook + its run; metadata hydrated as the step side of the runtime reads it. */
async function lookup(token) {
  requireString('token', token)
  const world = worldOrThrow()
  const info = await world.getHookByToken(token)
  const run = await world.getRunSync(info.runId)
  const hook = {
    runId: info.runId,
    hookId: info.hookId,
    token: info.token,
    ownerId: info.ownerId,
    projectId: info.projectId,
    environment: info.environment,
  }
  if (info.hasMetadata) {
    hook.metadata = hydratePayload(info.metadata, info.metadataJson, true, revivers(world))
  } else if (world.kind === 'postgres') {
    // world-postgres's hook always has the key (`metadata ||= metadataJson`)
    hook.metadata = undefined
  }
  hook.createdAt = new Date(info.createdAt)
  if (info.specVersion !== undefined && info.specVersion !== null) hook.specVersion = info.specVersion
  hook.isWebhook = info.isWebhook
  return { world, hook, run }
}

async function getHookByToken(token) {
  return (await lookup(token)).hook
}

/**
 * A hook object given to `resumeHook` instead of a token: the fields it uses must have
 * their types (the official code would pass anything on to the World).
 */
function checkHookObject(hook) {
  if (hook === null || typeof hook !== 'object') {
    throw invalidArgType('tokenOrHook', 'of type string or a hook object', hook)
  }
  requireString('tokenOrHook.runId', hook.runId)
  requireString('tokenOrHook.hookId', hook.hookId)
  const spec = hook.specVersion
  if (spec !== undefined && spec !== null && typeof spec !== 'number') {
    throw invalidArgType('tokenOrHook.specVersion', 'of type number', spec)
  }
  // The token goes into the hook_received event of runs newer than spec 1.
  if (!(spec === undefined || spec === null || spec <= 1)) requireString('tokenOrHook.token', hook.token)
}

async function resumeHook(tokenOrHook, payload) {
  let world, hook, run
  if (typeof tokenOrHook === 'string') {
    ;({ world, hook, run } = await lookup(tokenOrHook))
  } else {
    checkHookObject(tokenOrHook)
    world = worldOrThrow()
    hook = tokenOrHook
    run = await world.getRunSync(hook.runId)
  }
  const legacy = hook.specVersion === undefined || hook.specVersion === null || hook.specVersion <= 1
  const ops = []
  const ctxVersion = run.executionContext && run.executionContext.workflowCoreVersion
  const streams = worldStreams(world, globalThis)
  const reducers = clientReducers({
    global: globalThis,
    runId: hook.runId,
    ops,
    framedByteStreams: framedByteStreams(typeof ctxVersion === 'string' ? ctxVersion : undefined),
    streams,
    stepSide: true,
  })
  const data = serializeValue(payload, reducers, 'step return value', legacy)
  for (const op of ops) {
    Promise.resolve(op).catch((e) => {
      // Aborted pipes (e.g. a manual webhook's response stream once answered) are not failures.
      if (e === undefined || (e && e.name === 'AbortError')) return
      console.warn(`[workflow-native] Background flush of hook payload ops failed (hook ${hook.hookId}):`, e)
    })
  }
  await world.hookReceived(hook.runId, hook.hookId, legacy ? undefined : hook.token, data.bytes, data.json)
  const queueName = binding.workflowQueueName(run.workflowName, process.env.WORKFLOW_QUEUE_NAMESPACE || undefined)
  const message = { runId: hook.runId }
  const tc = run.executionContext && run.executionContext.traceCarrier
  if (tc !== undefined && tc !== null) message.traceCarrier = tc
  await deliver({ queueName, messageId: `msg_${binding.newUlid()}`, body: JSON.stringify(message) })
  return hook
}

async function resumeWebhook(token, request) {
  requireString('token', token)
  // The workflow receives it as a Request (the official code would pass anything on).
  if (typeof Request !== 'function' || !(request instanceof Request)) {
    throw invalidArgType('request', 'an instance of Request', request)
  }
  const { hook } = await lookup(token)
  if (hook.isWebhook === false) throw new HookNotFoundError(token)
  let response
  let responses
  let responseWritable
  const meta = hook.metadata
  if (meta && typeof meta === 'object' && 'respondWith' in meta) {
    if (meta.respondWith === 'manual') {
      const { readable, writable } = new TransformStream()
      responses = readable
      responseWritable = writable
      request[WEBHOOK_RESPONSE_WRITABLE] = writable
    } else if (meta.respondWith instanceof Response) {
      response = meta.respondWith
    } else {
      throw new WorkflowRuntimeError(`Invalid \`respondWith\` value: ${meta.respondWith}`, {
        slug: 'webhook-invalid-respond-with-value',
      })
    }
  } else {
    response = new Response(null, { status: 202 })
  }
  await resumeHook(hook, request)
  if (responses) {
    const reader = responses.getReader()
    const first = await reader.read()
    if (first.value) {
      const r = first.value
      const body = r.body ? await r.arrayBuffer() : null
      response = new Response(body, { status: r.status, statusText: r.statusText, headers: r.headers })
    }
    await reader.cancel()
    // The first Response is all the caller gets: stop reading the response stream.
    stopPipeInto(responseWritable)
  }
  if (!response) {
    throw new WorkflowRuntimeError('Workflow run did not send a response', { slug: 'webhook-response-not-sent' })
  }
  return response
}

module.exports = { getHookByToken, resumeHook, resumeWebhook }
