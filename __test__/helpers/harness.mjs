// Shared harness for the compatibility tests.
//
// Importing this module FIRST in a test file gives that file (= that process, since
// `node --test` runs every file in its own process) a fresh data directory, and points
// both the official `workflow/api` (which reads WORKFLOW_LOCAL_DATA_DIR once, at its
// first use) and our package at it. All data is written by the OFFICIAL packages
// (`@workflow/world-local` 4.4.1 + the `@workflow/core` 4.8.9 serializer), exactly as
// the runtime writes it.

import { mkdtempSync, readdirSync, readFileSync, existsSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

export const dataDir = mkdtempSync(path.join(tmpdir(), 'wfn-test-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
// No stray queue deliveries to whatever listens on :3000 unless a test sets a server.
delete process.env.PORT
delete process.env.WORKFLOW_TARGET_WORLD
delete process.env.VERCEL_DEPLOYMENT_ID
delete process.env.WORKFLOW_QUEUE_NAMESPACE

if (!process.env.WFN_KEEP_DATA) {
  process.on('exit', () => {
    try {
      rmSync(dataDir, { recursive: true, force: true })
    } catch {}
  })
}

const { createLocalWorld } = await import('@workflow/world-local')
const { monotonicFactory } = await import('ulid')
const serialization = await import('@workflow/core/serialization')

export const official = await import('workflow/api')
export const officialErrors = await import('workflow/errors')
export const officialRuntime = await import('@workflow/core/runtime')
export const ours = await import('../../index.js')
export const ourErrors = await import('../../errors.js')
export { serialization }

/** The writer: an official world-local instance on the same data directory. */
export const world = createLocalWorld({ dataDir })

const ulid = monotonicFactory()
export const newUlid = () => ulid()
export const newRunId = () => `wrun_${ulid()}`
export const newId = (prefix) => `${prefix}_${ulid()}`

export const WORKFLOW_NAME = 'workflow//./src/workflows/compat//compatWorkflow'
export const DEPLOYMENT_ID = 'dpl_local@4.4.1'
export const EXECUTION_CONTEXT = {
  traceCarrier: {},
  workflowCoreVersion: '4.8.9',
  features: { encryption: false },
}

/** Workflow return value, encoded as the runtime encodes it (`run_completed.output`). */
export function encodeReturnValue(value, runId) {
  return serialization.dehydrateWorkflowReturnValue(value, runId, undefined)
}

/** Workflow arguments, encoded as `start()` encodes them (`run_created.input`). */
export function encodeArguments(args, runId) {
  return serialization.dehydrateWorkflowArguments(args, runId, undefined)
}

/**
 * Creates a run through the official world's event log and moves it to `status`.
 * Returns the runId.
 */
export async function createRun({
  runId = newRunId(),
  status = 'pending',
  value,
  output,
  error = { message: 'boom', stack: 'Error: boom\n    at compatWorkflow (wf.js:1:1)' },
  errorCode = 'USER_ERROR',
  workflowName = WORKFLOW_NAME,
  args = [1, 2],
} = {}) {
  await world.events.create(runId, {
    eventType: 'run_created',
    specVersion: 3,
    eventData: {
      deploymentId: DEPLOYMENT_ID,
      workflowName,
      input: await encodeArguments(args, runId),
      executionContext: EXECUTION_CONTEXT,
    },
  })
  if (status === 'pending') return runId
  await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  if (status === 'running') return runId
  if (status === 'completed') {
    await completeRun(runId, { value, output })
  } else if (status === 'failed') {
    await world.events.create(runId, {
      eventType: 'run_failed',
      specVersion: 3,
      eventData: { error, errorCode },
    })
  } else if (status === 'cancelled') {
    await world.events.create(runId, { eventType: 'run_cancelled', specVersion: 3 })
  } else {
    throw new Error(`unknown status ${status}`)
  }
  return runId
}

export async function completeRun(runId, { value, output } = {}) {
  await world.events.create(runId, {
    eventType: 'run_completed',
    specVersion: 3,
    eventData: { output: output ?? (await encodeReturnValue(value, runId)) },
  })
}

/** A pending sleep, as the workflow runtime creates it. Returns the correlationId. */
export async function createWait(runId, resumeAt = new Date(Date.now() + 3_600_000)) {
  const correlationId = newId('wait')
  await world.events.create(runId, {
    eventType: 'wait_created',
    specVersion: 3,
    correlationId,
    eventData: { resumeAt },
  })
  return correlationId
}

/** A hook, as the workflow runtime creates it. Returns the hookId (correlationId). */
export async function createHook(runId, { token, metadata, isWebhook = false } = {}) {
  const correlationId = newId('hook')
  await world.events.create(runId, {
    eventType: 'hook_created',
    specVersion: 3,
    correlationId,
    eventData: {
      token,
      metadata:
        metadata === undefined
          ? undefined
          : await serialization.dehydrateStepArguments(metadata, runId, undefined),
      isWebhook,
    },
  })
  return correlationId
}

/** One stream chunk exactly as a step's `getWritable()` writes it: u32 BE length + 'devl' + devalue. */
export async function frameValue(value, runId = 'wrun_00000000000000000000000000') {
  const ts = serialization.getSerializeStream(
    serialization.getExternalReducers(globalThis, [], runId, undefined),
    undefined,
  )
  const writer = ts.writable.getWriter()
  const reader = ts.readable.getReader()
  const written = writer.write(value)
  const { value: frame } = await reader.read()
  await written
  await writer.close()
  return frame
}

/** `strm_<run ULID>_user[_<base64url(namespace)>]`, computed independently of both packages. */
export function streamName(runId, namespace) {
  const base = runId.replace('wrun_', 'strm_') + '_user'
  if (typeof namespace === 'string' && namespace.length > 0) {
    return `${base}_${Buffer.from(namespace, 'utf8').toString('base64url')}`
  }
  return base
}

export async function writeValues(runId, values, { namespace, close = false } = {}) {
  const name = streamName(runId, namespace)
  for (const v of values) await world.writeToStream(name, runId, await frameValue(v, runId))
  if (close) await world.closeStream(name, runId)
  return name
}

/** Reads a ReadableStream to its end. */
export async function readAll(stream) {
  const out = []
  const reader = stream.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    out.push(value)
  }
  return out
}

/** Reads exactly `n` values, then cancels the stream. */
export async function readN(stream, n) {
  const out = []
  const reader = stream.getReader()
  while (out.length < n) {
    const { done, value } = await reader.read()
    if (done) break
    out.push(value)
  }
  await reader.cancel()
  return out
}

/** `{ok: true, value}` or `{ok: false, error}`; never throws. Also guards against sync throws. */
export async function settle(fn) {
  try {
    return { ok: true, value: await (typeof fn === 'function' ? fn() : fn) }
  } catch (error) {
    return { ok: false, error }
  }
}

/** Plain description of an error for comparisons. */
export function describeError(e) {
  if (!(e && typeof e === 'object')) return { thrown: e }
  const d = { name: e.name, message: e.message }
  for (const k of ['runId', 'code', 'status', 'token']) if (e[k] !== undefined) d[k] = e[k]
  return d
}

// ---------------------------------------------------------------------------------
// Files

export const file = (...parts) => path.join(dataDir, ...parts)
export const readText = (...parts) => readFileSync(file(...parts), 'utf8')
export const readJson = (...parts) => JSON.parse(readText(...parts))
export const exists = (...parts) => existsSync(file(...parts))
export const listDir = (...parts) => {
  try {
    return readdirSync(file(...parts)).sort()
  } catch (e) {
    if (e.code === 'ENOENT') return []
    throw e
  }
}

/** Event files of a run, in name (= eventId ULID = creation) order, parsed. */
export function eventFiles(runId) {
  return listDir('events')
    .filter((f) => f.startsWith(`${runId}-`) && f.endsWith('.json'))
    .map((f) => ({ name: f, text: readText('events', f), json: readJson('events', f) }))
}

const ISO = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/g
const PREFIXED_ULID = /\b(wrun|evnt|wait|hook|step|strm|chnk|msg)_[0-9A-HJKMNP-TV-Z]{26}\b/g

/**
 * JSON text with key order preserved and volatile values (ids, timestamps) replaced,
 * so the files written for two twin runs can be compared structurally.
 */
export function shape(value, replacements = {}) {
  let text = JSON.stringify(value)
  for (const [from, to] of Object.entries(replacements)) text = text.split(from).join(to)
  return text.replace(PREFIXED_ULID, '<$1>').replace(ISO, '<time>')
}

// ---------------------------------------------------------------------------------
// Value fingerprints: a structural description that distinguishes -0/NaN, holes,
// prototypes, realms, Date validity, typed-array kinds, and shared/cyclic references.

export function fingerprint(root, realm = globalThis) {
  const ids = new Map()
  const fp = (v) => {
    if (v === null) return ['null']
    switch (typeof v) {
      case 'undefined':
        return ['undefined']
      case 'number':
        return ['number', Object.is(v, -0) ? '-0' : String(v)]
      case 'bigint':
        return ['bigint', v.toString()]
      case 'string':
      case 'boolean':
        return [typeof v, v]
      case 'symbol':
      case 'function':
        return [typeof v, String(v)]
    }
    if (ids.has(v)) return ['ref', ids.get(v)]
    const id = ids.size
    ids.set(v, id)
    const proto = Object.getPrototypeOf(v)
    const ctor = proto === null ? null : proto.constructor && proto.constructor.name
    const out = {
      id,
      tag: Object.prototype.toString.call(v),
      ctor,
      // instanceof the realm's own constructor of that name (catches cross-realm values)
      realm: ctor && typeof realm[ctor] === 'function' ? v instanceof realm[ctor] : null,
    }
    if (v instanceof realm.Date || out.tag === '[object Date]') {
      const t = Date.prototype.getTime.call(v)
      out.date = Number.isNaN(t) ? 'Invalid Date' : new Date(t).toISOString()
    } else if (out.tag === '[object Map]') {
      out.entries = [...Map.prototype.entries.call(v)].map(([k, x]) => [fp(k), fp(x)])
    } else if (out.tag === '[object Set]') {
      out.values = [...Set.prototype.values.call(v)].map(fp)
    } else if (out.tag === '[object RegExp]') {
      out.regexp = { source: v.source, flags: v.flags, lastIndex: v.lastIndex }
    } else if (typeof URL === 'function' && v instanceof URL) {
      out.href = v.href
    } else if (typeof URLSearchParams === 'function' && v instanceof URLSearchParams) {
      out.search = v.toString()
    } else if (typeof Headers === 'function' && v instanceof Headers) {
      out.headers = [...v]
    } else if (out.tag === '[object ArrayBuffer]') {
      out.bytes = [...new Uint8Array(v)]
    } else if (ArrayBuffer.isView(v)) {
      out.view = {
        items: Array.from(v, (x) => String(x)),
        byteOffset: v.byteOffset,
        bufferLength: v.buffer.byteLength,
      }
    } else if (out.tag === '[object Error]' || v instanceof Error) {
      out.error = { name: v.name, message: v.message, stack: v.stack }
    }
    // Own properties (arrays: holes are visible because missing indices are not own keys)
    if (Array.isArray(v)) out.length = v.length
    if (!(out.tag === '[object Error]' || v instanceof Error)) {
      out.props = Reflect.ownKeys(v)
        .filter((k) => !(Array.isArray(v) && k === 'length'))
        .map((k) => {
          const d = Object.getOwnPropertyDescriptor(v, k)
          return [String(k), 'value' in d ? fp(d.value) : ['accessor'], d.enumerable]
        })
    } else {
      out.props = Reflect.ownKeys(v)
        .filter((k) => k !== 'stack' && k !== 'message')
        .map((k) => [String(k), fp(v[k])])
    }
    return out
  }
  return fp(root)
}

/**
 * A stand-in for the app's workflow endpoint: records every queue delivery.
 * `respond(entry)` picks the answer (default 200 {"ok":true}).
 */
export function startQueueServer(respond = () => ({ status: 200, body: '{"ok":true}' })) {
  return import('node:http').then(({ createServer }) => {
    const received = []
    const waiters = []
    const server = createServer((req, res) => {
      const chunks = []
      req.on('data', (c) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        const entry = { method: req.method, url: req.url, headers: req.headers, body }
        try {
          entry.json = JSON.parse(body)
        } catch {}
        received.push(entry)
        const { status = 200, body: answer = '{"ok":true}' } = respond(entry) || {}
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(answer)
        for (const w of [...waiters]) {
          if (w.predicate(entry)) {
            waiters.splice(waiters.indexOf(w), 1)
            w.resolve(entry)
          }
        }
      })
    })
    return new Promise((resolve) => {
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address()
        resolve({
          server,
          url: `http://127.0.0.1:${port}`,
          received,
          /** Resolves with the first (past or future) request matching `predicate`. */
          waitFor(predicate) {
            const hit = received.find(predicate)
            if (hit) return Promise.resolve(hit)
            return new Promise((res) => waiters.push({ predicate, resolve: res }))
          },
          async close() {
            server.closeAllConnections?.()
            await new Promise((r) => server.close(() => r()))
          },
        })
      })
    })
  })
}
