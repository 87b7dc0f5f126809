// examples/nextjs end to end, as a user runs it: its dependencies installed with npm (this
// package as a copy, as from the registry), `next build`, `next start` on loopback, then a
// headless Chromium (Debian's `chromium`, driven by playwright-core) that starts a run on
// the page and sees its chunks arrive one by one before the run completes; a server
// restart while a run sleeps (instrumentation.ts resumes it); `next dev` with an edit of
// the workflow file mid-session, after which start() still succeeds.
//
// Needs Chromium at /usr/bin/chromium (or CHROMIUM_PATH): `apt-get install -y chromium`.
// A screenshot of the page goes to test-output/nextjs/ (WFN_TEST_OUTPUT overrides).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const APP = path.join(ROOT, 'examples', 'nextjs')
const NEXT = path.join(APP, 'node_modules', 'next', 'dist', 'bin', 'next')
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const OUTPUT = path.join(process.env.WFN_TEST_OUTPUT || path.join(ROOT, 'test-output'), 'nextjs')
const WORKFLOW_FILE = path.join(APP, 'workflows', 'ticker.ts')

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-nextjs-'))
const servers = new Set()
const originalWorkflow = fs.readFileSync(WORKFLOW_FILE)
const restoreWorkflow = () => {
  if (!fs.readFileSync(WORKFLOW_FILE).equals(originalWorkflow)) fs.writeFileSync(WORKFLOW_FILE, originalWorkflow)
}
// Whatever happens, the example's source is left as it was and the servers are stopped.
process.on('exit', () => {
  restoreWorkflow()
  for (const s of servers) {
    try {
      process.kill(-s.child.pid, 'SIGKILL')
    } catch {}
  }
  fs.rmSync(tmp, { recursive: true, force: true })
})

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: APP, encoding: 'utf8', env: appEnv(), ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

function appEnv(extra = {}) {
  const env = { ...process.env, NEXT_TELEMETRY_DISABLED: '1', ...extra }
  delete env.NODE_ENV // next sets it (dev refuses 'production')
  delete env.PORT
  return env
}

async function freePort() {
  const srv = net.createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address()
  await new Promise((r) => srv.close(r))
  return port
}

/** Starts `next start` or `next dev` on loopback; resolves once it answers HTTP. */
async function startServer(mode, { dataDir, port }) {
  const child = spawn(process.execPath, [NEXT, mode, '-p', String(port), '-H', '127.0.0.1'], {
    cwd: APP,
    env: appEnv({ WORKFLOW_LOCAL_DATA_DIR: dataDir }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: stopped with everything it started
  })
  const server = { child, log: '', base: `http://127.0.0.1:${port}`, exited: new Promise((r) => child.on('exit', r)) }
  child.stdout.on('data', (d) => (server.log += d))
  child.stderr.on('data', (d) => (server.log += d))
  servers.add(server)
  // Readiness poll with a deadline (the first request of `next dev` compiles the page).
  const deadline = Date.now() + 180_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`next ${mode} exited (${child.exitCode}):\n${server.log}`)
    try {
      const res = await fetch(server.base, { signal: AbortSignal.timeout(60_000) })
      if (res.ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`next ${mode} not ready in time:\n${server.log}`)
    await new Promise((r) => setTimeout(r, 200))
  }
  return server
}

async function stopServer(server) {
  if (!servers.delete(server)) return
  try {
    process.kill(-server.child.pid, 'SIGTERM')
  } catch {}
  const stopped = await Promise.race([server.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 15_000).unref())])
  if (!stopped) {
    try {
      process.kill(-server.child.pid, 'SIGKILL')
    } catch {}
    await server.exited
  }
}

async function startRun(server, input) {
  const res = await fetch(`${server.base}/api/runs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(input),
  })
  const text = await res.text()
  assert.equal(res.status, 201, `POST /api/runs answered ${res.status}: ${text}\nserver log:\n${server.log.slice(-4000)}`)
  return JSON.parse(text).runId
}

/** The whole stream route response (it ends when the run has ended), as parsed lines. */
async function readStream(server, runId, startIndex = 0) {
  const res = await fetch(`${server.base}/api/runs/${runId}/stream?startIndex=${startIndex}`)
  assert.equal(res.status, 200)
  return (await res.text())
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
}

async function status(server, runId) {
  const res = await fetch(`${server.base}/api/runs/${runId}`)
  assert.equal(res.status, 200)
  return res.json()
}

const runFile = (dataDir, runId) => JSON.parse(fs.readFileSync(path.join(dataDir, 'runs', `${runId}.json`), 'utf8'))

/** Waits (polling the data directory, with a deadline) until the run recorded a sleep. */
async function sleeping(dataDir, runId) {
  const dir = path.join(dataDir, 'events')
  const deadline = Date.now() + 60_000
  for (;;) {
    const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith(`${runId}-`)) : []
    for (const n of names) {
      const e = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8'))
      if (e.eventType === 'wait_created') return
    }
    assert.ok(Date.now() < deadline, `run ${runId} did not reach its sleep`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

before(() => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `Chromium not found at ${CHROMIUM}: install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH`,
  )
  // The example installs this package as a copy (.npmrc: install-links): refresh it so it
  // is the code just built, then install the rest (from npm's cache when it can).
  fs.rmSync(path.join(APP, 'node_modules', 'workflow-native'), { recursive: true, force: true })
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'])
  run(process.execPath, [NEXT, 'build'])
})

after(async () => {
  restoreWorkflow()
  for (const s of [...servers]) await stopServer(s)
})

test('next start: the page starts a run and shows its chunks one by one, then the final status', { timeout: 180_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'start-'))
  const server = await startServer('start', { dataDir, port: await freePort() })
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  try {
    const page = await browser.newPage()
    await page.goto(server.base)
    // step by step (the default): the run waits for "Continue" after each tick
    assert.equal(await page.getByRole('checkbox').isChecked(), true)
    await page.getByRole('button', { name: 'Start a run' }).click()
    const ticks = page.getByTestId('ticks').locator('li')
    await ticks.nth(0).waitFor()
    const runId = (await page.getByTestId('run-id').textContent()).trim()
    assert.match(runId, /^wrun_/)
    for (let n = 1; n <= 3; n++) {
      await page.locator(`li[data-n="${n}"]`).waitFor()
      assert.equal(await ticks.count(), n, `tick ${n} arrived alone`)
      assert.match(await ticks.nth(n - 1).textContent(), new RegExp(`^tick ${n} of 3`))
      if (n < 3) {
        // the chunk arrived while the run is still going (it waits for its hook)
        assert.equal((await status(server, runId)).status, 'running')
        assert.equal(await page.getByTestId('status').textContent(), 'running')
        await page.getByRole('button', { name: 'Continue' }).click()
      }
    }
    await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.textContent === 'completed')
    const info = await status(server, runId)
    assert.equal(info.status, 'completed')
    assert.equal(info.result.ticks, 3)
    fs.mkdirSync(OUTPUT, { recursive: true })
    const shot = path.join(OUTPUT, 'page.png')
    await page.screenshot({ path: shot, fullPage: true })
    console.log(`screenshot of the page: ${shot}`)
    // The stream route resumes from startIndex, and ends (the run is over).
    assert.deepEqual(
      (await readStream(server, runId, 1)).map((t) => t.text),
      ['tick 2 of 3', 'tick 3 of 3'],
    )
  } finally {
    await browser.close()
    await stopServer(server)
  }
})

test('next start: a run sleeping when the server stops completes after a restart (instrumentation resumes it)', { timeout: 180_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'restart-'))
  const port = await freePort()
  let server = await startServer('start', { dataDir, port })
  const runId = await startRun(server, { ticks: 2, pause: '2s' })
  await sleeping(dataDir, runId)
  await stopServer(server)
  assert.equal(runFile(dataDir, runId).status, 'running', 'the run is left running by the stopped server')

  server = await startServer('start', { dataDir, port })
  try {
    // The stream from chunk 1 ends only once the run has ended: it completed here.
    const rest = await readStream(server, runId, 1)
    assert.deepEqual(rest.map((t) => t.text), ['tick 2 of 2'])
    const info = await status(server, runId)
    assert.equal(info.status, 'completed')
    assert.equal(info.result.ticks, 2)
    assert.match(server.log, new RegExp(`resumed 1 run\\(s\\): ${runId}`))
  } finally {
    await stopServer(server)
  }
})

test('next dev: after an edit of the workflow file, start() still succeeds and runs the new code', { timeout: 240_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'dev-'))
  const server = await startServer('dev', { dataDir, port: await freePort() })
  try {
    const first = await startRun(server, { ticks: 1 })
    assert.deepEqual((await readStream(server, first)).map((t) => t.text), ['tick 1 of 1'])

    const source = originalWorkflow.toString('utf8')
    const edited = source.replace('text: `tick ${n} of ${of}`', 'text: `edited tick ${n} of ${of}`')
    assert.notEqual(edited, source, 'the edit applies')
    fs.writeFileSync(WORKFLOW_FILE, edited)
    // Until the dev server has reloaded the module, runs still get the old text; every
    // start() must succeed meanwhile and after (it answered 500 before re-declaration).
    const deadline = Date.now() + 120_000
    let text
    for (;;) {
      const runId = await startRun(server, { ticks: 1 })
      ;[{ text }] = await readStream(server, runId)
      if (text.startsWith('edited')) break
      assert.ok(Date.now() < deadline, `the edit was not picked up; last chunk: ${text}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    assert.equal(text, 'edited tick 1 of 1')
    const again = await startRun(server, { ticks: 1 })
    assert.deepEqual((await readStream(server, again)).map((t) => t.text), ['edited tick 1 of 1'])
    assert.doesNotMatch(server.log, /already registered/)
  } finally {
    restoreWorkflow()
    await stopServer(server)
  }
})
