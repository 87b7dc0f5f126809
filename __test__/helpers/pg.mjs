// PostgreSQL for the tests: WORKFLOW_POSTGRES_URL when set, else postgres@127.0.0.1:5432.
// Each test file gets a database of its own (created here, dropped at the end). Without a
// server the file's tests are skipped with the reason printed; under CI=true that fails.

import pg from 'pg'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

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
