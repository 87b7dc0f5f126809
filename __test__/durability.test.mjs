// Durability (issue 12): nothing is acknowledged before its sync returned, and a failed
// sync fails loudly. Syncs are made to fail with the test hook
// WORKFLOW_NATIVE_TEST_FAIL_SYNC=<text>[@<n>] (log and directory syncs whose path holds
// <text> fail with EIO, from the n-th on). Each commit syncs the log once (log mode) or,
// on this project's disk (ext4), the directory changed last — for every write of the
// engine that is `events/` (files mode) — so @n is the n-th commit: 1 = start()'s run
// creation (run_created with the run's lease and run_started: the engine of this process
// executes it), 2 = the first step's completion (its attempt — step_created +
// step_started — is answered before its sync and made durable by this same commit),
// 3 = the second step's completion. A machine crash is simulated with the test hook
// WORKFLOW_NATIVE_TEST_BOOT_ID (another boot id: the logs left are replayed).
import { dataDir } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'engine', 'durable-child.mjs')
const FAULT = /A storage fault stopped run/

/**
 * Runs the child on its own data directory; resolves with its stdout and stderr lines once
 * it exits — or once its stderr reports the storage fault that stops the run (then it is
 * killed: the run is parked in it, nothing more will happen).
 */
function runChild(dir, args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, ...args], {
      // no idle sync: the n-th sync is the n-th commit whatever the steps' timing
      env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dir, WORKFLOW_NATIVE_TEST_NO_IDLE_SYNC: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = []
    const err = []
    // a safety net, not a synchronisation: a child that never ends fails its test with
    // what it printed instead of hanging the suite
    const stuck = setTimeout(() => {
      err.push('(killed by the test: still running after 120 s)')
      p.kill('SIGKILL')
    }, 120_000)
    readline.createInterface({ input: p.stdout }).on('line', (l) => out.push(l))
    readline.createInterface({ input: p.stderr }).on('line', (l) => {
      err.push(l)
      if (FAULT.test(l)) p.kill('SIGKILL')
    })
    p.on('error', reject)
    p.on('close', (code, signal) => {
      clearTimeout(stuck)
      resolve({ out, err, code, signal })
    })
  })
}

function fresh(name) {
  const dir = path.join(dataDir, name)
  fs.mkdirSync(dir, { recursive: true })
  return { dir, side: path.join(dataDir, `${name}.side`) }
}
const sideLines = (side) => (fs.existsSync(side) ? fs.readFileSync(side, 'utf8').trim().split('\n').filter(Boolean) : [])
const runIdOf = (r) => r.out.find((l) => l.startsWith('STARTED '))?.slice(8)

async function statusOf(dir, runId) {
  const runFile = JSON.parse(fs.readFileSync(path.join(dir, 'runs', `${runId}.json`), 'utf8'))
  return runFile.status
}

// Both durable modes: the log (the default: one fdatasync of
// <dir>/.workflow-native/log/<file>.wal per commit) and the in-place mode
// (WORKFLOW_NATIVE_SYNC=files: on this disk the commit syncs events/ last).
const MODES = [
  {
    name: 'log',
    env: {},
    fail: '.workflow-native/log',
    isFaultPath: (dir, p) => typeof p === 'string' && p.startsWith(path.join(dir, '.workflow-native', 'log') + path.sep),
  },
  {
    name: 'files',
    env: { WORKFLOW_NATIVE_SYNC: 'files' },
    fail: 'events',
    isFaultPath: (dir, p) => p === path.join(dir, 'events'),
  },
]

for (const mode of MODES) {
  test(`[${mode.name}] start() rejects when the run it created cannot be synced: EIO naming the file`, async () => {
    const { dir, side } = fresh(`create-fails-${mode.name}`)
    const r = await runChild(dir, ['start'], { ...mode.env, SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: mode.fail })
    const line = r.out.find((l) => l.startsWith('START FAILED '))
    assert.ok(line, [...r.out, ...r.err].join('\n'))
    const e = JSON.parse(line.slice('START FAILED '.length))
    assert.equal(e.code, 'EIO')
    assert.ok(mode.isFaultPath(dir, e.path), e.path)
    assert.ok(e.message.includes(e.path), e.message)
    assert.equal(runIdOf(r), undefined)
    assert.deepEqual(sideLines(side), [])
    // the lease the creation took went back with it: nobody executes that run here
    const leases = path.join(dir, '.workflow-native', 'leases')
    assert.deepEqual(fs.existsSync(leases) ? fs.readdirSync(leases) : [], [])
  })

  test(`[${mode.name}] a step's completion that cannot be synced: the workflow never sees the result; a resume finishes the run`, async () => {
    const { dir, side } = fresh(`completion-fails-${mode.name}`)
    const a = await runChild(dir, ['start'], { ...mode.env, SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: `${mode.fail}@2` })
    const runId = runIdOf(a)
    assert.ok(runId, [...a.out, ...a.err].join('\n'))
    assert.ok(a.err.some((l) => FAULT.test(l)), a.err.join('\n'))
    assert.deepEqual(sideLines(side), ['ran 1'])
    assert.ok(!a.out.some((l) => l.startsWith('AFTER')), 'the workflow acted on an outcome that was not durable')
    assert.ok(!a.out.some((l) => l.startsWith('RESULT')))
    assert.equal(await statusOf(dir, runId), 'running')

    const b = await runChild(dir, ['resume', runId], { ...mode.env, SIDE_LOG: side })
    assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
    assert.ok(b.out.includes('RESULT 3'), b.out.join('\n'))
    // the completion was written (only its sync failed), so the step is not run again
    assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
    assert.equal(await statusOf(dir, runId), 'completed')
  })

  test(`[${mode.name}] the second step's completion that cannot be synced: the run stops after the first, the resume runs only the second`, async () => {
    const { dir, side } = fresh(`second-fails-${mode.name}`)
    const a = await runChild(dir, ['start'], { ...mode.env, SIDE_LOG: side, WORKFLOW_NATIVE_TEST_FAIL_SYNC: `${mode.fail}@3` })
    const runId = runIdOf(a)
    assert.ok(runId, [...a.out, ...a.err].join('\n'))
    assert.ok(a.err.some((l) => FAULT.test(l)), a.err.join('\n'))
    assert.ok(a.out.includes('AFTER 2'), a.out.join('\n'))
    assert.ok(!a.out.some((l) => l.startsWith('RESULT')), 'a result was reported although it was not durable')
    assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
    assert.equal(await statusOf(dir, runId), 'running')

    const b = await runChild(dir, ['resume', runId], { ...mode.env, SIDE_LOG: side })
    assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
    assert.ok(b.out.includes('RESULT 3'), b.out.join('\n'))
    assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
  })
}

/** Every file under the world's directories (not our own .workflow-native), with its bytes. */
function worldFiles(dir) {
  const out = new Map()
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      const rel = path.relative(dir, p)
      if (rel.startsWith('.workflow-native')) continue
      if (e.isDirectory()) walk(p)
      else out.set(rel, fs.readFileSync(p))
    }
  }
  walk(dir)
  return out
}

test('[log] a machine crash after the result was acknowledged: every world file lost, emptied or torn; the next boot recovers the run from the log', async () => {
  const { dir, side } = fresh('power-loss')
  const a = await runChild(dir, ['start'], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_BOOT_ID: 'boot-before' })
  assert.equal(a.code, 0, [...a.out, ...a.err].join('\n'))
  assert.ok(a.out.includes('RESULT 3'), a.out.join('\n'))
  const runId = runIdOf(a)
  const acked = worldFiles(dir)
  const events = [...acked.keys()].filter((k) => k.startsWith('events' + path.sep))
  assert.ok(events.length >= 8, events.join('\n'))
  // the page cache is gone: no file written since the log began reached the disk intact
  let i = 0
  for (const rel of acked.keys()) {
    const p = path.join(dir, rel)
    if (i % 3 === 0) fs.rmSync(p)
    else if (i % 3 === 1) fs.writeFileSync(p, '')
    else fs.writeFileSync(p, '\0\0{"torn')
    i++
  }
  const b = await runChild(dir, ['inspect', runId], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_BOOT_ID: 'boot-after' })
  assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
  assert.ok(b.err.some((l) => /recovered .* after a machine restart/.test(l)), b.err.join('\n'))
  assert.ok(b.out.includes('STATUS completed'), b.out.join('\n'))
  assert.ok(b.out.includes('RESULT 3'), b.out.join('\n'))
  // the log, the run, the steps: byte for byte as acknowledged (the step locks, removed
  // by the run's completion, may come back: their removal is a clean-up)
  const after = worldFiles(dir)
  for (const [rel, bytes] of acked) {
    if (rel.startsWith('.locks')) continue
    assert.ok(after.has(rel), `${rel} was not recovered`)
    assert.ok(after.get(rel).equals(bytes), `${rel} differs after recovery`)
  }
  for (const rel of after.keys()) assert.ok(acked.has(rel) || rel.startsWith('.locks'), `${rel} appeared`)
  // the official world-local reads the recovered log
  const { createLocalWorld } = await import('@workflow/world-local')
  const official = createLocalWorld({ dataDir: dir })
  const run = await official.runs.get(runId)
  assert.equal(run.status, 'completed')
  const listed = await official.events.list({ runId, pagination: { limit: 100 } })
  assert.equal(listed.data.length, events.length)
  assert.deepEqual(sideLines(side), ['ran 1', 'ran 2'])
})

/** Makes every world file written since the log began lost, emptied or torn (a power loss). */
function losePageCache(dir) {
  let i = 0
  for (const rel of worldFiles(dir).keys()) {
    const p = path.join(dir, rel)
    if (i % 3 === 0) fs.rmSync(p)
    else if (i % 3 === 1) fs.writeFileSync(p, '')
    else fs.writeFileSync(p, '\0\0{"torn')
    i++
  }
}

// 40 runs: syncs 1-40 are the start() calls (one after the other), then the engine's
// groups (at least 3: two steps and the result per run), so the 42nd is an engine group's
for (const failAt of [undefined, 42]) {
  test(`[log] many runs at once (groups synced while the next ones are written)${failAt ? `, the ${failAt}th sync failing` : ''}: every result acknowledged survives a machine crash`, async () => {
    const { dir, side } = fresh(`many-${failAt ?? 'ok'}`)
    const env = { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_BOOT_ID: 'boot-before' }
    if (failAt) env.WORKFLOW_NATIVE_TEST_FAIL_SYNC = `.workflow-native/log@${failAt}`
    const a = await runChild(dir, ['many', '40'], env)
    const done = a.out.filter((l) => l.startsWith('DONE ')).map((l) => l.split(' '))
    if (failAt) {
      assert.equal(a.out.filter((l) => l.startsWith('STARTED ')).length, 40, a.out.join('\n'))
      assert.ok(a.err.some((l) => FAULT.test(l)), [...a.out, ...a.err].join('\n'))
      assert.ok(done.length < 40, 'a failed sync stops what it covered')
    } else {
      assert.equal(a.code, 0, [...a.out, ...a.err].join('\n'))
      assert.equal(done.length, 40)
    }
    losePageCache(dir)
    for (const [, runId, v] of done) {
      const b = await runChild(dir, ['inspect', runId], { SIDE_LOG: side, WORKFLOW_NATIVE_TEST_BOOT_ID: 'boot-after' })
      assert.equal(b.code, 0, [...b.out, ...b.err].join('\n'))
      assert.ok(b.out.includes('STATUS completed'), `${runId}: ${b.out.join(' ')}`)
      assert.ok(b.out.includes(`RESULT ${v}`), `${runId}: ${b.out.join(' ')}`)
    }
  })
}

test('WORKFLOW_NATIVE_SYNC=off: nothing is synced (the failing sync is never reached)', async () => {
  const { dir, side } = fresh('sync-off')
  const r = await runChild(dir, ['start'], {
    SIDE_LOG: side,
    WORKFLOW_NATIVE_SYNC: 'off',
    WORKFLOW_NATIVE_TEST_FAIL_SYNC: 'events',
  })
  assert.equal(r.code, 0, [...r.out, ...r.err].join('\n'))
  assert.ok(r.out.includes('RESULT 3'), r.out.join('\n'))
})
