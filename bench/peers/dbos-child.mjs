// DBOS Transact (npm @dbos-inc/dbos-sdk) under the peer workloads (see common.mjs),
// launched in this process against the local PostgreSQL, on a database of its own that
// this script creates and drops (`wfn_bench_dbos_<pid>`). Server settings are left as they
// are. Workflows and steps are declared with DBOS.registerWorkflow / DBOS.registerStep,
// started with DBOS.startWorkflow and awaited with getResult().
//
//   node bench/peers/dbos-child.mjs [--quick]
//
// WFN_BENCH_PG_URL: a connection URL to an existing database on the server (default
// postgresql://postgres@127.0.0.1:5432/postgres), used to create and drop the bench's.
import { pgClient, PG_ADMIN_URL, withDatabase } from './pg.mjs'
import { report, runChild } from './common.mjs'
import { installedVersion } from './versions.mjs'

const dbName = `wfn_bench_dbos_${process.pid}`

await runChild(async () => {
  const admin = await pgClient(PG_ADMIN_URL)
  try {
    await report({ type: 'resource', pgDatabase: dbName })
    await admin.query(`CREATE DATABASE "${dbName}"`)
  } finally {
    await admin.end()
  }

  const { DBOS } = await import('@dbos-inc/dbos-sdk')
  DBOS.setConfig({ name: 'wfn-bench-peers', systemDatabaseUrl: withDatabase(PG_ADMIN_URL, dbName), logLevel: 'warn' })
  const increment = DBOS.registerStep(async (x) => x + 1, { name: 'increment' })
  const steps = DBOS.registerWorkflow(
    async (n) => {
      let acc = 0
      for (let i = 0; i < n; i++) acc = await increment(acc)
      return acc
    },
    { name: 'peers-steps' },
  )
  const empty = DBOS.registerWorkflow(async (x) => x, { name: 'peers-empty' })
  let launched = false
  const teardown = async () => {
    try {
      if (launched) await DBOS.shutdown()
    } finally {
      const c = await pgClient(PG_ADMIN_URL)
      try {
        await c.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`)
      } finally {
        await c.end()
      }
    }
  }
  try {
    await DBOS.launch()
    launched = true
  } catch (e) {
    await teardown()
    throw e
  }
  const run = async (wf, arg) => (await DBOS.startWorkflow(wf)(arg)).getResult()
  return {
    sys: { steps: (n) => run(steps, n), empty: (x) => run(empty, x) },
    info: { version: installedVersion('@dbos-inc/dbos-sdk'), database: dbName },
    teardown,
  }
})
