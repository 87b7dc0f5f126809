// workflow-native's embedded engine on PostgreSQL under the peer workloads (see
// common.mjs): a worker in this process (startWorker()), on a database of its own on the
// same server as DBOS's (`wfn_bench_ours_<pid>`, created and dropped here; server
// settings left as they are), through WORKFLOW_TARGET_WORLD=@workflow/world-postgres.
//
//   node bench/peers/ours-pg-child.mjs [--quick]
import { pgClient, PG_ADMIN_URL, withDatabase } from './pg.mjs'
import { report, runChild } from './common.mjs'

const dbName = `wfn_bench_ours_${process.pid}`

await runChild(async () => {
  const admin = await pgClient(PG_ADMIN_URL)
  try {
    await report({ type: 'resource', pgDatabase: dbName })
    await admin.query(`CREATE DATABASE "${dbName}"`)
  } finally {
    await admin.end()
  }
  process.env.WORKFLOW_TARGET_WORLD = '@workflow/world-postgres'
  process.env.WORKFLOW_POSTGRES_URL = withDatabase(PG_ADMIN_URL, dbName)

  const { start } = (await import('../../index.js')).default
  const { workflow, step, startWorker } = (await import('../../workflow.js')).default

  const increment = step('increment', async (x) => x + 1)
  const steps = workflow('peers-steps', async (n) => {
    let acc = 0
    for (let i = 0; i < n; i++) acc = await increment(acc)
    return acc
  })
  const empty = workflow('peers-empty', async (x) => x)
  const worker = startWorker({ concurrency: Infinity })
  await worker.ready

  const run = async (wf, arg) => (await start(wf, [arg])).returnValue
  return {
    sys: { steps: (n) => run(steps, n), empty: (x) => run(empty, x) },
    info: { database: dbName },
    teardown: async () => {
      await worker.stop()
      const c = await pgClient(PG_ADMIN_URL)
      try {
        await c.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`)
      } finally {
        await c.end()
      }
    },
  }
})
