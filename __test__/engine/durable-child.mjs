// A child process for the durability tests: a two-step workflow on the data directory in
// WORKFLOW_LOCAL_DATA_DIR. Syncs are made to fail by the test hook
// WORKFLOW_NATIVE_TEST_FAIL_SYNC (see crates/core/src/world/durable.rs).
//
//   node durable-child.mjs start          → "STARTED <id>" then "RESULT <v>", or "START FAILED …"
//   node durable-child.mjs resume <runId> → resumeRuns(), then "RESULT <v>"
//   node durable-child.mjs inspect <runId> → "STATUS <s>" and "RESULT <v>" (no engine)
//   node durable-child.mjs many <n>       → n runs started one after the other, held at a
//                                            gate, then released together: "STARTED <id>"
//                                            each, then "DONE <id> <v>"
// Every attempt of the step appends "ran <input>" to SIDE_LOG; the workflow prints
// "AFTER <v>" once it has seen the first step's result.
import fs from 'node:fs'
import wf from '../../workflow.js'
import api from '../../index.js'

const say = (line) => fs.writeSync(1, `${line}\n`)
const inc = wf.step('inc', async (i) => {
  fs.appendFileSync(process.env.SIDE_LOG, `ran ${i}\n`)
  return i + 1
})
const twice = wf.workflow('durable-twice', async (x) => {
  const a = await inc(x)
  say(`AFTER ${a}`)
  return await inc(a)
})

let openGate
const gate = new Promise((resolve) => (openGate = resolve))
const gatedInc = wf.step('gated-inc', async (i) => {
  await gate
  return i + 1
})
const gatedTwice = wf.workflow('durable-gated-twice', async (x) => {
  const a = await gatedInc(x)
  return await inc(a)
})

if (process.argv[2] === 'start') {
  let run
  try {
    run = await api.start(twice, [1])
  } catch (e) {
    say(`START FAILED ${JSON.stringify({ name: e.name, code: e.code, path: e.path, message: e.message })}`)
    process.exit(0)
  }
  say(`STARTED ${run.runId}`)
  say(`RESULT ${await run.returnValue}`)
} else if (process.argv[2] === 'many') {
  // N runs at once (the writer then has appends waiting while a group's sync is under
  // way); "DONE <id> <v>" for each result acknowledged
  // Started one after the other (start() i is sync i: the runs wait at the gate, their
  // attempts answered before any sync), then released together.
  const runs = []
  for (let i = 0; i < Number(process.argv[3]); i++) {
    const r = await api.start(gatedTwice, [i * 10])
    runs.push(r)
    say(`STARTED ${r.runId}`)
  }
  openGate()
  await Promise.all(runs.map(async (r) => say(`DONE ${r.runId} ${await r.returnValue}`)))
} else if (process.argv[2] === 'inspect') {
  const run = api.getRun(process.argv[3])
  say(`STATUS ${await run.status}`)
  say(`RESULT ${await run.returnValue}`)
} else {
  const ids = await wf.resumeRuns()
  say(`RESUMED ${ids.join(',')}`)
  say(`RESULT ${await api.getRun(process.argv[3]).returnValue}`)
}
process.exit(0)
