// A PostgreSQL server restart (`pg_ctl restart -m fast`: every connection terminated) in
// the middle of runs executing on this process's worker, on a private cluster of the
// test's own: the engine's batch connections, the pool and the listener reconnect, and
// every run goes on to its result — a step in flight when the server went away, a run
// waiting on a hook resumed after it, a run started after it. Nothing is written twice.
// And a database that refuses a run's writes for a while: a storage fault, reported (never
// the run's failure), and the run goes on once the database takes writes again.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { privateCluster, sql } from './helpers/pg.mjs'

const require = createRequire(import.meta.url)
const cluster = await privateCluster()
const skip = cluster.skip
const ours = (await import('../index.js')).default
const wf = (await import('../workflow.js')).default
const { resetWorldForTests } = require('../lib/world.js')

let reached
const atGate = new Promise((r) => (reached = r))
let open
const opened = new Promise((r) => (open = r))
const runsOfGate = []

const add = wf.step('restart-add', async (x, i, gated) => {
  if (gated && i === 5) {
    runsOfGate.push(x)
    reached()
    await opened
  }
  return x + 1
})
const counter = wf.workflow('restart-counter', async (n, gated) => {
  let acc = 0
  for (let i = 0; i < n; i++) acc = await add(acc, i, gated)
  return acc
})
const hooked = wf.workflow('restart-hooked', async (token) => {
  const payload = await wf.createHook({ token })
  return await add(payload.n, -1)
})

// a step whose beginning the database loses while it runs (see the last test)
const lostRuns = []
let lostReached
const atLostGate = new Promise((r) => (lostReached = r))
let openLost
const lostOpened = new Promise((r) => (openLost = r))
const lossyAdd = wf.step('lossy-add', async (x, i) => {
  lostRuns.push(i)
  if (i === 1 && lostRuns.filter((v) => v === 1).length === 1) {
    lostReached()
    await lostOpened
  }
  return x + 1
})
const lossy = wf.workflow('lossy-counter', async (n) => {
  let acc = 0
  for (let i = 0; i < n; i++) acc = await lossyAdd(acc, i)
  return acc
})

let worker
let client
const faults = []
let faulted
const firstFault = new Promise((r) => (faulted = r))
/** Called with each fault the worker reports after it was set. */
let onFault = () => {}
before(async () => {
  if (skip) return
  process.env.WORKFLOW_TARGET_WORLD = '@workflow/world-postgres'
  process.env.WORKFLOW_POSTGRES_URL = cluster.url
  resetWorldForTests()
  worker = wf.startWorker({
    leaseMs: 2000,
    pollMs: 200,
    onError: (e) => {
      faults.push(e)
      faulted(e)
      onFault(e)
    },
  })
  await worker.ready
})
after(async () => {
  if (skip) return
  try {
    if (worker) await worker.stop()
    if (client) await client.end()
  } finally {
    cluster.stop()
  }
})

test('a server restart mid-run: the runs in flight, waiting and started after it all complete', { skip, timeout: 120_000 }, async () => {
  const hookRun = await ours.start(hooked, ['restart-token'])
  // the hook exists once its run got that far
  for (let i = 0; i < 5000; i++) {
    try {
      await ours.getHookByToken('restart-token')
      break
    } catch {
      await new Promise((r) => setImmediate(r))
    }
  }
  const run = await ours.start(counter, [12, true])
  await atGate
  cluster.restart()
  // the API's reads right after it, through pooled connections the server ended: they
  // answer (a connection found dead is replaced), none fails
  assert.equal(await hookRun.status, 'running')
  assert.equal(await hookRun.workflowName, 'workflow//native//restart-hooked')
  assert.equal((await ours.getHookByToken('restart-token')).runId, hookRun.runId)
  assert.equal(await ours.getRun(run.runId).status, 'running')
  open()
  assert.equal(await run.returnValue, 12)
  // the hook, resumed through a fresh connection
  await ours.resumeHook('restart-token', { n: 41 })
  assert.equal(await hookRun.returnValue, 42)
  // and a run started after the restart
  const later = await ours.start(counter, [7, false])
  assert.equal(await later.returnValue, 7)

  client = await sql(cluster.url)
  for (const r of [run, later]) {
    const { rows } = await client.query(
      `SELECT correlation_id, count(*)::int AS n FROM workflow.workflow_events
       WHERE run_id = $1 AND type = 'step_completed' GROUP BY correlation_id`,
      [r.runId],
    )
    assert.equal(rows.length, r === run ? 12 : 7)
    assert.ok(rows.every((x) => x.n === 1), JSON.stringify(rows))
    const terminal = await client.query(
      `SELECT count(*)::int AS n FROM workflow.workflow_events WHERE run_id = $1 AND type IN ('run_completed', 'run_failed')`,
      [r.runId],
    )
    assert.equal(terminal.rows[0].n, 1)
  }
  // the step in flight at the restart ran once (its outcome was written after it)
  assert.deepEqual(runsOfGate, [5])
  assert.equal(await run.status, 'completed')
})

test('writes the database refuses for a while: a storage fault, reported, and the run goes on once they pass', { skip, timeout: 120_000 }, async () => {
  client = client || (await sql(cluster.url))
  // every step_completed is refused while `wfn_block` has a row (an operator's problem)
  await client.query(`
    CREATE TABLE wfn_block (x int);
    INSERT INTO wfn_block VALUES (1);
    CREATE FUNCTION wfn_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.type = 'step_completed' AND EXISTS (SELECT 1 FROM wfn_block) THEN
        RAISE EXCEPTION 'writes are blocked for the test';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER wfn_refuse BEFORE INSERT ON workflow.workflow_events
      FOR EACH ROW EXECUTE FUNCTION wfn_refuse();`)
  const run = await ours.start(counter, [3, false])
  const fault = await firstFault
  assert.equal(fault.runId, run.runId)
  assert.equal(fault.code, 'DATABASE_ERROR')
  assert.equal(fault.sqlstate, 'P0001')
  assert.match(fault.message, /writes are blocked for the test/)
  // not the run's failure: it is still running, with no terminal event
  assert.equal(await run.status, 'running')
  await client.query('DELETE FROM wfn_block')
  assert.equal(await run.returnValue, 3)
  const { rows } = await client.query(
    `SELECT correlation_id, count(*)::int AS n FROM workflow.workflow_events
     WHERE run_id = $1 AND type = 'step_completed' GROUP BY correlation_id`,
    [run.runId],
  )
  assert.equal(rows.length, 3)
  assert.ok(rows.every((x) => x.n === 1), JSON.stringify(rows))
  assert.ok(faults.every((e) => e.runId === run.runId && e.code === 'DATABASE_ERROR'))
  await client.query('DROP TRIGGER wfn_refuse ON workflow.workflow_events; DROP FUNCTION wfn_refuse(); DROP TABLE wfn_block')
})

test("a step whose beginning the database lost (a server crash before the WAL flush of its step_created/step_started): a storage fault, not the run's failure, and the step runs again when the run is taken up again", { skip, timeout: 120_000 }, async () => {
  client = client || (await sql(cluster.url))
  const run = await ours.start(lossy, [3])
  await atLostGate
  // What such a crash leaves (those commits do not wait for their flush): neither the
  // step's row nor its events. Step 0 completed; step 1 is running.
  const { rows } = await client.query(`SELECT step_id FROM workflow.workflow_steps WHERE run_id = $1 AND status = 'running'`, [
    run.runId,
  ])
  assert.equal(rows.length, 1)
  const lostId = rows[0].step_id
  await client.query('DELETE FROM workflow.workflow_events WHERE run_id = $1 AND correlation_id = $2', [run.runId, lostId])
  await client.query('DELETE FROM workflow.workflow_steps WHERE run_id = $1 AND step_id = $2', [run.runId, lostId])
  const fault = new Promise((r) => (onFault = (e) => e.runId === run.runId && r(e)))
  openLost()
  const err = await fault
  onFault = () => {}
  assert.equal(err.name, 'WorkflowWorldError')
  assert.equal(err.code, 'CORRUPT_FILE')
  assert.equal(err.path, 'workflow.workflow_steps')
  assert.match(err.message, new RegExp(`step ${lostId} of run ${run.runId} is missing in workflow\\.workflow_steps`))
  assert.match(err.cause.message, /^Step ".*" not found$/)
  // taken up again (the lease runs out): the lost step runs again, under a new id
  assert.equal(await run.returnValue, 3)
  assert.deepEqual(lostRuns, [0, 1, 1, 2])
  const events = await client.query('SELECT type, correlation_id FROM workflow.workflow_events WHERE run_id = $1 ORDER BY id', [
    run.runId,
  ])
  const types = events.rows.map((r) => r.type)
  assert.equal(types.filter((t) => t === 'step_completed').length, 3)
  assert.ok(!types.includes('run_failed'), types.join(' '))
  assert.ok(!events.rows.some((r) => r.correlation_id === lostId))
  assert.equal(types.at(-1), 'run_completed')
})
