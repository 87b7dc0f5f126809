// PostgreSQL access for the peer benchmark: the `pg` client DBOS itself depends on
// (resolved from @dbos-inc/dbos-sdk, so no second copy is installed), and where the server is.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** An existing database on the server, used to create and drop the bench's own. */
export const PG_ADMIN_URL = process.env.WFN_BENCH_PG_URL || 'postgresql://postgres@127.0.0.1:5432/postgres'

/** `url` with its database replaced by `db`. */
export function withDatabase(url, db) {
  const u = new URL(url)
  u.pathname = `/${db}`
  return u.toString()
}

/** A connected `pg` client (the caller ends it). */
export async function pgClient(url) {
  const { Client } = createRequire(require.resolve('@dbos-inc/dbos-sdk'))('pg')
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  await client.connect()
  return client
}
