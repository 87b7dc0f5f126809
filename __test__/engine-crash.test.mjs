// Crash tests for the embedded engine: a child process running a 5-step workflow is
// killed with SIGKILL between two steps and again in the middle of a step; a new process
// resumes the run from its event log. No completed step runs twice; the interrupted step
// runs again once. And a resumed run whose code took another path fails with
// ReplayDivergenceError instead of going on silently.
import { dataDir, official, world } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'engine', 'crash-child.mjs')

/**
 * Runs the child until a stdout line matches `until` (then SIGKILLs it and resolves with
 * the lines so far) or until it exits.
 */
function runChild(mode, env, until) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, mode], {
      env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dataDir, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const lines = []
    let killed = false
    readline.createInterface({ input: p.stdout }).on('line', (line) => {
      lines.push(line)
      if (until && !killed && until.test(line)) {
        killed = true
        p.kill('SIGKILL')
      }
    })
    p.on('error', reject)
    p.on('close', (code, signal) => resolve({ lines, code, signal }))
  })
}

async function eventTypes(runId) {
  const page = await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc' } })
  return page.data
}

test('SIGKILL between steps and in the middle of a step: a new process resumes, no completed step runs twice', async () => {
  const sideLog = path.join(dataDir, 'side-1.log')
  fs.writeFileSync(sideLog, '')

  // 1. killed after step 2 completed, before step 3
  const a = await runChild('start', { SIDE_LOG: sideLog, STOP_AFTER: '2' }, /^BETWEEN 2$/)
  assert.equal(a.signal, 'SIGKILL')
  const runId = a.lines.find((l) => l.startsWith('RUN ')).slice(4)
  assert.equal(await official.getRun(runId).status, 'running')

  // 2. a new process resumes; killed while step 4 runs
  const b = await runChild('resume', { SIDE_LOG: sideLog, HANG_AT: '4' }, /^HANG 4$/)
  assert.equal(b.signal, 'SIGKILL')
  assert.ok(b.lines.includes(`RESUMED ${runId}`), b.lines.join('\n'))

  // 3. another process resumes and finishes
  const c = await runChild('resume', { SIDE_LOG: sideLog })
  assert.equal(c.code, 0, c.lines.join('\n'))
  assert.ok(c.lines.includes(`RESULT ${JSON.stringify([10, 20, 30, 40, 50])}`), c.lines.join('\n'))
  assert.deepEqual(await official.getRun(runId).returnValue, [10, 20, 30, 40, 50])

  const side = fs.readFileSync(sideLog, 'utf8').trim().split('\n')
  const count = (line) => side.filter((l) => l === line).length
  for (const i of [1, 2, 3, 5]) {
    assert.equal(count(`start ${i}`), 1, `step ${i} ran once`)
    assert.equal(count(`done ${i}`), 1)
  }
  assert.equal(count('start 4'), 2, 'the interrupted step ran again, once')
  assert.equal(count('done 4'), 1)

  const evs = await eventTypes(runId)
  const started = evs.filter((e) => e.eventType === 'step_started')
  assert.equal(started.length, 6) // 5 steps + the re-run of step 4
  assert.equal(evs.filter((e) => e.eventType === 'step_completed').length, 5)
  assert.equal(evs.at(-1).eventType, 'run_completed')
  const steps = (await world.steps.list({ runId, pagination: { sortOrder: 'asc' } })).data
  assert.deepEqual(
    steps.map((s) => s.attempt),
    [1, 1, 1, 2, 1],
  )
})

test('a resumed run whose code takes another path fails with ReplayDivergenceError', async () => {
  const sideLog = path.join(dataDir, 'side-2.log')
  fs.writeFileSync(sideLog, '')
  const a = await runChild('start', { SIDE_LOG: sideLog, STOP_AFTER: '2' }, /^BETWEEN 2$/)
  const runId = a.lines.find((l) => l.startsWith('RUN ')).slice(4)
  const d = await runChild('resume', { SIDE_LOG: sideLog, DIVERGE: '1' })
  assert.equal(d.code, 0, d.lines.join('\n'))
  assert.ok(d.lines.includes('FAILED WorkflowRunFailedError REPLAY_DIVERGENCE'), d.lines.join('\n'))
  const err = await official.getRun(runId).returnValue.catch((e) => e)
  assert.equal(err.name, 'WorkflowRunFailedError')
  assert.match(err.cause.message, /Replay divergence/)
  // the completed steps were not run again
  const side = fs.readFileSync(sideLog, 'utf8').trim().split('\n')
  assert.deepEqual(side, ['start 1', 'done 1', 'start 2', 'done 2'])
})

test('parallel branches replay in the order the log recorded them (no cross-wired results)', async () => {
  const sideLog = path.join(dataDir, 'side-3.log')
  fs.writeFileSync(sideLog, '')
  const a = await runChild('start', { SIDE_LOG: sideLog, WF: 'parallel', STOP_AFTER: '1' }, /^BETWEEN 1$/)
  const runId = a.lines.find((l) => l.startsWith('RUN ')).slice(4)
  // recorded: fetch 2 completed before fetch 1, so "save 20" was created before "save 10"
  assert.deepEqual(fs.readFileSync(sideLog, 'utf8').trim().split('\n'), ['fetch 2', 'save 20', 'fetch 1', 'save 10'])
  const b = await runChild('resume', { SIDE_LOG: sideLog, WF: 'parallel' })
  assert.equal(b.code, 0, b.lines.join('\n'))
  assert.ok(b.lines.includes(`RESULT ${JSON.stringify([10, 20])}`), b.lines.join('\n'))
  assert.deepEqual(await official.getRun(runId).returnValue, [10, 20])
  // nothing ran again
  assert.equal(fs.readFileSync(sideLog, 'utf8').trim().split('\n').length, 4)
})

test('a hook resumed by ANOTHER process reaches the run executing in this one', async () => {
  const { workflow, createHook } = (await import('../workflow.js')).default
  const api = (await import('../index.js')).default
  const token = `xproc-${process.pid}`
  const w = workflow('cross-process-hook', async () => {
    const h = createHook({ token })
    return await h
  })
  const run = await api.start(w, [])
  for (;;) {
    if (await api.getHookByToken(token).catch(() => undefined)) break
    await new Promise((r) => setImmediate(r))
  }
  const script = `const api = require(${JSON.stringify(path.join(path.dirname(child), '..', '..', 'index.js'))});
    api.resumeHook(${JSON.stringify(token)}, { from: 'elsewhere' }).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })`
  const code = await new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', script], {
      env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dataDir, WORKFLOW_LOCAL_BASE_URL: 'http://127.0.0.1:1' },
      stdio: ['ignore', 'ignore', 'inherit'],
    })
    p.on('error', reject)
    p.on('close', resolve)
  })
  assert.equal(code, 0)
  assert.deepEqual(await run.returnValue, { from: 'elsewhere' })
})
