// A child process for the crash tests: runs (or resumes) a 5-step workflow on the data
// directory given in WORKFLOW_LOCAL_DATA_DIR and reports progress on stdout, so the parent
// can SIGKILL it at a known point.
//
//   node crash-child.mjs start  → starts a run, prints "RUN <id>"
//   node crash-child.mjs resume → resumeRuns(), prints "RESUMED <ids>"
// Environment: SIDE_LOG (file every step attempt appends to), STOP_AFTER=<n> (the workflow
// stops for ever after step n: a kill "between steps"), HANG_AT=<n> (step n hangs after it
// started: a kill "in the middle of a step"), DIVERGE=1 (the code takes another path).
import fs from 'node:fs'
import wf from '../../workflow.js'
import api from '../../index.js'

const { workflow, step, resumeRuns } = wf
const side = process.env.SIDE_LOG
const stopAfter = Number(process.env.STOP_AFTER || 0)
const hangAt = Number(process.env.HANG_AT || 0)
const say = (line) => fs.writeSync(1, `${line}\n`)

const work = step('work', async (i) => {
  fs.appendFileSync(side, `start ${i}\n`)
  if (i === hangAt) {
    say(`HANG ${i}`)
    await new Promise(() => {})
  }
  fs.appendFileSync(side, `done ${i}\n`)
  return i * 10
})
const other = step('other', async () => 'other')

const crashy = workflow('crashy', async (n) => {
  const out = []
  for (let i = 1; i <= n; i++) {
    if (process.env.DIVERGE && i === 2) out.push(await other())
    else out.push(await work(i))
    if (i === stopAfter) {
      say(`BETWEEN ${i}`)
      await new Promise(() => {})
    }
  }
  return out
})

// Parallel branches whose steps finish in reverse order (fetch 2, then save 20, then
// fetch 1: fetch 1 waits until save 20 runs), then park (STOP_AFTER=1) for the parent to
// kill; on resume the branches must get their own results back (replay in the order the
// log recorded them).
let saved20
const saved20Done = new Promise((r) => (saved20 = r))
const fetchItem = step('fetch-item', async (id) => {
  if (id === 1) await saved20Done
  fs.appendFileSync(side, `fetch ${id}\n`)
  return id * 10
})
const save = step('save', async (value) => {
  fs.appendFileSync(side, `save ${value}\n`)
  if (value === 20) saved20()
  return value
})
const parallel = workflow('parallel-branches', async () => {
  const out = await Promise.all([1, 2].map(async (id) => save(await fetchItem(id))))
  if (stopAfter === 1) {
    say('BETWEEN 1')
    await new Promise(() => {})
  }
  return out
})

// Keeps the process alive while the workflow is parked for the parent to kill it.
const keepAlive = setInterval(() => {}, 1 << 30)

if (process.argv[2] === 'start') {
  const run = process.env.WF === 'parallel' ? await api.start(parallel, []) : await api.start(crashy, [5])
  say(`RUN ${run.runId}`)
  say(`RESULT ${JSON.stringify(await run.returnValue)}`)
} else {
  const ids = await resumeRuns()
  say(`RESUMED ${ids.join(',')}`)
  for (const id of ids) {
    try {
      say(`RESULT ${JSON.stringify(await api.getRun(id).returnValue)}`)
    } catch (e) {
      say(`FAILED ${e.name} ${e.cause ? e.cause.code : ''}`)
    }
  }
}
clearInterval(keepAlive)
