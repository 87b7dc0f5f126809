'use strict'
// start(): a new run — `run_created` written in world-local's format and the first queue
// message delivered over HTTP to the app's workflow endpoint.

const { binding } = require('./native.js')
const { resolveWorld, deliver } = require('./world.js')
const { clientReducers, serializeValue } = require('./serialize.js')
const { worldStreams } = require('./streams.js')
const { Run } = require('./run.js')
const { WorkflowRuntimeError } = require('../errors.js')
const { invalidArgType, outOfRange, optionalString } = require('./validate.js')

/** world-local 4.4.1's deployment id. */
const LOCAL_DEPLOYMENT_ID = 'dpl_local@4.4.1'
const CORE_VERSION = '4.8.9'
const SPEC_VERSION_CURRENT = 3
const ENGINE_DEF = Symbol.for('workflow-native.engine.workflow')
let warnedLatest = false

function logBackground(ops, runId) {
  for (const op of ops) {
    Promise.resolve(op).catch((e) =>
      console.error(`[workflow-native] Background stream of run ${runId} failed:`, e),
    )
  }
}

/** `{"__type":"Uint8Array","data":<base64>}`, the JSON form world-local's queue sends. */
function taggedBytes(buf) {
  return { __type: 'Uint8Array', data: Buffer.from(buf).toString('base64') }
}

/** A World given in the options: what start() calls on it. */
function isWorld(w) {
  return (
    w !== null &&
    typeof w === 'object' &&
    typeof w.getDeploymentId === 'function' &&
    typeof w.queue === 'function' &&
    w.events !== null &&
    typeof w.events === 'object' &&
    typeof w.events.create === 'function'
  )
}

/**
 * The options start() reads, checked where the official start() would write a bad value
 * into the run or fail deep inside.
 */
function checkOptions(options) {
  optionalString('options.deploymentId', options.deploymentId)
  const spec = options.specVersion
  if (spec !== undefined && spec !== null) {
    if (typeof spec !== 'number') throw invalidArgType('options.specVersion', 'of type number', spec)
    if (!Number.isInteger(spec) || spec < 1 || spec > SPEC_VERSION_CURRENT) {
      throw outOfRange('options.specVersion', `an integer from 1 to ${SPEC_VERSION_CURRENT}`, spec)
    }
  }
  if (options.world !== undefined && options.world !== null && !isWorld(options.world)) {
    throw invalidArgType('options.world', 'a World (with getDeploymentId(), events.create() and queue())', options.world)
  }
}

async function start(workflow, argsOrOptions, maybeOptions) {
  let args = []
  let options = {}
  if (Array.isArray(argsOrOptions)) {
    args = argsOrOptions
    if (maybeOptions && typeof maybeOptions === 'object') options = maybeOptions
  } else if (argsOrOptions && typeof argsOrOptions === 'object') {
    options = argsOrOptions
  }
  // (Other non-objects are ignored, as the official start() ignores them.)
  const workflowName = workflow && workflow.workflowId
  if (!workflowName) {
    throw new WorkflowRuntimeError(
      `'start' received an invalid workflow function. Ensure the Workflow SDK is configured correctly and the function includes a 'use workflow' directive.`,
      { slug: 'start-invalid-workflow-function' },
    )
  }
  if (typeof workflowName !== 'string') throw invalidArgType('workflow.workflowId', 'of type string', workflowName)
  if (argsOrOptions === null) {
    throw invalidArgType('argsOrOptions', 'an array of arguments or an options object', argsOrOptions)
  }
  checkOptions(options)
  const { world, error } = resolveWorld()
  if (error) throw error
  // A workflow declared with workflow-native/workflow runs in this process.
  const engineDef = workflow[ENGINE_DEF]

  // A World passed in the options creates and enqueues (WDK semantics); its own
  // deployment id and spec version apply.
  const customWorld = !engineDef && options.world ? options.world : undefined
  const currentDeploymentId =
    customWorld && typeof customWorld.getDeploymentId === 'function'
      ? await customWorld.getDeploymentId()
      : world.deploymentId || LOCAL_DEPLOYMENT_ID
  let deploymentId = options.deploymentId ?? currentDeploymentId
  if (deploymentId === 'latest') {
    if (!warnedLatest) {
      warnedLatest = true
      console.warn(
        "[workflow-native] deploymentId: 'latest' is not supported by the local world; using the current deployment.",
      )
    }
    deploymentId = currentDeploymentId
  }
  const framed = deploymentId === currentDeploymentId
  const runId = `wrun_${binding.newUlid()}`
  // Engine runs are always written in the current spec (the engine reads nothing older).
  const specVersion = engineDef
    ? SPEC_VERSION_CURRENT
    : (options.specVersion ?? (customWorld ? (customWorld.specVersion ?? 2) : SPEC_VERSION_CURRENT))
  const legacy = specVersion <= 1

  // Serialize before anything is written: unserializable arguments leave no trace.
  const ops = []
  const streams = worldStreams(world, globalThis)
  const reducers = clientReducers({ global: globalThis, runId, ops, framedByteStreams: framed, streams })
  const input = serializeValue(args, reducers, 'workflow arguments', legacy)
  const executionContext = {
    traceCarrier: {},
    workflowCoreVersion: CORE_VERSION,
    features: { encryption: false },
  }

  const created = customWorld
    ? Promise.resolve().then(() =>
        customWorld.events.create(
          runId,
          {
            eventType: 'run_created',
            specVersion,
            eventData: {
              deploymentId,
              workflowName,
              input: input.bytes ? new Uint8Array(input.bytes) : JSON.parse(input.json),
              executionContext,
            },
          },
          { v1Compat: legacy },
        ),
      )
    : // Written off the JS thread; a failure rejects.
      createRun(world, engineDef, {
        runId,
        deploymentId,
        workflowName,
        specVersion,
        executionContext,
        input: input.bytes,
        inputJson: input.json,
      })
  created.catch(() => {}) // observed below; never an unhandled rejection

  // Like WDK, the queue name is validated only after run_created was issued.
  let queueName
  try {
    queueName = binding.workflowQueueName(workflowName, process.env.WORKFLOW_QUEUE_NAMESPACE || undefined)
  } catch (e) {
    // WDK issues run_created before validating the name, leaving a pending run behind;
    // wait for that write so the outcome does not depend on timing.
    await created.catch(() => {})
    throw e
  }
  const message = { runId, traceCarrier: {} }
  if (specVersion >= SPEC_VERSION_CURRENT) {
    message.runInput = {
      input: input.bytes ? taggedBytes(input.bytes) : JSON.parse(input.json),
      deploymentId,
      workflowName,
      specVersion,
      executionContext,
    }
  }

  let leased
  try {
    leased = await created
  } catch (e) {
    if (e && e.name !== 'EntityConflictError') throw e
  }
  if (engineDef) {
    const { getEngine } = require('./engine/engine.js')
    const engine = getEngine()
    // The latest declaration under this id runs (a module re-evaluated by a dev server
    // or a test runner declared it again; `workflow` may be the earlier function).
    const def = engine.current(engineDef)
    // A run just created: its log is only run_created, which we hold (no need to read it).
    // On PostgreSQL it runs here only if this process runs a worker; otherwise a worker
    // (in any process) claims it.
    if (world.kind !== 'postgres' || engine.worker) {
      const fresh = { workflowName, input: taggedBytes(input.bytes) }
      // (created, leased and started in one transaction: see createRun())
      if (leased) fresh.started = leased
      engine.launch(runId, def, fresh)
    }
  } else if (customWorld) {
    // A World given in the options creates and enqueues (the returned Run still reads
    // the process's World, as in WDK).
    await customWorld.queue(
      queueName,
      { ...message, ...(message.runInput ? { runInput: { ...message.runInput, input: input.bytes ? new Uint8Array(input.bytes) : JSON.parse(input.json) } } : {}) },
      { deploymentId, specVersion },
    )
  } else {
    await deliver({ queueName, messageId: `msg_${binding.newUlid()}`, body: JSON.stringify(message) })
  }
  logBackground(ops, runId)
  return new Run(runId)
}

module.exports = { start }

/**
 * Creates the run. A run of the embedded engine started on PostgreSQL by a process with a
 * worker is executed here: `run_created`, its lease and `run_started` go in one
 * transaction, and this resolves to `{ token, startedAt }`. On the local directory the
 * engine always executes it here: `run_created`, its lease and `run_started` are written
 * in one native call and made durable by one commit, resolving to `{ startedAt }` (or to
 * undefined when only the run was created: the engine then leases and starts it itself).
 */
async function createRun(world, engineDef, req) {
  if (engineDef && world.kind === 'postgres') {
    const engine = require('./engine/engine.js').peekEngine()
    if (engine && engine.worker) {
      return JSON.parse(await world.createRunLeased(req, engine.leaseOwner, engine.leaseTtlMs))
    }
  } else if (engineDef && typeof world.journalWriter === 'function') {
    // The local directory: the engine of this process runs it (see start() above), so the
    // run is created on the journal thread its appends go through (awake for them).
    const engine = require('./engine/engine.js').getEngine()
    const { writerFor } = require('./engine/journal.js')
    return writerFor(world, engine.leaseOwner).createRun(req, engine.leaseTtlMs)
  }
  await world.createRun(req)
  return undefined
}
