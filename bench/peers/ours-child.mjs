// workflow-native's embedded engine under the peer workloads (see common.mjs), in this
// process, on a fresh data directory under the base directory given (the data disk, or
// tmpfs). The environment is passed through as the coordinator set it (WORKFLOW_NATIVE_SYNC
// selects the durability mode).
//
//   node bench/peers/ours-child.mjs <baseDir> [--quick]
import fs from 'node:fs'
import path from 'node:path'
import { discard } from '../trash.mjs'
import { report, runChild } from './common.mjs'

const base = process.argv[2]

await runChild(async () => {
  const dataDir = fs.mkdtempSync(path.join(base, 'wfn-bench-peers-ours-'))
  await report({ type: 'resource', dataDir })
  process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir // read at first use

  const { start } = (await import('../../index.js')).default
  const { workflow, step } = (await import('../../workflow.js')).default

  const increment = step('increment', async (x) => x + 1)
  const steps = workflow('peers-steps', async (n) => {
    let acc = 0
    for (let i = 0; i < n; i++) acc = await increment(acc)
    return acc
  })
  const empty = workflow('peers-empty', async (x) => x)

  const run = async (wf, arg) => (await start(wf, [arg])).returnValue
  return {
    sys: { steps: (n) => run(steps, n), empty: (x) => run(empty, x) },
    info: { dataDir, sync: process.env.WORKFLOW_NATIVE_SYNC ?? null },
    teardown: async () => discard(dataDir),
  }
})
