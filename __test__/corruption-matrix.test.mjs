// The corruption matrix: every kind of file the engine and the API read (a run, each
// event type, a step, a hook, its token claim, a wait, a lease) truncated, emptied,
// garbled, replaced by wrong-typed JSON and by a directory; and every directory (runs/,
// events/, steps/, hooks/, hooks/tokens/, waits/, leases) replaced by a file, emptied
// or unwritable. For each: resumeRuns() and the API calls give a typed error naming the
// file or recover; nothing hangs (every call has a bound); the other runs in the data
// directory are unaffected (one resumeRuns() call resumes them all beside the broken
// ones); the engine writes no verdict (run_failed / run_cancelled) for a storage fault;
// a mutation either happens completely or reports a failure and changes nothing; and
// once the file is put back, the run resumes and completes with the right value.
//
// The runs are made by a child process (__test__/engine/matrix-child.mjs) that exits
// without releasing anything, as a crash would. Chunk files are the streams suite's.
import { dataDir, official, world, ours } from './helpers/harness.mjs'
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import wf from '../workflow.js'
import {
  declareLate,
  declareThrows,
  expected,
  firstToken,
  secondToken,
  throwsToken,
} from './engine/matrix-workflows.mjs'
import { getEngine } from '../lib/engine/engine.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const BOUND_MS = 15_000

/** `p`, or a failure naming `what` once BOUND_MS passed (the hang guard). */
function within(what, p) {
  let timer
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hung: ${what} did not settle within ${BOUND_MS} ms`)), BOUND_MS)
  })
  return Promise.race([Promise.resolve(p), guard]).finally(() => clearTimeout(timer))
}

/** `{ ok, value }` or `{ ok: false, error }`; a hang fails the test. */
async function outcome(what, fn) {
  try {
    return { ok: true, value: await within(what, (async () => fn())()) }
  } catch (error) {
    if (error && typeof error.message === 'string' && error.message.startsWith('hung: ')) throw error
    return { ok: false, error }
  }
}

/** A typed error naming `file` (in its message and `path`). */
function assertNames(r, file, what) {
  assert.equal(r.ok, false, `${what}: resolved ${JSON.stringify(r.value)} although ${file} is broken`)
  const e = r.error
  assert.ok(e instanceof Error, `${what}: not an Error: ${e}`)
  // wakeUp() wraps the cause as the official does ("Failed to wake up run …")
  const code = e.code ?? e.cause?.code
  assert.ok(typeof code === 'string' && code.length > 0, `${what}: no code on ${e.name}: ${e.message}`)
  assert.ok(e.message.includes(file), `${what}: the message does not name ${file}: ${e.message}`)
  assert.ok(e.message.length < 2000, `${what}: message too long`)
}

const sha256 = (s) => createHash('sha256').update(s).digest('hex')

// ------------------------------------------------------------------ corruptions

/** How a file is broken. The file is replaced (never written in place: leases share an inode). */
const BREAK = {
  truncated: (p, bytes) => replaceWith(p, bytes.subarray(0, Math.floor(bytes.length / 2))),
  emptied: (p) => replaceWith(p, Buffer.alloc(0)),
  garbled: (p, bytes) => {
    const b = Buffer.from(bytes)
    b.fill(0xff, 0, Math.min(6, b.length))
    const mid = Math.floor(b.length / 2)
    b.fill(0x00, mid, Math.min(mid + 4, b.length))
    replaceWith(p, b)
  },
  'wrong-typed JSON': (p) => replaceWith(p, Buffer.from('[1,2,3]')),
  'a directory': (p) => {
    fs.rmSync(p, { recursive: true, force: true })
    fs.mkdirSync(p)
    fs.writeFileSync(path.join(p, 'inside'), 'x')
  },
}

function replaceWith(p, bytes) {
  fs.rmSync(p, { recursive: true, force: true })
  fs.writeFileSync(p, bytes)
}

function restore(p, bytes) {
  fs.rmSync(p, { recursive: true, force: true })
  fs.writeFileSync(p, bytes)
}

// ------------------------------------------------------------------ the runs

async function eventsOf(runId) {
  const names = fs.readdirSync(path.join(dataDir, 'events')).filter((n) => n.startsWith(`${runId}-`) && n.endsWith('.json'))
  names.sort()
  const out = []
  for (const n of names) {
    const p = path.join(dataDir, 'events', n)
    try {
      out.push({ file: p, ...JSON.parse(fs.readFileSync(p, 'utf8')) })
    } catch {
      out.push({ file: p, eventType: '(unreadable)' })
    }
  }
  return out
}

const VERDICTS = ['run_failed', 'run_cancelled']
async function assertNoVerdict(runId, what, verdicts = VERDICTS) {
  const found = (await eventsOf(runId)).filter((e) => verdicts.includes(e.eventType))
  assert.deepEqual(
    found.map((e) => e.eventType),
    [],
    `${what}: a verdict was written for a storage fault`,
  )
}

/** The status in the run file as the official World reads it (undefined if unreadable). */
async function storedStatus(runId) {
  try {
    return (await world.runs.get(runId)).status
  } catch {
    return undefined
  }
}

// The event types a parked `matrix` run has in its log (the first of each is broken).
const EVENT_TYPES = [
  'run_created',
  'run_started',
  'step_created',
  'step_started',
  'step_retrying',
  'step_completed',
  'step_failed',
  'wait_created',
  'wait_completed',
  'hook_created',
  'hook_received',
  'hook_disposed',
]

/**
 * The files of one kind of a parked run: `file(runId)` → its path. `resumes`: whether
 * the run resumes with this file broken (the replay does not read it).
 */
const FILE_KINDS = {
  run: { file: (r) => path.join(dataDir, 'runs', `${r}.json`), resumes: false },
  ...Object.fromEntries(
    EVENT_TYPES.map((t) => [
      `event ${t}`,
      { file: async (r) => (await eventsOf(r)).find((e) => e.eventType === t).file, resumes: false },
    ]),
  ),
  'step (completed)': {
    file: async (r) => {
      const id = (await eventsOf(r)).find((e) => e.eventType === 'step_created').correlationId
      return path.join(dataDir, 'steps', `${r}-${id}.json`)
    },
    resumes: true,
  },
  // (crash recovery checks the live hook and the pending wait before the replay)
  'hook (live)': {
    file: async (r) => {
      const id = (await eventsOf(r)).filter((e) => e.eventType === 'hook_created')[1].correlationId
      return path.join(dataDir, 'hooks', `${id}.json`)
    },
    resumes: false,
  },
  'hook token claim': { file: (r, n) => path.join(dataDir, 'hooks', 'tokens', `${sha256(secondToken(n))}.json`), resumes: true },
  'wait (pending)': {
    file: async (r) => {
      const id = (await eventsOf(r)).filter((e) => e.eventType === 'wait_created')[1].correlationId
      return path.join(dataDir, 'waits', `${r}-${id}.json`)
    },
    resumes: false,
  },
  lease: { file: (r) => path.join(dataDir, '.workflow-native', 'leases', `${r}.json`), resumes: true },
}

const CASES = []
for (const [kind, spec] of Object.entries(FILE_KINDS)) {
  for (const how of Object.keys(BREAK)) CASES.push({ kind, how, spec })
}
const CONTROLS = 3

/** Directory cases, each with its own run of `matrix-late-<i>`. */
const DIR_CASES = [
  { name: 'runs/ replaced by a file', dir: 'runs', how: 'file' },
  { name: 'events/ replaced by a file', dir: 'events', how: 'file' },
  { name: 'steps/ replaced by a file', dir: 'steps', how: 'file' },
  { name: 'hooks/ replaced by a file', dir: 'hooks', how: 'file' },
  { name: 'hooks/tokens/ replaced by a file', dir: path.join('hooks', 'tokens'), how: 'file' },
  { name: 'waits/ replaced by a file', dir: 'waits', how: 'file' },
  { name: 'the leases directory replaced by a file', dir: path.join('.workflow-native', 'leases'), how: 'file' },
  { name: 'events/ emptied', dir: 'events', how: 'emptied' },
  { name: 'events/ unwritable', dir: 'events', how: 'unwritable' },
]

let made // what the child made: { matrix, late, done, throws } as [[n, runId]]

before(async () => {
  const r = spawnSync(
    process.execPath,
    [path.join(here, 'engine', 'matrix-child.mjs'), String(CASES.length + CONTROLS), String(2 * DIR_CASES.length), '5', '1'],
    { env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dataDir }, encoding: 'utf8', timeout: 120_000 },
  )
  assert.equal(r.status, 0, `the child failed: ${r.stderr}`)
  made = JSON.parse(r.stdout.trim().split('\n').at(-1))
  for (const list of Object.values(made)) list.sort((a, b) => a[0] - b[0])
})

// A failed case may leave runs executing here (a pending sleep keeps a process alive):
// stop them so the file ends either way.
after(() => {
  for (const exec of [...getEngine().executions.values()]) exec.stop('the test file ended')
})

// ------------------------------------------------------------------ one file at a time

test('one broken file per run: resumeRuns() resumes every other run, reports each broken one, writes no verdict; the API answers or names the file; once fixed, every run completes', { timeout: 300_000 }, async () => {
  const cases = CASES.map((c, i) => ({ ...c, n: made.matrix[i][0], runId: made.matrix[i][1] }))
  const controls = made.matrix.slice(CASES.length).map(([n, runId]) => ({ n, runId }))
  assert.equal(controls.length, CONTROLS)

  // 1. break one file of each case's run
  for (const c of cases) {
    c.path = await c.spec.file(c.runId, c.n)
    c.original = fs.readFileSync(c.path)
    BREAK[c.how](c.path, c.original)
    c.broken = fs.statSync(c.path).isDirectory() ? 'dir' : fs.readFileSync(c.path)
  }
  // a completed run's run_completed event broken in each way: nothing to resume, its
  // result still reads
  const done = made.done.map(([n, runId], i) => ({ n, runId, how: Object.keys(BREAK)[i] }))
  for (const d of done) {
    d.path = (await eventsOf(d.runId)).find((e) => e.eventType === 'run_completed').file
    d.original = fs.readFileSync(d.path)
    BREAK[d.how](d.path, d.original)
    d.count = (await eventsOf(d.runId)).length
  }

  // 2. one resumeRuns() for the whole data directory
  const errors = []
  const resumed = await within('resumeRuns()', wf.resumeRuns({ onError: (e) => errors.push(e) }))
  assert.ok(Array.isArray(resumed))
  // every failure reached onError; onError also saw the replaced leases (recovered)
  assert.deepEqual(
    new Set(resumed.failures.map((f) => f.error)),
    new Set(errors.filter((e) => !e.recovered)),
    'failures and onError agree',
  )
  for (const f of resumed.failures) assert.equal(f.error.runId, f.runId)
  for (const c of controls) assert.ok(resumed.includes(c.runId), `control run ${c.n} resumed`)
  for (const c of cases) {
    const what = `${c.kind} ${c.how}`
    const mine = errors.filter((e) => e.runId === c.runId)
    if (c.spec.resumes) {
      assert.ok(resumed.includes(c.runId), `${what}: the run resumes (its replay does not read this file)`)
      if (c.kind === 'lease') {
        // not a live owner: taken over, and named
        assert.equal(mine.length, 1, `${what}: the replaced lease is reported`)
        assert.equal(mine[0].recovered, true)
        assert.equal(mine[0].code, 'CORRUPT_FILE')
        assert.equal(mine[0].path, c.path)
      } else {
        assert.deepEqual(mine, [], `${what}: nothing to report`)
      }
    } else {
      assert.ok(!resumed.includes(c.runId), `${what}: not resumed`)
      assert.equal(mine.length, 1, `${what}: reported once (got ${mine.map((e) => e.message).join(' | ')})`)
      assertNames({ ok: false, error: mine[0] }, c.path, `${what}: resumeRuns()`)
      assert.equal(mine[0].path, c.path, `${what}: err.path`)
      assert.notEqual(mine[0].recovered, true)
    }
  }
  const caseIds = new Set([...cases, ...controls].map((c) => c.runId))
  assert.deepEqual(
    errors.filter((e) => !caseIds.has(e.runId)).map((e) => e.message),
    [],
    'no error about any other run',
  )
  for (const d of done) assert.ok(!resumed.includes(d.runId))

  // 3. the API on each broken run (reads, then mutations); no verdict; the broken file untouched
  for (const c of cases) {
    const what = `${c.kind} ${c.how}`
    const run = ours.getRun(c.runId)
    const runBroken = c.kind === 'run'
    for (const getter of ['status', 'workflowName', 'createdAt', 'startedAt', 'exists']) {
      const r = await outcome(`${what}: ${getter}`, () => ours.getRun(c.runId)[getter])
      if (runBroken) assertNames(r, c.path, `${what}: ${getter}`)
      else assert.ok(r.ok, `${what}: ${getter}: ${r.error}`)
    }
    if (!c.spec.resumes && !runBroken) assert.equal(await run.status, 'running', `${what}: still running`)
    // the official reader agrees wherever it can read the run
    const off = await outcome(`${what}: official status`, () => official.getRun(c.runId).status)
    if (off.ok) assert.equal(off.value, await run.status)
    else assert.ok(runBroken, `${what}: the official cannot read the run: ${off.error}`)
    if (!off.ok && off.error.code) {
      // an I/O error: the same class and code as the official's (bad contents are a
      // CORRUPT_FILE here, a bare SyntaxError / ZodError there)
      const o = await outcome(`${what}: status`, () => ours.getRun(c.runId).status)
      assert.deepEqual([o.error?.name, o.error?.code], [off.error.name, off.error.code], what)
    }

    const hook = await outcome(`${what}: getHookByToken`, () => ours.getHookByToken(secondToken(c.n)))
    if (runBroken) assertNames(hook, c.path, `${what}: getHookByToken`)
    else if (c.kind === 'hook (live)') assertNames(hook, c.path, `${what}: getHookByToken`)
    else assert.ok(hook.ok, `${what}: getHookByToken: ${hook.error}`)

    const woke = await outcome(`${what}: wakeUp`, () => run.wakeUp())
    if (runBroken) assertNames(woke, c.path, `${what}: wakeUp`)
    else if (c.kind === 'wait (pending)') {
      assert.equal(woke.ok, false, `${what}: wakeUp resolved`)
      const inner = woke.error.errors ? woke.error.errors[0] : woke.error
      assertNames({ ok: false, error: inner }, c.path, `${what}: wakeUp`)
    } else if (c.kind.startsWith('event ') && c.how === 'a directory') {
      // the log cannot be read: named (bad contents are skipped, as world-local skips them)
      assertNames(woke, c.path, `${what}: wakeUp`)
    } else {
      assert.ok(woke.ok, `${what}: wakeUp: ${woke.error}`)
    }

    const resumedHook = await outcome(`${what}: resumeHook`, () => ours.resumeHook(secondToken(c.n), { p: c.n }))
    if (runBroken || c.kind === 'hook (live)') assertNames(resumedHook, c.path, `${what}: resumeHook`)
    else assert.ok(resumedHook.ok, `${what}: resumeHook: ${resumedHook.error}`)
    c.hookResumed = resumedHook.ok

    if (runBroken) {
      const cancelled = await outcome(`${what}: cancel`, () => run.cancel())
      assertNames(cancelled, c.path, `${what}: cancel`)
    }
    // (a run that resumed may complete here: its own code's doing, not a storage fault's)
    await assertNoVerdict(c.runId, what, c.spec.resumes ? VERDICTS : [...VERDICTS, 'run_completed'])
    if (!runBroken && !c.spec.resumes) {
      assert.equal(await storedStatus(c.runId), 'running', `${what}: the run file still says running`)
    }
    // A run that resumed completes once woken and given its payload (its replay did
    // not need the broken file), and its end removes its hooks, claims and waits, broken
    // or not; otherwise the broken file is as it was.
    c.completed = c.spec.resumes && woke.ok && resumedHook.ok
    if (c.completed) {
      assert.deepEqual(await within(`${what}: returnValue`, run.returnValue), expected(c.n), what)
    } else {
      assert.notEqual(await storedStatus(c.runId), 'completed', what)
    }
    if (c.kind !== 'lease' && !c.completed) {
      const now = fs.statSync(c.path).isDirectory() ? 'dir' : fs.readFileSync(c.path)
      assert.deepEqual(now, c.broken, `${what}: the broken file was modified`)
    }
  }
  for (const d of done) {
    const what = `run_completed ${d.how}`
    assert.deepEqual(await within(what, ours.getRun(d.runId).returnValue), { done: d.n }, what)
    assert.equal(await ours.getRun(d.runId).status, 'completed')
    assert.equal((await eventsOf(d.runId)).length, d.count, `${what}: nothing written`)
  }

  // 4. put every file back: the broken runs resume, and every run completes
  for (const d of done) restore(d.path, d.original)
  for (const c of cases) {
    if (c.kind === 'lease') continue
    // (the file of a run that completed is not put back: it would be a stale entity)
    if (c.completed) fs.rmSync(c.path, { recursive: true, force: true })
    else restore(c.path, c.original)
  }
  const again = await within('resumeRuns() after the repair', wf.resumeRuns())
  assert.deepEqual(again.failures, [], `after the repair: ${again.failures.map((f) => f.error.message).join(' | ')}`)
  for (const c of [...cases, ...controls]) {
    const what = c.kind ? `${c.kind} ${c.how}` : `control ${c.n}`
    const finished = (await ours.getRun(c.runId).status) === 'completed'
    assert.ok(finished || again.includes(c.runId), `${what}: resumed after the repair`)
    await within(`${what}: wakeUp after the repair`, ours.getRun(c.runId).wakeUp())
    if (!c.hookResumed) await within(`${what}: resumeHook after the repair`, ours.resumeHook(secondToken(c.n), { p: c.n }))
  }
  for (const c of [...cases, ...controls]) {
    const what = c.kind ? `${c.kind} ${c.how}` : `control ${c.n}`
    assert.deepEqual(await within(`${what}: returnValue`, ours.getRun(c.runId).returnValue), expected(c.n), what)
    const types = (await eventsOf(c.runId)).map((e) => e.eventType)
    assert.equal(types.filter((t) => t === 'run_completed').length, 1, what)
    assert.ok(!types.includes('run_failed'), what)
  }
})

// ------------------------------------------------------------------ directories

/** Breaks a directory; returns its repair. */
function breakDir(rel, how) {
  const dir = path.join(dataDir, rel)
  const aside = `${dir}.aside`
  if (how === 'file') {
    fs.renameSync(dir, aside)
    fs.writeFileSync(dir, 'not a directory')
    return () => {
      fs.rmSync(dir, { force: true })
      fs.renameSync(aside, dir)
    }
  }
  if (how === 'emptied') {
    fs.renameSync(dir, aside)
    fs.mkdirSync(dir)
    return () => {
      for (const n of fs.readdirSync(dir)) fs.renameSync(path.join(dir, n), path.join(aside, n))
      fs.rmdirSync(dir)
      fs.renameSync(aside, dir)
    }
  }
  // unwritable: immutable (root ignores permissions), else read-only
  try {
    execFileSync('chattr', ['+i', dir], { stdio: 'ignore' })
    return () => execFileSync('chattr', ['-i', dir], { stdio: 'ignore' })
  } catch {
    fs.chmodSync(dir, 0o555)
    return () => fs.chmodSync(dir, 0o755)
  }
}

/** Whether files can be created in `dir` now (false: the directory is really unwritable). */
function writable(dir) {
  const probe = path.join(dir, `.probe-${process.pid}`)
  try {
    fs.writeFileSync(probe, '')
    fs.rmSync(probe)
    return true
  } catch {
    return false
  }
}

/**
 * Each directory case has two runs: `resumer` (of `matrix-late-<2i>`, declared in the
 * case: what resumeRuns() does) and `target` (of `matrix-late-<2i+1>`, not executing
 * here: what the API calls do to a run nobody else touches).
 */
for (const [i, dc] of DIR_CASES.entries()) {
  test(`${dc.name}: typed errors naming it, no verdict, no half-done mutation; resumable once fixed`, { timeout: 120_000 }, async (t) => {
    const [na, resumer] = made.late[2 * i]
    const [n, target] = made.late[2 * i + 1]
    const dir = path.join(dataDir, dc.dir)
    const stored = await world.runs.get(target)
    const repair = breakDir(dc.dir, dc.how)
    let repaired = false
    const fix = () => {
      if (!repaired) repair()
      repaired = true
    }
    try {
      if (dc.how === 'unwritable' && writable(dir)) {
        fix()
        t.skip('cannot make a directory unwritable here (no chattr, running as root)')
        return
      }
      const named = (r, what) => assertNames(r, dir, `${dc.name}: ${what}`)
      const wakeCause = (r) => (r.ok ? r : { ok: false, error: r.error.errors ? r.error.errors[0] : r.error })

      // resumeRuns(): the resumer is reported and skipped, or resumes when nothing it
      // needs is broken
      declareLate(2 * i)
      const errors = []
      const resumed = await outcome(`${dc.name}: resumeRuns()`, () => wf.resumeRuns({ onError: (e) => errors.push(e) }))
      if (dc.dir === 'runs') {
        named(resumed, 'resumeRuns()')
      } else {
        assert.ok(resumed.ok, `${dc.name}: resumeRuns() rejected: ${resumed.error}`)
        const mine = errors.filter((e) => e.runId === resumer)
        // (crash recovery reads the live hook and the pending wait: hooks/ and waits/ matter)
        const resumes = dc.how === 'unwritable' || ['steps', path.join('hooks', 'tokens')].includes(dc.dir)
        if (resumes) {
          assert.ok(resumed.value.includes(resumer), `${dc.name}: the run resumes (its replay needs nothing from here)`)
          assert.deepEqual(mine, [])
        } else {
          assert.ok(!resumed.value.includes(resumer), `${dc.name}: not resumed`)
          assert.equal(mine.length, 1, `${dc.name}: reported once`)
          named({ ok: false, error: mine[0] }, 'resumeRuns() error')
          assert.ok(mine[0].path.startsWith(dir), mine[0].path)
        }
      }

      // the API on the target
      const run = ours.getRun(target)
      const getters = {}
      for (const g of ['status', 'workflowName', 'createdAt']) getters[g] = await outcome(g, () => ours.getRun(target)[g])
      const woke = await outcome('wakeUp', () => run.wakeUp())
      const hook = await outcome('getHookByToken', () => ours.getHookByToken(secondToken(n)))
      const resumedHook = await outcome('resumeHook', () => ours.resumeHook(secondToken(n), { p: n }))
      const cancelled = await outcome('cancel', () => run.cancel())
      if (dc.dir === 'runs') {
        for (const [g, r] of Object.entries(getters)) named(r, g)
        const off = await outcome('official status', () => official.getRun(target).status)
        assert.deepEqual([getters.status.error.name, getters.status.error.code], [off.error?.name, off.error?.code])
        named(woke, 'wakeUp')
        named(resumedHook, 'resumeHook')
        named(cancelled, 'cancel')
      } else {
        for (const [g, r] of Object.entries(getters)) assert.ok(r.ok, `${dc.name}: ${g}: ${r.error}`)
        assert.equal(getters.status.value, 'running')
        if (dc.dir === 'events' && dc.how === 'file') {
          named(woke, 'wakeUp')
          assert.ok(hook.ok, `getHookByToken: ${hook.error}`)
          named(resumedHook, 'resumeHook')
          named(cancelled, 'cancel')
        } else if (dc.how === 'unwritable') {
          // nothing could be written: every mutation says so, and none happened
          named(wakeCause(woke), 'wakeUp')
          assert.ok(hook.ok, `getHookByToken: ${hook.error}`)
          named(resumedHook, 'resumeHook')
          named(cancelled, 'cancel')
        } else if (dc.dir === 'hooks') {
          assert.ok(woke.ok, `wakeUp: ${woke.error}`)
          named(hook, 'getHookByToken')
          named(resumedHook, 'resumeHook')
          // the run's end is committed; the hook clean-up that failed is not its failure
          assert.ok(cancelled.ok, `cancel reported the failed clean-up: ${cancelled.error}`)
        } else if (dc.dir === 'waits') {
          named(wakeCause(woke), 'wakeUp')
          assert.ok(hook.ok && resumedHook.ok)
          assert.ok(cancelled.ok, `cancel reported the failed clean-up: ${cancelled.error}`)
        } else {
          // steps/, hooks/tokens/, the leases directory, events/ emptied: the calls need
          // nothing from there, or recover (a hook lookup searches past a missing claim)
          assert.ok(woke.ok, `wakeUp: ${woke.error}`)
          assert.ok(hook.ok, `getHookByToken: ${hook.error}`)
          assert.ok(resumedHook.ok, `resumeHook: ${resumedHook.error}`)
          assert.ok(cancelled.ok, `cancel: ${cancelled.error}`)
        }
      }
      fix()

      const events = (await eventsOf(target)).map((e) => e.eventType)
      if (cancelled.ok) {
        // a cancel that reports success happened completely
        assert.equal(await storedStatus(target), 'cancelled')
        assert.equal(events.filter((e) => e === 'run_cancelled').length, 1)
        assert.ok(!events.includes('run_failed'))
        // what its clean-up could not remove is gone for every reader, and removed
        const h = await outcome('getHookByToken after the cancel', () => ours.getHookByToken(secondToken(n)))
        assert.equal(h.error?.name, 'HookNotFoundError', h.error?.message)
        const off = await outcome('official getHookByToken', () => official.getHookByToken(secondToken(n)))
        assert.equal(off.error?.name, 'HookNotFoundError', off.error?.message)
        for (const f of fs.readdirSync(path.join(dataDir, 'hooks')).filter((x) => x.endsWith('.json'))) {
          const hk = JSON.parse(fs.readFileSync(path.join(dataDir, 'hooks', f), 'utf8'))
          assert.notEqual(hk.runId, target, `hook ${f} of the cancelled run is still there`)
        }
        const r = await outcome('resumeHook after the cancel', () => ours.resumeHook(secondToken(n), { p: n }))
        assert.equal(r.error?.name, 'HookNotFoundError')
        const count = (await eventsOf(target)).length
        await outcome('wakeUp after the cancel', () => run.wakeUp())
        assert.deepEqual(
          (await eventsOf(target)).slice(count).map((e) => e.eventType),
          [],
          'wakeUp wrote to the cancelled run',
        )
      } else {
        // a mutation that failed changed nothing: no verdict, the run as it was
        assert.equal(await storedStatus(target), 'running')
        assert.ok(!events.includes('run_cancelled'))
        await assertNoVerdict(target, dc.name, [...VERDICTS, 'run_completed'])
        const after = await world.runs.get(target)
        assert.deepEqual(after, stored)
        // and it resumes and completes
        declareLate(2 * i + 1)
      }

      // once fixed, everything resumes and completes
      const again = await within('resumeRuns() after the repair', wf.resumeRuns())
      assert.deepEqual(again.failures, [], again.failures.map((f) => f.error.message).join(' | '))
      const finish = [[na, resumer]]
      if (!cancelled.ok) finish.push([n, target])
      for (const [k, id] of finish) {
        assert.ok(again.includes(id), `${id} resumed after the repair`)
        await within('wakeUp after the repair', ours.getRun(id).wakeUp())
        const hooked = await outcome('resumeHook after the repair', () => ours.resumeHook(secondToken(k), { p: k }))
        assert.ok(hooked.ok || (id === target && resumedHook.ok), `resumeHook after the repair: ${hooked.error}`)
        assert.deepEqual(await within('returnValue', ours.getRun(id).returnValue), expected(k))
      }
    } finally {
      fix()
    }
  })
}

test('user code failing while events/ is unwritable: the run is not failed (the verdict waits for the storage), and fails once it is fixed', { timeout: 120_000 }, async (t) => {
  const [n, runId] = made.throws[0]
  // the payload is in the log before the storage breaks
  await ours.resumeHook(throwsToken(n), 'boom')
  const dir = path.join(dataDir, 'events')
  const repair = breakDir('events', 'unwritable')
  try {
    if (writable(dir)) {
      repair()
      t.skip('cannot make a directory unwritable here')
      return
    }
    declareThrows()
    const resumed = await within('resumeRuns()', wf.resumeRuns())
    assert.ok(resumed.includes(runId))
    // stopped by the storage fault: its returnValue in this process rejects with it (no verdict)
    const stopped = await within('the run stops', Promise.resolve(getEngine().completion(runId)).then(() => null, (e) => e))
    assert.ok(stopped && ['EPERM', 'EACCES'].includes(stopped.code), `the storage fault, not ${stopped}`)
    assert.ok(String(stopped.message).includes(dir), stopped.message)
    assert.equal(await storedStatus(runId), 'running', 'the run file says running')
    assert.equal(await ours.getRun(runId).status, 'running')
  } finally {
    repair()
  }
  await assertNoVerdict(runId, 'events/ unwritable')
  const again = await within('resumeRuns() after the repair', wf.resumeRuns())
  assert.ok(again.includes(runId))
  const r = await outcome('returnValue', () => ours.getRun(runId).returnValue)
  assert.equal(r.ok, false)
  assert.equal(await ours.getRun(runId).status, 'failed')
  const failed = (await eventsOf(runId)).filter((e) => e.eventType === 'run_failed')
  assert.equal(failed.length, 1)
  assert.match(failed[0].eventData.error.message, /user code failed on "boom"/)
})
