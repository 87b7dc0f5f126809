// Engine benchmark (issue 4), run by bench/run.mjs in its own process and its own fresh
// data directory: the same workloads as the test app's `simple` and `manySteps`
// workflows, on workflow-native's embedded engine (in this process, durable writes
// included) and on the official runtime (the app's real flow and step endpoints, served
// by a child process on the same data directory). Reports the figures over IPC.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { fork } from 'node:child_process'
import { median, pct, timeEach } from './stats.mjs'
import { discard } from './trash.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const quick = process.argv.includes('--quick')
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-bench-engine-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
process.env.WORKFLOW_LOCAL_RECOVER_ACTIVE_RUNS = '0'

const official = await import('workflow/api')
const ours = (await import('../index.js')).default
const engine = (await import('../workflow.js')).default

const app = fork(path.join(here, 'app-server.mjs'), [dataDir], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
const { baseUrl, workflows } = await new Promise((resolve, reject) => {
  app.once('message', resolve)
  app.once('exit', (code) => reject(new Error(`app server exited (${code})`)))
})
process.env.WORKFLOW_LOCAL_BASE_URL = baseUrl

const increment = engine.step('increment', async (x) => x + 1)
const manySteps = engine.workflow('bench-many-steps', async (n) => {
  let acc = 0
  for (let i = 0; i < n; i++) acc = await increment(acc)
  return acc
})
const simple = engine.workflow('bench-simple', async (a, b) => a + b)
const STEPS = quick ? 200 : 1000

const records = []
let perStep
try {
  const noStep = async (api, w) => {
    const run = await api.start(w, [2, 3])
    const v = await run.returnValue
    if (v !== 5) throw new Error(`returnValue ${v}`)
  }
  const many = async (api, w) => {
    const run = await api.start(w, [STEPS])
    const v = await run.returnValue
    if (v !== STEPS) throw new Error(`returnValue ${v}`)
  }
  // The official runtime first, on the fresh directory: its replay lists the events
  // directory on every step, so it must not pay for the files our runs would add.
  await noStep(official, workflows.simple) // warm-up
  const offSimple = await timeEach(quick ? 3 : 8, () => noStep(official, workflows.simple))
  // The official runtime replays the whole workflow for every step, so its cost per step
  // grows with the step count; on this kind of machine 1,000 steps can take hours. It
  // gets CAP; if it has not finished by then, the figure is a lower bound (its elapsed
  // time, with the steps it completed).
  const CAP = quick ? 300_000 : 900_000
  let offManyMs
  let offSteps = STEPS
  let lowerBound = false
  {
    const t0 = performance.now()
    const run = await official.start(workflows.manySteps, [STEPS])
    const capped = await Promise.race([
      run.returnValue.then((v) => {
        if (v !== STEPS) throw new Error(`returnValue ${v}`)
        return false
      }),
      new Promise((r) => setTimeout(() => r(true), CAP).unref()),
    ])
    offManyMs = performance.now() - t0
    if (capped) {
      lowerBound = true
      const dir = path.join(dataDir, 'steps')
      offSteps = fs.readdirSync(dir).filter((f) => f.startsWith(`${run.runId}-`)).length
    }
  }
  const offMany = [offManyMs]
  for (let i = 0; i < 20; i++) await noStep(ours, simple) // warm-up
  const mineSimple = await timeEach(quick ? 50 : 300, () => noStep(ours, simple))
  const mineMany = await timeEach(3, () => many(ours, manySteps))
  records.push({
    name: `${STEPS}-step workflow, start -> returnValue (engine vs official app)`,
    official: median(offMany),
    ours: median(mineMany),
    unit: 'ms',
    extra: lowerBound ? { lowerBound: true, note: `official stopped at the ${CAP / 1000} s cap after ${offSteps} of ${STEPS} steps: the official figure and the ratio are lower bounds` } : {},
  })
  records.push({
    name: 'no-step workflow, start -> returnValue (engine vs official app)',
    official: median(offSimple),
    ours: median(mineSimple),
    unit: 'ms',
    extra: { p90ours: pct(mineSimple, 0.9) },
  })
  perStep = {
    official: ((median(offMany) - median(offSimple)) / offSteps) * 1000,
    officialSteps: offSteps,
    ours: ((median(mineMany) - median(mineSimple)) / STEPS) * 1000,
  }
} finally {
  const exited = new Promise((r) => app.once('exit', r))
  app.send('close')
  const timer = setTimeout(() => app.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}
process.send({ records, perStep }, () => {
  discard(dataDir)
  process.exit(0)
})
