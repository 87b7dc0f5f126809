// A child process for the crash-recovery soak (engine-soak.test.mjs): starts or resumes a
// 50-step workflow (a durable sleep after every 10th step) on WORKFLOW_LOCAL_DATA_DIR and
// reports on stdout, so the parent can SIGKILL it at a random moment.
//
//   node soak-child.mjs start  → starts the run, prints "RUN <id>", then "RESULT <json>"
//   node soak-child.mjs resume → resumeRuns(), prints "RESUMED <ids>", then "RESULT <json>"
// Environment: SIDE_LOG (each step attempt appends "<GEN> start <i>" before its work and
// "<GEN> done <i>" after it), GEN (this process's number), HANG_AFTER=<n> (the (n+1)-th
// step this process starts hangs after logging its start and prints "HANG <i>": the
// parent kills it there at the latest). WORKFLOW_NATIVE_TEST_KILL_BEFORE_EVENT (the
// core's test hook) kills the process between an event's entity file and its event file.
import fs from 'node:fs'
import wf from '../../workflow.js'
import api from '../../index.js'

const { workflow, step, sleep, resumeRuns } = wf
const side = process.env.SIDE_LOG
const gen = process.env.GEN || '0'
const hangAfter = process.env.HANG_AFTER === undefined ? Infinity : Number(process.env.HANG_AFTER)
const say = (line) => fs.writeSync(1, `${line}\n`)
export const STEPS = 50

let startedHere = 0
// One step per index (its name says which): the parent counts attempts per step. Each
// kill that catches a step in flight costs it an attempt (as in the official runtime, a
// step whose process keeps dying fails with "exceeded max retries"): enough retries that
// 20 kills never exhaust them.
const steps = Array.from({ length: STEPS }, (_, k) =>
  step(
    `soak-${k + 1}`,
    async (i) => {
    fs.appendFileSync(side, `${gen} start ${i}\n`)
    startedHere++
    if (startedHere > hangAfter) {
      say(`HANG ${i}`)
      await new Promise(() => {})
    }
    // a little asynchronous work, so kills also land inside steps
    if (i % 3 !== 0) await new Promise((r) => setTimeout(r, i % 3))
    fs.appendFileSync(side, `${gen} done ${i}\n`)
    return i * 3
    },
    { maxRetries: 100 },
  ),
)

const soak = workflow('crash-soak-50', async () => {
  const out = []
  for (let i = 1; i <= STEPS; i++) {
    out.push(await steps[i - 1](i))
    if (i % 10 === 0) await sleep(1)
  }
  return out
})

// Keeps the process alive while a step hangs for the parent to kill it.
const keepAlive = setInterval(() => {}, 1 << 30)

if (process.argv[2] === 'start') {
  const run = await api.start(soak, [])
  say(`RUN ${run.runId}`)
  say(`RESULT ${JSON.stringify(await run.returnValue)}`)
} else {
  const ids = await resumeRuns()
  say(`RESUMED ${ids.join(',')}`)
  for (const f of ids.failures) say(`FAILURE ${f.runId} ${f.error && f.error.message}`)
  for (const id of ids) say(`RESULT ${JSON.stringify(await api.getRun(id).returnValue)}`)
}
clearInterval(keepAlive)
