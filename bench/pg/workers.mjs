// The embedded engine on PostgreSQL across worker processes (issue 9): throughput of
// `runs` × 3-step runs started at once by a client process with no worker, executed by 1, 2
// and 4 worker processes (runs/s, p50/p99 start → returnValue, most connections the
// database had open meanwhile); and the time from a worker's SIGKILL (in the middle of a
// step) to that run's next step starting on another worker. Each case on a database of its
// own on the server of WFN_BENCH_PG_URL (default postgres@127.0.0.1:5432).
import { spawn } from 'node:child_process'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { pgClient, PG_ADMIN_URL, withDatabase } from '../peers/pg.mjs'
import { median, pct } from '../stats.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const child = path.join(here, 'worker-child.mjs')

function spawnRole(role, args, env) {
  const proc = spawn(process.execPath, [child, role, ...args], { env, stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = []
  const waiters = []
  readline.createInterface({ input: proc.stdout }).on('line', (l) => {
    lines.push(l)
    for (const w of waiters.splice(0)) w()
  })
  const exited = new Promise((r) => proc.once('exit', r))
  return {
    proc,
    lines,
    exited,
    async waitFor(pred, what, ms = 120_000) {
      const deadline = Date.now() + ms
      for (;;) {
        const hit = lines.find(pred)
        if (hit) return hit
        if (proc.exitCode !== null) throw new Error(`${role} exited before ${what}`)
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
        await new Promise((r) => {
          waiters.push(r)
          setTimeout(r, 1000)
        })
      }
    },
  }
}

async function withDb(tag, fn) {
  const name = `wfn_bench_pgw_${tag}_${process.pid}`
  const admin = await pgClient(PG_ADMIN_URL)
  await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  await admin.query(`CREATE DATABASE "${name}"`)
  const env = { ...process.env, WORKFLOW_POSTGRES_URL: withDatabase(PG_ADMIN_URL, name) }
  try {
    return await fn(env, name, admin)
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => {})
    await admin.end()
  }
}

async function throughput(workers, runs) {
  return withDb(`t${workers}`, async (env, name, admin) => {
    const ws = Array.from({ length: workers }, () => spawnRole('worker', [], env))
    try {
      await Promise.all(ws.map((w) => w.waitFor((l) => l === 'READY', 'a worker to start')))
      let maxConns = 0
      let sampling = true
      const sampler = (async () => {
        while (sampling) {
          const { rows } = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name])
          maxConns = Math.max(maxConns, rows[0].n)
          await new Promise((r) => setTimeout(r, 50))
        }
      })()
      const client = spawnRole('client', [String(runs)], env)
      const out = JSON.parse(await client.waitFor((l) => l.startsWith('{'), 'the client', 600_000))
      sampling = false
      await sampler
      const lat = out.lat.sort((a, b) => a - b)
      return { workers, runs, runsPerS: runs / (out.ms / 1000), p50: median(lat), p99: pct(lat, 99), maxConns }
    } finally {
      for (const w of ws) w.proc.stdin.write('stop\n')
      await Promise.race([Promise.all(ws.map((w) => w.exited)), new Promise((r) => setTimeout(r, 10_000))])
      for (const w of ws) if (w.proc.exitCode === null) w.proc.kill('SIGKILL')
    }
  })
}

async function takeover(leaseMs) {
  return withDb('k', async (env) => {
    const wenv = { ...env, LEASE_MS: String(leaseMs) }
    const a = spawnRole('worker', [], wenv)
    await a.waitFor((l) => l === 'READY', 'worker A')
    const tag = `t${process.pid}`
    const one = spawnRole('one', [tag], env)
    await one.waitFor((l) => l.startsWith('RUN '), 'the run')
    await a.waitFor((l) => l === `IN ${tag}`, 'A in the step')
    const b = spawnRole('worker', [], wenv)
    try {
      await b.waitFor((l) => l === 'READY', 'worker B')
      const killedAt = Date.now()
      a.proc.kill('SIGKILL')
      await b.waitFor((l) => l === `IN ${tag}`, 'B to run the step again', leaseMs * 4 + 30_000)
      const ms = Date.now() - killedAt
      return { leaseMs, ms }
    } finally {
      b.proc.stdin.write('stop\n')
      b.proc.kill('SIGKILL')
      await b.exited
    }
  })
}

/** Runs both measurements; returns `{ rows, takeover, markdown }`. */
export async function runPgWorkers({ quick, log = console.log }) {
  const runs = quick ? 200 : 2000
  const rows = []
  for (const w of [1, 2, 4]) {
    const t0 = performance.now()
    const r = await throughput(w, runs)
    rows.push(r)
    log(`pg workers ${w}: ${runs} runs × 3 steps: ${r.runsPerS.toFixed(0)} runs/s, p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms, ${r.maxConns} connections (${((performance.now() - t0) / 1000).toFixed(1)} s)`)
  }
  const k = await takeover(2000)
  log(`pg takeover: SIGKILL → the step started again on another worker: ${k.ms} ms (leaseMs ${k.leaseMs})`)
  const markdown = `| worker processes | runs × 3 steps | runs/s | p50 start → returnValue | p99 | connections (most at once) |
|---|---|---|---|---|---|
${rows.map((r) => `| ${r.workers} | ${r.runs} | ${r.runsPerS.toFixed(0)} | ${r.p50.toFixed(0)} ms | ${r.p99.toFixed(0)} ms | ${r.maxConns} |`).join('\n')}

Takeover: a worker SIGKILLed in the middle of a step (\`leaseMs\` ${k.leaseMs}); the step began again on the other worker ${k.ms} ms later (bound: \`leaseMs\` plus one claim pass, \`pollMs\` 200 ms).`
  return { rows, takeover: k, markdown }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const res = await runPgWorkers({ quick: process.argv.includes('--quick') })
  console.log(`\n${res.markdown}`)
}
