// The official runtime on PostgreSQL (see api.mjs), in a process of its own: the e2e app
// (__test__/e2e/app/workflows.ts, built with the official 4.8.9 builder) served on
// @workflow/world-postgres 4.3.7 at WORKFLOW_POSTGRES_URL (a database the upstream CLI
// bootstrapped), its graphile-worker runner POSTing the queue's jobs to the app's flow and
// step routes; the official start() of `manySteps(n)`, then its returnValue, capped:
//
//   node bench/pg/api-app-child.mjs <steps> <capMs>
//
// Reports `{ ms, capped, stepsDone, warmMs }` over IPC; on 'close' stops the app and exits.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import { serveApp } from '../../__test__/e2e/serve-app.mjs'

const STEPS = Number(process.argv[2])
const CAP_MS = Number(process.argv[3])
const url = process.env.WORKFLOW_POSTGRES_URL
if (!url) throw new Error('api-app-child.mjs: WORKFLOW_POSTGRES_URL is required')

// Every node-postgres client made in this process, to end the ones the official World
// leaves open (as __test__/pg-e2e.test.mjs does; world-postgres has a pg of its own).
const fromWorld = createRequire(createRequire(import.meta.url).resolve('@workflow/world-postgres'))
const openClients = new Set()
for (const lib of new Set([fromWorld('pg'), pg])) {
  const connect = lib.Client.prototype.connect
  lib.Client.prototype.connect = function (...args) {
    openClients.add(this)
    this.once('end', () => openClients.delete(this))
    return connect.apply(this, args)
  }
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-bench-pgapi-app-'))
process.on('exit', () => fs.rmSync(dataDir, { recursive: true, force: true }))

let app
async function shutdown(code) {
  const timer = setTimeout(() => process.exit(code), 5000)
  try {
    await app?.close()
    await Promise.allSettled([...openClients].map((c) => c.end()))
  } finally {
    clearTimeout(timer)
    process.exit(code)
  }
}
process.on('message', (m) => {
  if (m === 'close') shutdown(0)
})

try {
  app = await serveApp({ dataDir, postgresUrl: url })
  const official = await import('workflow/api')
  // warm-up: the bundles, the queue's first jobs, the pool's connections
  const w0 = performance.now()
  const warm = await official.start(app.workflows.simple, [2, 3])
  if ((await warm.returnValue) !== 5) throw new Error('warm-up run')
  const warmMs = performance.now() - w0

  const t0 = performance.now()
  const run = await official.start(app.workflows.manySteps, [STEPS])
  let timer
  const capped = await Promise.race([
    run.returnValue.then((v) => {
      if (v !== STEPS) throw new Error(`returnValue ${v}`)
      return false
    }),
    new Promise((r) => {
      timer = setTimeout(() => r(true), CAP_MS)
    }),
  ])
  clearTimeout(timer)
  const ms = performance.now() - t0
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  const stepsDone = (
    await c.query("SELECT count(*)::int AS n FROM workflow.workflow_steps WHERE run_id = $1 AND status = 'completed'", [run.runId])
  ).rows[0].n
  await c.end()
  process.send({ ms, capped, stepsDone, warmMs })
} catch (e) {
  console.error(e)
  await shutdown(1)
}
