// workflow-native's embedded engine on PostgreSQL against the floor (see api.mjs), in a
// process of its own on an empty database (WORKFLOW_POSTGRES_URL; our schema is created on
// first use and is the upstream CLI's, object for object — __test__/pg-twin.test.mjs):
//
//   node bench/pg/api-engine-child.mjs <steps> <rounds>
//
// A worker in this process (startWorker(), as bench/peers/ours-pg-child.mjs), an
// n-step workflow (the e2e app's manySteps: n trivial steps one after the other),
// start() → returnValue; interleaved with it, round for round, the floor: n × the two
// transactions a durable step must commit in world-postgres's tables, each one round trip
// (a multi-statement simple query with literal values through `pg`), one after the other,
// with rows shaped like the engine's own (the model is a step of the first timed run).
// Reports `{ steps, engineMs, floorMs, warmMs, floor }` over IPC and exits.
import { performance } from 'node:perf_hooks'
import { createRequire } from 'node:module'
import pg from 'pg'

const require = createRequire(import.meta.url)
const STEPS = Number(process.argv[2])
const ROUNDS = Number(process.argv[3])
if (process.env.WORKFLOW_TARGET_WORLD !== '@workflow/world-postgres' || !process.env.WORKFLOW_POSTGRES_URL) {
  throw new Error('api-engine-child.mjs: WORKFLOW_TARGET_WORLD=@workflow/world-postgres and WORKFLOW_POSTGRES_URL are required')
}
const url = process.env.WORKFLOW_POSTGRES_URL

const { start } = (await import('../../index.js')).default
const { workflow, step, startWorker } = (await import('../../workflow.js')).default
const { binding } = require('../../lib/native.js')

const increment = step('increment', async (x) => x + 1)
const manySteps = workflow('manySteps', async (n) => {
  let acc = 0
  for (let i = 0; i < n; i++) acc = await increment(acc)
  return acc
})

// ------------------------------------------------------------------------ the floor
// SQL literals for the floor's statements.
const lit = (v) => {
  if (v === null || v === undefined) return 'NULL'
  if (Buffer.isBuffer(v)) return `'\\x${v.toString('hex')}'::bytea`
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (typeof v === 'object') return `'${JSON.stringify(v).replaceAll("'", "''")}'::jsonb`
  return `'${String(v).replaceAll("'", "''")}'`
}
const ts = () => `'${new Date().toISOString().replace('T', ' ').replace('Z', '')}'::timestamp`
// Columns the floor gives values of its own; the rest of a model row is copied as it is.
const TIMES = new Set(['created_at', 'updated_at', 'started_at', 'completed_at'])

/**
 * The floor's two transactions for one step, from a model step row and its three event
 * rows: `[txn1, txn2]` SQL texts with fresh ids (same lengths) in `runId`.
 */
function floorStep(model, runId) {
  const stepId = `step_${binding.newUlid()}`
  const now = ts()
  const insert = (table, row, own) => {
    const cols = []
    const vals = []
    for (const [k, v] of Object.entries(row)) {
      if (k in own) {
        cols.push(k)
        vals.push(own[k])
      } else if (!TIMES.has(k) && v !== null) {
        cols.push(k)
        vals.push(lit(v))
      }
    }
    return `INSERT INTO workflow.${table} (${cols.join(', ')}) VALUES (${vals.join(', ')})`
  }
  // the step row as step_started leaves it: running, no output yet
  const { output_cbor: output, completed_at: _c, ...started } = model.step
  const stepRow = insert('workflow_steps', { ...started, status: 'running' }, {
    step_id: lit(stepId),
    run_id: lit(runId),
    status: lit('running'),
    created_at: now,
    updated_at: now,
    started_at: now,
  })
  const event = (e) =>
    insert('workflow_events', e, { id: lit(`wevt_${binding.newUlid()}`), correlation_id: lit(stepId), run_id: lit(runId), created_at: ts() })
  const txn1 = `BEGIN; ${stepRow}; ${event(model.events.step_created)}; ${event(model.events.step_started)}; COMMIT`
  const done = ts()
  const txn2 = `BEGIN; UPDATE workflow.workflow_steps SET status = 'completed', output_cbor = ${lit(output)}, completed_at = ${done}, updated_at = ${done} WHERE step_id = ${lit(stepId)}; ${event(model.events.step_completed)}; COMMIT`
  return [txn1, txn2]
}

/** A step of `runId` (the middle one) and its step_created / step_started / step_completed rows. */
async function modelOf(client, runId) {
  const steps = (await client.query('SELECT * FROM workflow.workflow_steps WHERE run_id = $1 ORDER BY created_at, step_id', [runId])).rows
  if (steps.length !== STEPS) throw new Error(`model run has ${steps.length} step rows, not ${STEPS}`)
  const stepRow = steps[Math.floor(steps.length / 2)]
  const evs = (await client.query('SELECT * FROM workflow.workflow_events WHERE run_id = $1 AND correlation_id = $2 ORDER BY id', [runId, stepRow.step_id])).rows
  const events = {}
  for (const e of evs) events[e.type] = e
  for (const t of ['step_created', 'step_started', 'step_completed']) {
    if (!events[t]) throw new Error(`model step ${stepRow.step_id} has no ${t} row (${evs.map((e) => e.type).join(', ')})`)
  }
  if (evs.length !== 3) throw new Error(`model step has ${evs.length} event rows`)
  return { step: stepRow, events }
}

// ------------------------------------------------------------------------- the run
const worker = startWorker({ concurrency: Infinity })
await worker.ready
const runOnce = async (n) => {
  const t = performance.now()
  const run = await start(manySteps, [n])
  const v = await run.returnValue
  if (v !== n) throw new Error(`returnValue ${v}`)
  return { ms: performance.now() - t, runId: run.runId }
}
const client = new pg.Client({ connectionString: url })
await client.connect()
try {
  const warm = await runOnce(Math.min(50, STEPS)) // warm-up: connections, prepared statements
  const engineMs = []
  const floorMs = []
  let model
  let example
  const floorRunId = `wrun_${binding.newUlid()}`
  for (let r = 0; r < ROUNDS; r++) {
    const { ms, runId } = await runOnce(STEPS)
    engineMs.push(ms)
    if (!model) model = await modelOf(client, runId)
    const t = performance.now()
    for (let i = 0; i < STEPS; i++) {
      const [txn1, txn2] = floorStep(model, floorRunId)
      if (!example) example = { txn1, txn2 }
      await client.query(txn1)
      await client.query(txn2)
    }
    floorMs.push(performance.now() - t)
  }
  const n = (await client.query("SELECT count(*)::int AS n FROM workflow.workflow_steps WHERE run_id = $1 AND status = 'completed'", [floorRunId])).rows[0].n
  if (n !== STEPS * ROUNDS) throw new Error(`floor wrote ${n} completed step rows, not ${STEPS * ROUNDS}`)
  const len = (b) => (b ? b.length : 0)
  const floor = {
    example,
    bytes: {
      step_input: len(model.step.input_cbor),
      step_output: len(model.step.output_cbor),
      step_created: len(model.events.step_created.payload_cbor),
      step_started: len(model.events.step_started.payload_cbor),
      step_completed: len(model.events.step_completed.payload_cbor),
    },
    stepName: model.step.step_name,
  }
  await worker.stop()
  process.send({ steps: STEPS, engineMs, floorMs, warmMs: warm.ms, floor }, () => process.exit(0))
} catch (e) {
  console.error(e)
  process.exit(1)
}
