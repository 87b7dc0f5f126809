// The child of the corruption matrix: creates runs of the matrix workflows on the data
// directory in WORKFLOW_LOCAL_DATA_DIR and leaves them parked (a live hook and a pending
// sleep each), then exits without releasing anything, as a crash would.
//
//   node matrix-child.mjs <matrix runs> <late runs> <done runs> <throws runs>
// prints one line of JSON: { matrix: [[n, runId]], late: [[n, runId]] (late i is of
// `matrix-late-<i>`), done: [[n, runId]], throws: [[n, runId]] }
import fs from 'node:fs'
import api from '../../index.js'
import { matrix, declareLate, declareThrows, done, firstToken, secondToken, throwsToken } from './matrix-workflows.mjs'

const [nMatrix, nLate, nDone, nThrows] = process.argv.slice(2).map(Number)
const throws = declareThrows()
const world = (await import('@workflow/world-local')).createLocalWorld({ dataDir: process.env.WORKFLOW_LOCAL_DATA_DIR })

async function types(runId) {
  const page = await world.events.list({ runId, pagination: { limit: 1000, sortOrder: 'asc' } })
  return page.data.map((e) => e.eventType)
}
const count = (list, t) => list.filter((x) => x === t).length

async function park(wfDef, n) {
  const run = await api.start(wfDef, [n])
  // the first hook gets its payload once it exists
  for (;;) {
    const hook = await api.getHookByToken(firstToken(n)).catch(() => null)
    if (hook) break
    await new Promise((r) => setTimeout(r, 20))
  }
  await api.resumeHook(firstToken(n), { p: n })
  // parked: the second hook and the long sleep are on disk, the first hook disposed
  for (;;) {
    const t = await types(run.runId)
    if (count(t, 'hook_created') === 2 && count(t, 'wait_created') === 2 && count(t, 'hook_disposed') === 1) break
    await new Promise((r) => setTimeout(r, 20))
  }
  // and the files written after those events: the second hook's entity, the first one's removal
  for (;;) {
    const second = await api.getHookByToken(secondToken(n)).catch(() => null)
    const first = await api.getHookByToken(firstToken(n)).catch((e) => e)
    if (second && first && first.name === 'HookNotFoundError') break
    await new Promise((r) => setTimeout(r, 20))
  }
  return run.runId
}

const out = { matrix: [], late: [], done: [], throws: [] }
const jobs = []
let n = 0
const add = (list, k, p) => jobs.push(p.then((id) => list.push([k, id])))
for (let i = 0; i < nMatrix; i++, n++) add(out.matrix, n, park(matrix, n))
for (let i = 0; i < nLate; i++, n++) add(out.late, n, park(declareLate(i), n))
for (let i = 0; i < nDone; i++, n++) {
  const k = n
  add(
    out.done,
    k,
    api.start(done, [k]).then(async (run) => {
      await run.returnValue
      return run.runId
    }),
  )
}
for (let i = 0; i < nThrows; i++, n++) {
  const k = n
  add(
    out.throws,
    k,
    api.start(throws, [k]).then(async (run) => {
      for (;;) {
        if (await api.getHookByToken(throwsToken(k)).catch(() => null)) return run.runId
        await new Promise((r) => setTimeout(r, 20))
      }
    }),
  )
}
await Promise.all(jobs)
fs.writeSync(1, `${JSON.stringify(out)}\n`)
process.exit(0)
