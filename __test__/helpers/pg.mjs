// PostgreSQL for the tests: WORKFLOW_POSTGRES_URL when set, else postgres@127.0.0.1:5432.
// Each test file gets a database of its own (created here, dropped at the end). Without a
// server the file's tests are skipped with the reason printed; under CI=true that fails.

import pg from 'pg'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import fs from 'node:fs'
import os from 'node:os'
import net from 'node:net'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const baseUrl = process.env.WORKFLOW_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/postgres'

export function withDb(url, db) {
  const u = new URL(url)
  u.pathname = `/${db}`
  return u.toString()
}

async function admin() {
  const c = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 5000 })
  await c.connect()
  return c
}

/**
 * `{ url, name, drop() }` for a fresh database, or `{ skip: reason }` when there is no
 * server (a thrown error under CI=true).
 */
export async function testDatabase(tag) {
  let c
  try {
    c = await admin()
  } catch (e) {
    const reason = `no PostgreSQL at ${baseUrl.replace(/\/\/[^@]*@/, '//[redacted]@')}: ${e.message}`
    if (process.env.CI === 'true') throw new Error(`PostgreSQL is required under CI=true: ${reason}`)
    console.log(`# SKIPPED (PostgreSQL tests): ${reason}`)
    return { skip: reason }
  }
  const name = `wfn_js_${tag}_${process.pid}`
  await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await c.query(`CREATE DATABASE ${name}`)
  await c.end()
  const url = withDb(baseUrl, name)
  return {
    url,
    name,
    async drop() {
      const a = await admin()
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      } finally {
        await a.end()
      }
    },
  }
}

/** The official bootstrap CLI of @workflow/world-postgres 4.3.7 on `url`. */
export function upstreamBootstrap(url) {
  execFileSync(process.execPath, [path.join(root, 'node_modules/@workflow/world-postgres/bin/setup.js')], {
    env: { ...process.env, WORKFLOW_POSTGRES_URL: url, DATABASE_URL: url },
    stdio: 'pipe',
    cwd: path.join(root, '__test__'),
  })
}

/** A plain client on `url` (caller ends it). */
export async function sql(url) {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  return c
}

/** `pg_dump --schema-only` of the workflow schemas, without the volatile lines. */
export function schemaDump(url) {
  const out = execFileSync('pg_dump', ['--schema-only', '-n', 'workflow', '-n', 'workflow_drizzle', url], {
    encoding: 'utf8',
  })
  return out
    .split('\n')
    .filter((l) => l && !l.startsWith('--') && !l.startsWith('\\restrict') && !l.startsWith('\\unrestrict'))
    .join('\n')
}

/** The bin directory of the installed PostgreSQL server (newest version), or null. */
function serverBinDir() {
  const base = '/usr/lib/postgresql'
  let versions = []
  try {
    versions = fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'pg_ctl')))
  } catch {
    return null
  }
  versions.sort((a, b) => Number(b) - Number(a))
  return versions.length ? path.join(base, versions[0], 'bin') : null
}

/** A free TCP port on the loopback (the kernel's pick). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/**
 * A PostgreSQL cluster of the test's own, from the installed binaries, in a temp directory
 * on a free port (initdb refuses to run as root: as root, it runs as the `postgres` user).
 * `{ url, restart(), stop() }`, or `{ skip: reason }` when there are no binaries (a thrown
 * error under CI=true). Its server can be restarted without disturbing anyone else's.
 */
export async function privateCluster() {
  const bin = serverBinDir()
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (!bin) {
    const reason = 'no PostgreSQL server binaries under /usr/lib/postgresql'
    if (process.env.CI === 'true') throw new Error(`PostgreSQL is required under CI=true: ${reason}`)
    console.log(`# SKIPPED (private PostgreSQL cluster): ${reason}`)
    return { skip: reason }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-pgc-'))
  const data = path.join(dir, 'data')
  const log = path.join(dir, 'server.log')
  const run = (tool, args) => {
    const cmd = path.join(bin, tool)
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
    return execFileSync(file, argv, { stdio: 'pipe', encoding: 'utf8', cwd: dir })
  }
  if (asRoot) execFileSync('chown', ['postgres:', dir])
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'])
  const port = await freePort()
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`
  const ctl = (...args) => run('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', ...args])
  ctl('-o', opts, 'start')
  let stopped = false
  const cluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    /** `pg_ctl restart -m fast`: every connection is terminated, the server comes back. */
    restart() {
      ctl('-m', 'fast', '-o', opts, 'restart')
    },
    stop() {
      if (stopped) return
      stopped = true
      try {
        ctl('-m', 'immediate', 'stop')
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    },
  }
  // a test file that dies before its after() hook leaves no server running
  process.once('exit', () => {
    try {
      cluster.stop()
    } catch {}
  })
  return cluster
}
