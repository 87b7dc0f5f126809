// workflow-native demo: a run written by the *official* Workflow DevKit world in another
// process, observed live through workflow-native's getRun():
//   - the run's stream is tailed as chunks arrive,
//   - returnValue resolves the moment the other process writes the completion.
//
//   npm run demo

import { fork } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { getRun } from '../index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'workflow-native-demo-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir // read at first use, not at import
const t0 = performance.now()
const stamp = () => `+${(performance.now() - t0).toFixed(1).padStart(7)} ms`

console.log(`data directory: ${dataDir}`)
const writer = fork(path.join(here, 'writer.mjs'), [dataDir], { stdio: 'inherit' })
const runId = await new Promise((resolve) => writer.once('message', (m) => resolve(m.runId)))

const run = getRun(runId)
console.log(`${stamp()} run ${runId}`)
console.log(`${stamp()} status=${await run.status} workflow=${await run.workflowName} startedAt=${(await run.startedAt)?.toISOString()}`)

// The writer reports (over IPC, which is slower than the file watcher) when it wrote the
// completion, in its own clock; both clocks share the same epoch via timeOrigin.
const completionWritten = new Promise((resolve) =>
  writer.on('message', (m) => m.completedAt && resolve(m.completedAt + m.timeOrigin)),
)

const tail = (async () => {
  const stream = run.getReadable()
  for await (const chunk of stream) {
    console.log(`${stamp()} stream chunk #${chunk.n}: ${JSON.stringify(chunk.text)} (at ${chunk.at.toISOString()})`)
  }
  console.log(`${stamp()} stream closed; tail index ${await run.getReadable().getTailIndex()}`)
})()

const value = await run.returnValue
const resolvedAt = performance.now() + performance.timeOrigin
await tail
console.log(`${stamp()} returnValue:`, value)
console.log(
  `${stamp()} returnValue resolved ${(resolvedAt - (await completionWritten)).toFixed(2)} ms after the other process started writing the completion`,
)
console.log(`${stamp()} status=${await run.status} completedAt=${(await run.completedAt).toISOString()}`)

// The last 3 chunks, re-read from the closed stream:
const last = []
for await (const chunk of run.getReadable({ startIndex: -3 })) last.push(chunk.n)
console.log(`${stamp()} getReadable({ startIndex: -3 }) ->`, last)

await new Promise((r) => writer.once('exit', r))
fs.rmSync(dataDir, { recursive: true, force: true })
