// One side of the PostgreSQL API benchmark (see api.mjs), in a process of its own:
//
//   node bench/pg/api-child.mjs official   → the official `workflow/api` 4.8.9 on
//                                            @workflow/world-postgres 4.3.7
//   node bench/pg/api-child.mjs ours       → workflow-native's API on PostgreSQL
//
// Both with WORKFLOW_TARGET_WORLD=@workflow/world-postgres and WORKFLOW_POSTGRES_URL (set by
// the parent): each API picks its World once per process, so each side gets a process, and
// neither shares one with the bench's local-world sections. Driven over IPC by the parent:
// `{ id, cmd, args }` → `{ id, result }` or `{ id, error }`; the answers are raw samples in
// ms, the parent does the statistics. The writes a measurement times against (a run's
// terminal event, a stream chunk) go through one writer on both sides: workflow-native's
// native PostgreSQL World (`binding.pgConnect` → `createEvent`, `writeStreamChunks`), a
// connection pool of its own in this process, as another process's writer would be.
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRequire } from 'node:module'

const side = process.argv[2]
if (side !== 'official' && side !== 'ours') throw new Error(`usage: api-child.mjs official|ours (got ${side})`)
if (process.env.WORKFLOW_TARGET_WORLD !== '@workflow/world-postgres' || !process.env.WORKFLOW_POSTGRES_URL) {
  throw new Error('api-child.mjs: WORKFLOW_TARGET_WORLD=@workflow/world-postgres and WORKFLOW_POSTGRES_URL are required')
}
const url = process.env.WORKFLOW_POSTGRES_URL
const require = createRequire(import.meta.url)

const api = side === 'official' ? await import('workflow/api') : (await import('../../index.js')).default
const { binding } = require('../../lib/native.js')
const writer = await binding.pgConnect({ url })

const enc = new TextEncoder()
const b64 = (text) => Buffer.from(`devl${text}`).toString('base64')
const EXECUTION_CONTEXT = { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } }
const WORKFLOW_NAME = 'workflow//./bench//wf'
const PAYLOAD = 'x'.repeat(1000)

/** A stream frame as the WDK serializer writes it: u32 BE length, `devl` + devalue text. */
function frame(i) {
  const body = enc.encode(`devl${JSON.stringify([{ i: 1, s: 2 }, i, PAYLOAD])}`)
  const out = Buffer.alloc(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  out.set(body, 4)
  return out
}

/** A fresh running run, written by the shared writer. */
async function runningRun() {
  const runId = `wrun_${binding.newUlid()}`
  await writer.createEvent(
    runId,
    JSON.stringify({
      eventType: 'run_created',
      specVersion: 3,
      eventData: {
        deploymentId: 'postgres',
        workflowName: WORKFLOW_NAME,
        input: { __type: 'Uint8Array', data: b64('[[1,2],1,2]') },
        executionContext: EXECUTION_CONTEXT,
      },
    }),
  )
  await writer.createEvent(runId, JSON.stringify({ eventType: 'run_started', specVersion: 3 }))
  return runId
}

/** A wait in [lo, lo + span) ms, spread evenly over the samples (golden-ratio stride). */
const phase = (i, lo, span) => lo + span * (((i + 0.5) * 0.6180339887) % 1)

const handlers = {
  /**
   * The data the read measurements share, written by the official World (as the local
   * bench reads a data directory the official world wrote): `runs` runs (a third completed,
   * the rest running) and one running run with a closed stream of `chunks` × 1 KiB.
   */
  async setup({ runs, chunks }) {
    if (side !== 'official') throw new Error('setup runs in the official child')
    const { getWorld } = await import('@workflow/core/runtime')
    const world = getWorld()
    const devl = (text) => enc.encode(`devl${text}`)
    const create = async (completed) => {
      const runId = `wrun_${binding.newUlid()}`
      await world.events.create(runId, {
        eventType: 'run_created',
        specVersion: 3,
        eventData: { deploymentId: 'postgres', workflowName: WORKFLOW_NAME, input: devl('[[1,2],1,2]'), executionContext: EXECUTION_CONTEXT },
      })
      await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
      if (completed) {
        await world.events.create(runId, { eventType: 'run_completed', specVersion: 3, eventData: { output: devl('[{"ok":1},true]') } })
      }
      return runId
    }
    const runIds = []
    for (let i = 0; i < runs; i++) runIds.push(await create(i % 3 === 0))
    const streamRun = await create(false)
    const name = binding.runStreamName(streamRun, undefined)
    for (let i = 0; i < chunks; i += 500) {
      const batch = []
      for (let j = i; j < Math.min(chunks, i + 500); j++) batch.push(frame(j))
      await world.writeToStreamMulti(name, streamRun, batch)
    }
    await world.closeStream(name, streamRun)
    return { runIds, streamRun }
  },

  /**
   * `getRun(id).status`, `iters` calls one after the other over `runIds` (from the
   * `from`-th pick on), after a warm-up.
   */
  async status({ runIds, iters, warmup, from = 0 }) {
    const pick = (i) => runIds[(i * 7919) % runIds.length]
    for (let i = 0; i < warmup; i++) await api.getRun(pick(i)).status
    const out = []
    for (let i = from; i < from + iters; i++) {
      const t = performance.now()
      const s = await api.getRun(pick(i)).status
      out.push(performance.now() - t)
      if (s !== 'running' && s !== 'completed') throw new Error(`status ${s}`)
    }
    return out
  },

  /**
   * Context for the status figures: the same reads as one prepared `SELECT status` each
   * through node-postgres on one connection (what a single round trip costs here).
   */
  async bareStatus({ runIds, iters, warmup, from = 0 }) {
    const { default: pg } = await import('pg')
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      const pick = (i) => runIds[(i * 7919) % runIds.length]
      const q = (i) => client.query({ name: 'status', text: 'SELECT status FROM workflow.workflow_runs WHERE id = $1', values: [pick(i)] })
      for (let i = 0; i < warmup; i++) await q(i)
      const out = []
      for (let i = from; i < from + iters; i++) {
        const t = performance.now()
        const { rows } = await q(i)
        out.push(performance.now() - t)
        if (rows.length !== 1) throw new Error('no run row')
      }
      return out
    } finally {
      await client.end()
    }
  },

  /**
   * Context for the full-read figures: the stream's rows fetched in one query through
   * node-postgres (the bytes only, nothing decoded), `reps` times after one warm-up.
   */
  async bareRead({ streamRun, chunks, reps }) {
    const { default: pg } = await import('pg')
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      const name = binding.runStreamName(streamRun, undefined)
      const q = () => client.query('SELECT data FROM workflow.workflow_stream_chunks WHERE stream_id = $1 AND NOT eof ORDER BY id', [name])
      await q()
      const out = []
      for (let r = 0; r < reps; r++) {
        const t = performance.now()
        const { rows } = await q()
        out.push(performance.now() - t)
        if (rows.length !== chunks) throw new Error(`${rows.length} rows`)
      }
      return out
    } finally {
      await client.end()
    }
  },

  /**
   * Reads the closed stream of `streamRun` to its end `warmups` times, then `reps` times
   * measured: `{ samples, warmups }`, the times of both (a process's first reads run while
   * V8 still optimises the read path, on both sides).
   */
  async fullRead({ streamRun, chunks, reps, warmups = 1 }) {
    const readAll = async () => {
      const t = performance.now()
      let n = 0
      let last
      for await (const v of api.getRun(streamRun).getReadable()) {
        n++
        last = v
      }
      if (n !== chunks || last.i !== chunks - 1) throw new Error(`read ${n} chunks, last ${JSON.stringify(last?.i)}`)
      return performance.now() - t
    }
    const warm = []
    for (let r = 0; r < warmups; r++) warm.push(await readAll())
    const out = []
    for (let r = 0; r < reps; r++) out.push(await readAll())
    return { samples: out, warmups: warm }
  },

  /**
   * Completion → returnValue: per sample a fresh running run; a waiter awaits its
   * `returnValue`; after the waiter's first check (one `status` read) and a wait that
   * puts the write at an even spread of phases over the official waiter's 1 s polling
   * period, `run_completed` is written; the time from that write resolving to the waiter
   * resolving (0 when the waiter resolved first), and from the write's call (its commit
   * included).
   */
  async completion({ n }) {
    const out = []
    const fromCall = []
    let early = 0
    for (let i = 0; i < n; i++) {
      const runId = await runningRun()
      let t1
      const done = api.getRun(runId).returnValue.then((v) => {
        t1 = performance.now()
        return v
      })
      await api.getRun(runId).status
      await sleep(phase(i, 20, 1000))
      const tw = performance.now()
      await writer.createEvent(
        runId,
        JSON.stringify({ eventType: 'run_completed', specVersion: 3, eventData: { output: { __type: 'Uint8Array', data: b64('[42]') } } }),
      )
      const t0 = performance.now()
      const v = await done
      if (v !== 42) throw new Error(`returnValue ${v}`)
      if (t1 < t0) early++
      out.push(Math.max(0, t1 - t0))
      fromCall.push(t1 - tw)
    }
    return { samples: out, fromCall, early }
  },

  /**
   * Live chunk latency: a reader of a running run's stream (`getRun(id).getReadable()`),
   * primed with one chunk (so it is live); per sample the reader awaits the next chunk,
   * after 10–30 ms one 1 KiB chunk is written; the time from the write resolving to the
   * reader getting the chunk (0 when the reader got it first), and from the write's call.
   */
  async chunk({ n }) {
    const runId = await runningRun()
    const name = binding.runStreamName(runId, undefined)
    const reader = api.getRun(runId).getReadable().getReader()
    await writer.writeStreamChunks(name, runId, [frame(0)])
    const first = await reader.read()
    if (first.value?.i !== 0) throw new Error(`first chunk ${JSON.stringify(first.value)}`)
    const out = []
    const fromCall = []
    let early = 0
    for (let i = 1; i <= n; i++) {
      let t1
      const next = reader.read().then((r) => {
        t1 = performance.now()
        return r
      })
      await sleep(phase(i, 10, 20))
      const tw = performance.now()
      await writer.writeStreamChunks(name, runId, [frame(i)])
      const t0 = performance.now()
      const r = await next
      if (r.value?.i !== i) throw new Error(`chunk ${i}: ${JSON.stringify(r.value?.i)}`)
      if (t1 < t0) early++
      out.push(Math.max(0, t1 - t0))
      fromCall.push(t1 - tw)
    }
    await writer.closeStream(name, runId)
    if (!(await reader.read()).done) throw new Error('the stream did not end at its close marker')
    return { samples: out, fromCall, early }
  },
}

process.on('message', async ({ id, cmd, args }) => {
  if (cmd === 'exit') {
    // The official World keeps pg clients (its pool, its LISTEN client) that would keep
    // this process alive: end it here.
    process.send({ id, result: null }, () => process.exit(0))
    return
  }
  try {
    process.send({ id, result: await handlers[cmd](args) })
  } catch (e) {
    process.send({ id, error: e?.stack || String(e) })
  }
})
process.send({ ready: side })
