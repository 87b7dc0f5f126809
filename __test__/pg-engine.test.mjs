// The embedded engine on PostgreSQL, used as a user would: worker processes
// (startWorker(), __test__/engine/pg-worker-child.mjs) execute the runs that this process
// — a client with no worker — starts, resumes, wakes up and cancels through one database.
// A SIGKILLed worker's runs continue in another worker with no completed step run again;
// a worker stopped (SIGSTOP) longer than its lease is fenced off once it resumes; a run
// started with no worker alive stays pending until a worker claims it.
//
// Database `wfn_pgengine_<pid>` (created and dropped here) on WORKFLOW_POSTGRES_URL's
// server, else postgres@127.0.0.1:5432. Without a server the tests are skipped with the
// reason printed; under CI=true that fails.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { baseUrl, withDb } from './helpers/pg.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const childScript = path.join(here, 'engine', 'pg-worker-child.mjs')

// ------------------------------------------------------------------ the database

const dbName = `wfn_pgengine_${process.pid}`
async function admin() {
  const c = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 5000 })
  await c.connect()
  return c
}
let skip = false
try {
  const c = await admin()
  try {
    await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
    await c.query(`CREATE DATABASE ${dbName}`)
  } finally {
    await c.end()
  }
} catch (e) {
  const reason = `no PostgreSQL at ${baseUrl.replace(/\/\/[^@]*@/, '//[redacted]@')}: ${e.message}`
  if (process.env.CI === 'true') throw new Error(`PostgreSQL is required under CI=true: ${reason}`)
  console.log(`# SKIPPED (PostgreSQL engine tests): ${reason}`)
  skip = reason
}
const dbUrl = withDb(baseUrl, dbName)

// This process is a client: the same declarations as the workers, no startWorker().
process.env.WORKFLOW_TARGET_WORLD = '@workflow/world-postgres'
process.env.WORKFLOW_POSTGRES_URL = dbUrl
delete process.env.WORKFLOW_QUEUE_NAMESPACE
const api = await import('../index.js')
const { steps, hooked, sleepy } = await import('./engine/pg-worker-child.mjs')

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-pg-engine-'))
let client // a plain SQL client on the test database
const children = new Set()

before(async () => {
  if (skip) return
  client = new pg.Client({ connectionString: dbUrl })
  await client.connect()
  // the schema (ours and the upstream one) is made on first use: here, before the workers
  await api.getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV').exists
  // An audit of the lease table (ours, in the test database only): who held which lease
  // when, even if the row is gone since.
  await client.query(`
    CREATE TABLE public.lease_audit (seq bigserial PRIMARY KEY, op text NOT NULL, run_id text NOT NULL, owner text NOT NULL, token bigint NOT NULL);
    CREATE FUNCTION public.lease_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        INSERT INTO public.lease_audit (op, run_id, owner, token) VALUES (TG_OP, OLD.run_id, OLD.owner, OLD.token);
        RETURN OLD;
      END IF;
      INSERT INTO public.lease_audit (op, run_id, owner, token) VALUES (TG_OP, NEW.run_id, NEW.owner, NEW.token);
      RETURN NEW;
    END $$;
    CREATE TRIGGER lease_audit AFTER INSERT OR UPDATE OR DELETE ON workflow_native.leases
      FOR EACH ROW EXECUTE FUNCTION public.lease_audit();`)
})

after(async () => {
  for (const ch of children) ch.kill()
  await Promise.all([...children].map((ch) => ch.closed))
  fs.rmSync(tmp, { recursive: true, force: true })
  if (skip) return
  await client?.end()
  const a = await admin()
  try {
    await a.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
  } finally {
    await a.end()
  }
})

// ------------------------------------------------------------------ helpers

const WAIT_MS = 30_000

/**
 * A worker process with line-based output: `waitFor(re, n)` resolves with the n-th line
 * matching `re` once printed (rejects when the child exits first, or after WAIT_MS).
 */
function spawnWorker(label, side, env = {}) {
  const p = spawn(process.execPath, [childScript], {
    env: { ...process.env, LABEL: label, SIDE_LOG: side, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const out = []
  const err = []
  const waiters = []
  const dump = () => `--- ${label} stdout:\n${out.join('\n')}\n--- ${label} stderr:\n${err.join('\n')}`
  const check = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const lines = out.filter((l) => waiters[i].re.test(l))
      if (lines.length >= waiters[i].count) {
        clearTimeout(waiters[i].timer)
        waiters[i].resolve(lines[waiters[i].count - 1])
        waiters.splice(i, 1)
      }
    }
  }
  readline.createInterface({ input: p.stdout }).on('line', (l) => {
    out.push(l)
    check()
  })
  readline.createInterface({ input: p.stderr }).on('line', (l) => err.push(l))
  p.stdin.on('error', () => {}) // a killed child
  let exited = false
  const closed = new Promise((resolve) =>
    p.on('close', (code, signal) => {
      exited = true
      resolve({ code, signal })
    }),
  )
  closed.then(() => {
    for (const w of waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(new Error(`worker ${label} exited before printing ${w.re}:\n${dump()}`))
    }
    children.delete(ch)
  })
  const ch = {
    label,
    proc: p,
    out,
    err,
    closed,
    dump,
    send: (line) => p.stdin.write(`${line}\n`),
    waitFor: (re, count = 1) =>
      new Promise((resolve, reject) => {
        const w = { re, count, resolve, reject }
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1)
          reject(new Error(`worker ${label} did not print ${re} (#${count}) within ${WAIT_MS} ms:\n${dump()}`))
        }, WAIT_MS)
        waiters.push(w)
        check()
      }),
    /** Ends the child (SIGKILL; a stopped one too) and waits for it. */
    kill: async () => {
      if (!exited) p.kill('SIGKILL')
      return closed
    },
    /** `worker.running` in the child, asked now. */
    running: async () => {
      const n = out.filter((l) => l.startsWith('RUNNING ')).length
      ch.send('running')
      return Number((await ch.waitFor(/^RUNNING /, n + 1)).slice(8))
    },
  }
  children.add(ch)
  return ch
}

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** Polls `fn` until it returns a truthy value (every 25 ms, for at most `ms`). */
async function until(fn, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** A promise bounded by WAIT_MS (a run that never ends fails the test, it does not hang it). */
function bounded(promise, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** The run's events in log order: `{ id, type, correlationId, createdAt }`. */
async function eventsOf(runId) {
  const r = await client.query(
    'SELECT id, type, correlation_id, created_at FROM workflow.workflow_events WHERE run_id = $1 ORDER BY id',
    [runId],
  )
  return r.rows.map((row) => ({ id: row.id, type: row.type, correlationId: row.correlation_id, createdAt: row.created_at }))
}

/** The run's lease history: `[{ op, owner, token }]` in the order written. */
async function leaseHistory(runId) {
  const r = await client.query('SELECT op, owner, token::int AS token FROM public.lease_audit WHERE run_id = $1 ORDER BY seq', [runId])
  return r.rows
}

/**
 * A lease history as "<op> <name> <token>" lines, without renewals (same owner and token);
 * a release (the row kept, its owner emptied, so the next take still bumps the token) is
 * "RELEASE <name> <token>".
 */
function leaseChanges(history, names) {
  const out = []
  let prev = null
  for (const h of history) {
    if (h.op === 'UPDATE' && h.owner === '') {
      if (prev) out.push(`RELEASE ${names[prev.owner] ?? prev.owner} ${h.token}`)
      prev = null
      continue
    }
    const renewal = h.op === 'UPDATE' && prev && prev.owner === h.owner && prev.token === h.token
    if (!renewal) out.push(`${h.op} ${names[h.owner] ?? h.owner} ${h.token}`)
    prev = h.op === 'DELETE' ? null : h
  }
  return out
}

/** The run's lease if someone holds it (a released lease keeps its row, owner emptied). */
async function leaseOf(runId) {
  const r = await client.query("SELECT owner, token FROM workflow_native.leases WHERE run_id = $1 AND owner <> ''", [runId])
  return r.rows[0] || null
}

const TERMINAL = new Set(['run_completed', 'run_failed', 'run_cancelled'])

/**
 * The checks every finished run of `steps` passes: one terminal event (`terminal`), the
 * last of the log; each step completed once; the step ids (in order of creation).
 */
function checkLog(evs, runId, terminal = 'run_completed', stepCount = 4) {
  const types = evs.map((e) => e.type)
  const ends = evs.filter((e) => TERMINAL.has(e.type))
  assert.deepEqual(
    ends.map((e) => e.type),
    [terminal],
    `run ${runId}: one terminal event (${terminal}); log: ${types.join(' ')}`,
  )
  assert.equal(evs.at(-1).type, terminal, `run ${runId}: nothing after ${terminal}; log: ${types.join(' ')}`)
  const created = evs.filter((e) => e.type === 'step_created').map((e) => e.correlationId)
  assert.equal(new Set(created).size, created.length, `run ${runId}: a step created twice; log: ${types.join(' ')}`)
  checkAttempts(evs, runId)
  const completed = evs.filter((e) => e.type === 'step_completed').map((e) => e.correlationId)
  assert.equal(new Set(completed).size, completed.length, `run ${runId}: a step completed twice; log: ${types.join(' ')}`)
  if (terminal === 'run_completed') {
    assert.equal(created.length, stepCount, `run ${runId}: ${stepCount} steps; log: ${types.join(' ')}`)
    assert.deepEqual(completed.slice().sort(), created.slice().sort(), `run ${runId}: every step completed once`)
  }
  return created
}

/**
 * Every outcome of a step (`step_completed`, `step_retrying`, `step_failed`) answers an
 * attempt begun since its previous outcome: an attempt whose outcome was given already
 * (by the process that took the run over) is never answered a second time.
 */
function checkAttempts(evs, runId) {
  const open = new Map() // step id -> an attempt begun and not answered yet
  for (const e of evs) {
    if (e.type === 'step_started') open.set(e.correlationId, true)
    else if (['step_completed', 'step_retrying', 'step_failed'].includes(e.type)) {
      assert.ok(
        open.get(e.correlationId),
        `run ${runId}: ${e.type} of ${e.correlationId} answers no attempt begun since the step's previous outcome; log:\n${evs
          .map((x) => `  ${x.type} ${x.correlationId ?? ''}`)
          .join('\n')}`,
      )
      open.set(e.correlationId, false)
    }
  }
}

/** "<runId> <step> <label>" lines of a side log. */
const sideLines = (side) =>
  fs.existsSync(side)
    ? fs
        .readFileSync(side, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' '))
    : []

function freshSide(name) {
  return path.join(tmp, `${name}.side`)
}

/** Whichever of `workers` prints a line matching `re` first: `{ worker, line }`. */
function firstToPrint(workers, re) {
  return Promise.any(workers.map((w) => w.waitFor(re).then((line) => ({ worker: w, line }))))
}

// ------------------------------------------------------------------ tests

test('3 workers, 32 runs started by a client with no worker, one worker SIGKILLed mid-step: every run completes, no completed step runs again', { skip, timeout: 90_000 }, async (t) => {
  const side = freshSide('multi')
  const workers = ['A', 'B', 'C'].map((l) => spawnWorker(l, side))
  try {
    await Promise.all(workers.map((w) => w.waitFor(/^READY/)))
    // run 0 blocks in its step 2 (in whichever worker claims it) until told to finish; the
    // others are started meanwhile, so the kill finds the killed worker busy with some
    const first = await api.start(steps, [0, 2])
    const hang = first.runId
    const inStep = new RegExp(`^IN ${escape(hang)} 2$`)
    const inHang = firstToPrint(workers, inStep)
    const runs = [first, ...(await Promise.all(Array.from({ length: 31 }, (_, k) => api.start(steps, [k + 1]))))]
    const { worker: killed } = await inHang
    killed.proc.kill('SIGKILL')
    assert.equal((await killed.closed).signal, 'SIGKILL')
    const survivors = workers.filter((w) => w !== killed)
    // once the killed worker's lease is stale, a survivor takes the run over (step 2 again)
    const { worker: taker } = await firstToPrint(survivors, inStep)
    taker.send(`finish ${hang}`)
    const values = await bounded(Promise.all(runs.map((r) => r.returnValue)), 'every run to complete')
    assert.deepEqual(
      values,
      runs.map((_, n) => n * 100 + 10),
    )
    for (const r of runs) assert.equal(await r.status, 'completed')

    // the side log: each (run, step) ran once, except the one a run had in flight in the
    // killed worker (then twice: there, and in the worker that took the run over)
    const lines = sideLines(side)
    const ids = new Set(runs.map((r) => r.runId))
    assert.ok(lines.every(([id]) => ids.has(id)), 'only these runs in the side log')
    let again = 0
    for (const { runId } of runs) {
      const mine = lines.filter(([id]) => id === runId)
      const byKilled = mine.filter(([, , l]) => l === killed.label).map(([, i]) => Number(i))
      const lastOfKilled = byKilled.length ? Math.max(...byKilled) : 0
      for (let i = 1; i <= 4; i++) {
        const attempts = mine.filter(([, s]) => Number(s) === i)
        if (attempts.length === 1) continue
        again++
        assert.equal(attempts.length, 2, `run ${runId} step ${i} ran ${attempts.length} times: ${JSON.stringify(attempts)}`)
        assert.equal(i, lastOfKilled, `run ${runId} step ${i} ran twice but was not in flight in the killed worker: ${JSON.stringify(mine)}`)
        assert.equal(attempts[0][2], killed.label, `run ${runId} step ${i}: the first attempt was the killed worker's`)
        assert.notEqual(attempts[1][2], killed.label)
      }
      assert.deepEqual(
        [...new Set(mine.map(([, s]) => Number(s)))].sort(),
        [1, 2, 3, 4],
        `run ${runId}: every step ran`,
      )
    }
    assert.ok(again >= 1, 'the step in flight at the kill ran again')
    const tookOver = runs.filter(({ runId }) => {
      const labels = lines.filter(([id]) => id === runId).map(([, , l]) => l)
      return labels.includes(killed.label) && labels.some((l) => l !== killed.label)
    }).length
    t.diagnostic(`worker ${killed.label} killed; ${tookOver} run(s) continued in another worker, ${again} step(s) ran twice`)
    assert.deepEqual(
      lines.filter(([id, s]) => id === hang && s === '2').map(([, , l]) => l),
      [killed.label, taker.label],
    )

    // the database: one run_completed per run, the last event; no step completed twice
    for (const { runId } of runs) checkLog(await eventsOf(runId), runId)
    // the survivors execute nothing more once every run completed
    for (const w of survivors) await until(async () => (await w.running()) === 0, `worker ${w.label} to be idle`)
    for (const w of survivors) assert.ok(!w.out.some((l) => l.startsWith('ERROR')), w.dump())
  } finally {
    await Promise.all(workers.map((w) => w.kill()))
  }
})

test('hooks, wake-ups and cancellations from a process with no worker reach the worker executing the run', { skip, timeout: 60_000 }, async (t) => {
  const side = freshSide('cross')
  const w = spawnWorker('H', side)
  try {
    await w.waitFor(/^READY/)

    await t.test('resumeHook(token, payload)', async () => {
      const token = `pg-engine-hook-${process.pid}`
      const run = await api.start(hooked, [token])
      const hook = await until(() => api.getHookByToken(token).catch(() => null), `hook ${token}`)
      assert.equal(hook.runId, run.runId)
      await api.resumeHook(token, { hello: 'from the client', n: 7 })
      assert.deepEqual(await bounded(run.returnValue, 'the hooked run'), { token, payload: { hello: 'from the client', n: 7 } })
      checkLog(await eventsOf(run.runId), run.runId, 'run_completed', 1)
      const types = (await eventsOf(run.runId)).map((e) => e.type)
      assert.equal(types.filter((x) => x === 'hook_received').length, 1)
    })

    await t.test('sleep() ended by wakeUp()', async () => {
      const run = await api.start(sleepy, ['s1'])
      await until(async () => (await eventsOf(run.runId)).some((e) => e.type === 'wait_created'), 'wait_created')
      assert.deepEqual(await run.wakeUp(), { stoppedCount: 1 })
      assert.equal(await bounded(run.returnValue, 'the woken run'), 'woke s1')
      const evs = await eventsOf(run.runId)
      checkLog(evs, run.runId, 'run_completed', 1)
      assert.equal(evs.filter((e) => e.type === 'wait_completed').length, 1)
    })

    await t.test('cancel() of a run waiting on a hook', async () => {
      const token = `pg-engine-cancel-${process.pid}`
      const run = await api.start(hooked, [token])
      await until(() => api.getHookByToken(token).catch(() => null), `hook ${token}`)
      await until(async () => (await w.running()) === 1, 'the worker to execute the run')
      await run.cancel()
      assert.equal(await run.status, 'cancelled')
      await assert.rejects(bounded(run.returnValue, 'returnValue'), (e) => e.name === 'WorkflowRunCancelledError')
      // the worker stops the run: its execution ends there and its lease is released
      await until(async () => (await w.running()) === 0, 'the worker to stop the cancelled run')
      await until(async () => (await leaseOf(run.runId)) === null, 'the lease of the cancelled run to be released')
      const evs = await eventsOf(run.runId)
      checkLog(evs, run.runId, 'run_cancelled')
      assert.ok(!evs.some((e) => e.type === 'hook_received'))
      assert.ok(!sideLines(side).some((l) => l.join(' ').startsWith(`after hook ${token}`)), 'nothing ran after the hook')
    })
    assert.ok(!w.out.some((l) => l.startsWith('ERROR')), w.dump())
  } finally {
    await w.kill()
  }
})

/**
 * A runs `steps(n, 2)` until inside step 2, is stopped (SIGSTOP) for longer than its
 * lease; B takes the run over and is inside step 2 in turn. Returns what the variants need.
 */
async function stoppedAndTakenOver(name, n, bEnv = {}) {
  const side = freshSide(name)
  const a = spawnWorker('A', side)
  await a.waitFor(/^READY/)
  const run = await api.start(steps, [n, 2])
  const inStep = new RegExp(`^IN ${escape(run.runId)} 2$`)
  await a.waitFor(inStep)
  const before = await leaseOf(run.runId)
  a.proc.kill('SIGSTOP')
  // B starts once A is stopped: it claims the run when A's lease has gone stale
  const b = spawnWorker('B', side, bEnv)
  await b.waitFor(inStep)
  const taken = await leaseOf(run.runId)
  assert.ok(taken && taken.owner !== before.owner, 'B holds the lease')
  assert.ok(Number(taken.token) > Number(before.token), 'the takeover bumped the fencing token')
  return { side, a, b, run, aOwner: before.owner, bOwner: taken.owner }
}

/** Lets A's step 2 finish and A run again; resolves once A executes nothing. */
async function resumeA(a, runId) {
  a.send(`finish ${runId}`)
  a.proc.kill('SIGCONT')
  await until(async () => (await a.running()) === 0, 'A to stop executing the run')
}

/**
 * A runs again (SIGCONT) with its attempt of step 2 still waiting; once A holds the run's
 * lease again — the run is free (B released it), so A's worker claims it anew, from the
 * log — that attempt returns. Whatever A's execution from before the takeover still
 * wants to write is then written or refused, deterministically.
 */
async function resumeAThenFinish(a, runId, aOwner) {
  const released = (await leaseHistory(runId)).length
  a.proc.kill('SIGCONT')
  await until(
    async () => (await leaseHistory(runId)).slice(released).some((h) => h.owner === aOwner),
    'A to hold the free lease',
  )
  a.send(`finish ${runId}`)
}

test('fencing: a worker stopped longer than its lease, resumed while the new owner is in the same step, writes nothing more', { skip, timeout: 60_000 }, async () => {
  let a
  let b
  try {
    let run, side
    ;({ a, b, run, side } = await stoppedAndTakenOver('fence-a', 7))
    const snapshot = await eventsOf(run.runId)
    await resumeA(a, run.runId)
    assert.deepEqual(await eventsOf(run.runId), snapshot, 'A wrote nothing after the takeover')
    b.send(`finish ${run.runId}`)
    assert.equal(await bounded(run.returnValue, 'the run'), 710)
    const evs = await eventsOf(run.runId)
    const ids = checkLog(evs, run.runId)
    assert.equal(evs.filter((e) => e.type === 'step_started' && e.correlationId === ids[1]).length, 2, 'step 2 started by A, then by B')
    assert.deepEqual(sideLines(side).map((l) => l.slice(1).join(' ')), ['1 A', '2 A', '2 B', '3 B', '4 B'])
    assert.equal((await a.running()), 0)
  } finally {
    await Promise.all([a?.kill(), b?.kill()])
  }
})

test('fencing: a worker stopped longer than its lease, resumed after the new owner completed the run and released its lease, neither writes nor takes the lease again', { skip, timeout: 60_000 }, async () => {
  let a
  let b
  try {
    let run, side, aOwner, bOwner
    ;({ a, b, run, side, aOwner, bOwner } = await stoppedAndTakenOver('fence-b', 8))
    b.send(`finish ${run.runId}`)
    assert.equal(await bounded(run.returnValue, 'the run'), 810)
    await until(async () => (await leaseOf(run.runId)) === null, 'B to release the lease')
    const snapshot = await eventsOf(run.runId)
    checkLog(snapshot, run.runId)
    // A runs again, its attempt of step 2 still waiting: its execution must learn that the
    // run is no longer its own (and write nothing, take nothing)
    a.proc.kill('SIGCONT')
    await until(async () => (await a.running()) === 0, 'A to stop executing the run')
    a.send(`finish ${run.runId}`)
    assert.equal(await a.running(), 0) // (answered after the finish line was handled)
    assert.deepEqual(
      (await eventsOf(run.runId)).map((e) => `${e.type} ${e.correlationId ?? ''}`),
      snapshot.map((e) => `${e.type} ${e.correlationId ?? ''}`),
      'A wrote no event after the takeover',
    )
    assert.deepEqual(sideLines(side).map((l) => l.slice(1).join(' ')), ['1 A', '2 A', '2 B', '3 B', '4 B'])
    // the lease: A's, then B's (taken over: token + 1), released by B; then nobody's
    const names = { [aOwner]: 'A', [bOwner]: 'B' }
    const history = leaseChanges(await leaseHistory(run.runId), names)
    assert.deepEqual(history.slice(0, 3), ['INSERT A 1', 'UPDATE B 2', 'RELEASE B 2'])
    assert.deepEqual(
      history.slice(3),
      [],
      `the lease of the finished run was taken again after B released it (left now: ${JSON.stringify(await leaseOf(run.runId))})`,
    )
    assert.equal(await leaseOf(run.runId), null, 'no lease left on the finished run')
  } finally {
    await Promise.all([a?.kill(), b?.kill()])
  }
})

test('fencing: a worker stopped longer than its lease, resumed after the new owner drained (stop(): step 2 written, lease released): its stale step outcome is not written, the run completes once', { skip, timeout: 60_000 }, async () => {
  let a
  let b
  try {
    let run, side, aOwner
    ;({ a, b, run, side, aOwner } = await stoppedAndTakenOver('fence-c', 9))
    // B stops as a server shutting down does: its attempt of step 2 finishes and is
    // written, the lease is released, the run stays running for another worker
    b.send('stop')
    b.send(`finish ${run.runId}`)
    await b.waitFor(/^STOPPED$/)
    await b.closed
    assert.equal(await leaseOf(run.runId), null)
    const snapshot = await eventsOf(run.runId)
    const step2 = snapshot.filter((e) => e.type === 'step_created')[1].correlationId
    assert.equal(snapshot.filter((e) => e.type === 'step_completed' && e.correlationId === step2).length, 1)
    assert.ok(!snapshot.some((e) => TERMINAL.has(e.type)))
    // A resumes, then its own attempt of step 2 (from before the takeover) returns. The run
    // is free: A's worker continues it — from the log: step 2 is not completed again.
    await resumeAThenFinish(a, run.runId, aOwner)
    assert.equal(await bounded(run.returnValue, 'the run'), 910)
    const evs = await eventsOf(run.runId)
    checkLog(evs, run.runId)
    for (let i = 0; i < snapshot.length; i++) assert.equal(evs[i].id, snapshot[i].id, 'the log before A resumed is kept as it was')
    const lines = sideLines(side).map((l) => l.slice(1).join(' '))
    assert.deepEqual(lines.slice(0, 3), ['1 A', '2 A', '2 B'])
    assert.deepEqual(
      lines.slice(3).map((l) => l.split(' ')[0]),
      ['3', '4'],
      `steps 3 and 4 ran once each: ${lines.join(', ')}`,
    )
  } finally {
    await Promise.all([a?.kill(), b?.kill()])
  }
})

test('fencing: a worker stopped longer than its lease, resumed after the new owner drained with the step to retry (stop() after a failed attempt): its stale attempt is not recorded', { skip, timeout: 60_000 }, async () => {
  let a
  let b
  try {
    let run, aOwner
    // B's attempt of step 2 fails (retryable): step_retrying, then B stops (drains)
    ;({ a, b, run, aOwner } = await stoppedAndTakenOver('fence-d', 6, { FAIL_HANG: '1' }))
    b.send('stop')
    b.send(`finish ${run.runId}`)
    await b.waitFor(/^STOPPED$/)
    await b.closed
    assert.equal(await leaseOf(run.runId), null)
    const snapshot = await eventsOf(run.runId)
    const step2 = snapshot.filter((e) => e.type === 'step_created')[1].correlationId
    assert.deepEqual(
      snapshot.filter((e) => e.correlationId === step2).map((e) => e.type),
      ['step_created', 'step_started', 'step_started', 'step_retrying'],
    )
    // A resumes, then its own attempt of step 2 (begun before the takeover) returns. The
    // run is free: A's worker continues it, from the log (step 2 is to be retried).
    await resumeAThenFinish(a, run.runId, aOwner)
    assert.equal(await bounded(run.returnValue, 'the run'), 610)
    const evs = await eventsOf(run.runId)
    for (let i = 0; i < snapshot.length; i++) assert.equal(evs[i].id, snapshot[i].id, 'the log before A resumed is kept')
    checkLog(evs, run.runId)
    assert.equal(
      evs.filter((e) => e.type === 'step_started' && e.correlationId === step2).length,
      3,
      'step 2 completed by a new attempt (A, B, then the retry)',
    )
  } finally {
    await Promise.all([a?.kill(), b?.kill()])
  }
})

test('start() with no worker alive leaves the run pending; a worker started later claims and completes it', { skip, timeout: 60_000 }, async () => {
  assert.equal(children.size, 0, 'no worker process alive')
  const side = freshSide('pending')
  const run = await api.start(steps, [5])
  assert.equal(await run.status, 'pending')
  assert.deepEqual(
    (await eventsOf(run.runId)).map((e) => e.type),
    ['run_created'],
  )
  assert.equal(await leaseOf(run.runId), null, 'nobody took the run')
  const spawnedAt = new Date()
  const w = spawnWorker('L', side)
  try {
    // the worker's first pass claims it
    const ready = await w.waitFor(/^READY/)
    assert.ok(ready.slice(6).split(',').includes(run.runId), ready)
    assert.equal(await bounded(run.returnValue, 'the run'), 510)
    const evs = await eventsOf(run.runId)
    checkLog(evs, run.runId)
    const started = evs.find((e) => e.type === 'run_started')
    assert.ok(started.createdAt >= spawnedAt, 'the run started only once the worker was there')
    assert.deepEqual(sideLines(side).map((l) => l.slice(1).join(' ')), ['1 L', '2 L', '3 L', '4 L'])
  } finally {
    await w.kill()
  }
})
