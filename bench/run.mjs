// Side-by-side benchmark: the official `workflow/api` (4.8.9 over @workflow/world-local
// 4.4.1) and workflow-native, in one process, on the same data directory written by the
// official world. Prints a table and writes bench/RESULTS.md.
//
//   node bench/run.mjs [--quick] [--floor-only | --peers-only | --pg-workers-only | --pg-api-only]

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { median, pct, timeEach } from './stats.mjs'
import { discard, openTrash } from './trash.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
// The environment as given, before this script sets its own variables: the peer section's
// children get it (WORKFLOW_NATIVE_SYNC passes through).
// Finished data directories go to the trash, emptied at exit (see trash.mjs); the children
// inherit it (WFN_BENCH_TRASH).
openTrash()
const launchEnv = { ...process.env }
const quick = process.argv.includes('--quick')
// --floor-only: just the engine-vs-floor section (issue 8), printed, RESULTS.md untouched
const floorOnly = process.argv.includes('--floor-only')
// --peers-only: just the side-by-side with DBOS and Restate (issue 12), printed (with its
// RESULTS.md section), RESULTS.md untouched
const peersOnly = process.argv.includes('--peers-only')
// --pg-workers-only: just the engine on PostgreSQL across worker processes (issue 9), printed
if (process.argv.includes('--pg-workers-only')) {
  const { runPgWorkers } = await import('./pg/workers.mjs')
  console.log(`\n${(await runPgWorkers({ quick })).markdown}`)
  process.exit(0)
}
// --pg-api-only: just workflow/api and the engine on PostgreSQL against the official
// world-postgres (issue 9), printed
if (process.argv.includes('--pg-api-only')) {
  const { runPgApi } = await import('./pg/api.mjs')
  console.log(`\n${(await runPgApi({ quick })).markdown}`)
  process.exit(0)
}
if (peersOnly) {
  const { runPeers } = await import('./peers/coordinator.mjs')
  const peers = await runPeers({ quick, env: launchEnv })
  console.log(`\n${peers.markdown}`)
  process.exit(0)
}
const dataDir = path.join(os.tmpdir(), `wfn-bench-${process.pid}`)
fs.rmSync(dataDir, { recursive: true, force: true })
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
process.env.WORKFLOW_LOCAL_RECOVER_ACTIVE_RUNS = '0'

const { createLocalWorld } = await import('@workflow/world-local')
const official = await import('workflow/api')
const ours = await import('../index.js')
const { monotonicFactory } = await import('ulid')

const ulid = monotonicFactory()
const world = createLocalWorld({ dataDir })
const enc = new TextEncoder()
const devl = (text) => enc.encode(`devl${text}`)

async function createRun(status = 'pending') {
  const runId = `wrun_${ulid()}`
  await world.events.create(runId, {
    eventType: 'run_created',
    specVersion: 3,
    eventData: {
      deploymentId: 'dpl_local@4.4.1',
      workflowName: 'workflow//./bench//wf',
      input: devl('[[1,2],1,2]'),
      executionContext: { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } },
    },
  })
  if (status !== 'pending') await world.events.create(runId, { eventType: 'run_started', specVersion: 3 })
  if (status === 'completed') {
    await world.events.create(runId, {
      eventType: 'run_completed',
      specVersion: 3,
      eventData: { output: devl('[{"ok":1},true]') },
    })
  }
  return runId
}

const results = []
function record(name, off, mine, unit, extra = {}) {
  const ratio = off / mine
  results.push({ name, official: off, ours: mine, ratio, unit, ...extra })
  console.log(
    `${name.padEnd(48)} official ${off.toFixed(3).padStart(10)} ${unit}   ours ${mine.toFixed(3).padStart(10)} ${unit}   ${ratio.toFixed(1)}x`,
  )
}

// ------------------------------- issue 8: the engine against the file-system floor
// A child process per file system (the data disk, tmpfs), each on a fresh directory.
const floorRows = []
{
  const { fork } = await import('node:child_process')
  const bases = [os.tmpdir(), '/dev/shm'].filter((b) => fs.existsSync(b))
  for (const base of bases) {
    // The floor writes without syncing: the engine is measured the same way here (its
    // durable cost against the durable floor is the peers section, issue 12).
    const child = fork(path.join(here, 'engine-floor-child.mjs'), [base, ...(quick ? ['--quick'] : [])], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, WORKFLOW_NATIVE_SYNC: 'off' },
    })
    const res = await new Promise((resolve, reject) => {
      child.once('message', resolve)
      child.once('exit', (code) => reject(new Error(`engine floor bench exited (${code})`)))
    })
    await new Promise((r) => child.once('exit', r))
    res.fsType = (() => {
      try {
        return execFileSync('df', ['-T', base], { encoding: 'utf8' }).split('\n')[1].split(/\s+/)[1]
      } catch {
        return 'unknown'
      }
    })()
    floorRows.push(res)
    console.log(
      `${res.steps}-step workflow on ${res.fsType} (${base}): engine ${res.engineMs.toFixed(1)} ms, floor ${res.floorMs.toFixed(1)} ms, ${(res.engineMs / res.floorMs).toFixed(2)}x the floor (format's floor ${res.formatFloorMs.toFixed(1)} ms, ${(res.engineMs / res.formatFloorMs).toFixed(2)}x); JS thread's longest block ${res.maxGapMs.toFixed(1)} ms (idle process, same time: ${res.idleGapMs.toFixed(1)} ms); engine CPU ${res.cpuMs.toFixed(0)} ms; rounds ${res.engineRuns.map((x) => x.toFixed(0)).join(' / ')} ms, cold run ${res.coldMs.toFixed(0)} ms`,
    )
  }
  if (floorOnly) process.exit(0)
}

// ---------------------------- issue 12: side by side with DBOS Transact and Restate
// Before the sections below fill the data disk (see bench/peers/coordinator.mjs).
let peers
{
  const { runPeers } = await import('./peers/coordinator.mjs')
  peers = await runPeers({ quick, env: launchEnv })
}

// ------------------------ issue 9: the engine on PostgreSQL across worker processes
let pgWorkers
{
  const { runPgWorkers } = await import('./pg/workers.mjs')
  pgWorkers = await runPgWorkers({ quick })
}

// ------------- issue 9: workflow/api and the engine on PostgreSQL, against world-postgres
let pgApi
{
  const { runPgApi } = await import('./pg/api.mjs')
  pgApi = await runPgApi({ quick })
}

// ------------------------------------------- issue 4: the embedded engine
// First, in a child process with its own fresh data directory and its own app server,
// before the sections below fill the filesystem (see bench/engine-child.mjs).
let perStep
{
  const { fork } = await import('node:child_process')
  const child = fork(path.join(here, 'engine-child.mjs'), quick ? ['--quick'] : [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const res = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code) => reject(new Error(`engine bench exited (${code})`)))
  })
  await new Promise((r) => child.once('exit', r))
  for (const r of res.records) record(r.name, r.official, r.ours, r.unit, r.extra || {})
  perStep = res.perStep
}

// ------------------------------------------------------------------ status latency
const allRuns = []
for (const target of [10, 1000, 10000]) {
  while (allRuns.length < target) allRuns.push(await createRun(allRuns.length % 3 === 0 ? 'completed' : 'running'))
  const iters = quick ? 300 : 2000
  const pick = (i) => allRuns[(i * 7919) % allRuns.length]
  // warm up both
  for (let i = 0; i < 100; i++) {
    await official.getRun(pick(i)).status
    await ours.getRun(pick(i)).status
  }
  const off = await timeEach(iters, (i) => official.getRun(pick(i)).status)
  const mine = await timeEach(iters, (i) => ours.getRun(pick(i)).status)
  record(`status latency, ${target} runs (median)`, median(off) * 1000, median(mine) * 1000, 'µs', {
    p99official: pct(off, 0.99) * 1000,
    p99ours: pct(mine, 0.99) * 1000,
  })
}

// ------------------------------------------------------------- stream full read
const CHUNKS = quick ? 2000 : 10000
const streamRun = await createRun('running')
const streamName = streamRun.replace('wrun_', 'strm_') + '_user'
{
  const payload = 'x'.repeat(1000)
  const frame = (i) => {
    const body = enc.encode(`devl${JSON.stringify([{ i: 1, s: 2 }, i, payload])}`)
    const out = new Uint8Array(4 + body.length)
    new DataView(out.buffer).setUint32(0, body.length, false)
    out.set(body, 4)
    return out
  }
  for (let i = 0; i < CHUNKS; i += 500) {
    const batch = []
    for (let j = i; j < Math.min(CHUNKS, i + 500); j++) batch.push(frame(j))
    await world.writeToStreamMulti(streamName, streamRun, batch)
  }
  await world.closeStream(streamName, streamRun)
}

async function readAll(api) {
  let n = 0
  let last
  for await (const v of api.getRun(streamRun).getReadable()) {
    n++
    last = v
  }
  if (n !== CHUNKS || last.i !== CHUNKS - 1) throw new Error(`read ${n} chunks, last ${JSON.stringify(last?.i)}`)
}
{
  const reps = quick ? 2 : 3
  await readAll(ours) // warm-up
  const off = await timeEach(reps, () => readAll(official))
  const mine = await timeEach(reps, () => readAll(ours))
  record(`full read, closed ${CHUNKS} x 1 KiB stream (median)`, median(off), median(mine), 'ms', {
    chunksPerSecOurs: Math.round(CHUNKS / (median(mine) / 1000)),
  })
}

// -------------------------------------------------------------------- tail index
{
  const off = await timeEach(quick ? 5 : 20, () => official.getRun(streamRun).getReadable().getTailIndex())
  const mine = await timeEach(quick ? 20 : 200, () => ours.getRun(streamRun).getReadable().getTailIndex())
  const a = await official.getRun(streamRun).getReadable().getTailIndex()
  const b = await ours.getRun(streamRun).getReadable().getTailIndex()
  if (a !== b || b !== CHUNKS - 1) throw new Error(`tail index mismatch ${a} vs ${b}`)
  record(`getTailIndex(), ${CHUNKS}-chunk stream (median)`, median(off), median(mine), 'ms')
  // Cold: a fresh native World each time, so the directory listing is not cached.
  const { createRequire } = await import('node:module')
  const binding = createRequire(import.meta.url)('../lib/loader.js').loadNative()
  const cold = await timeEach(quick ? 5 : 20, () => new binding.NativeWorld(dataDir).streamInfo(streamName))
  record(`getTailIndex(), cold (uncached listing)`, median(off), median(cold), 'ms')
}

// ----------------------------------------------------- completion -> returnValue
async function completionLatency(api, n) {
  const out = []
  for (let i = 0; i < n; i++) {
    const runId = await createRun('running')
    const rv = api.getRun(runId).returnValue
    // let the waiter reach its first check before the completion lands
    await api.getRun(runId).status
    await new Promise((r) => setTimeout(r, 20))
    const t0 = performance.now()
    let t1
    const done = rv.then((v) => {
      t1 = performance.now()
      return v
    })
    await world.events.create(runId, {
      eventType: 'run_completed',
      specVersion: 3,
      eventData: { output: devl('[42]') },
    })
    const v = await done
    if (v !== 42) throw new Error(`returnValue ${v}`)
    out.push(t1 - t0)
  }
  return out
}
{
  const off = await completionLatency(official, quick ? 3 : 10)
  const mine = await completionLatency(ours, quick ? 10 : 50)
  record('completion -> returnValue (median)', median(off), median(mine), 'ms', {
    p90ours: pct(mine, 0.9),
  })
}

// ------------------------------------------- start() against a real WDK 4.8.9 app
// The app (official flow/step endpoints over the official local world, built with the
// official toolchain) runs in a child process on the same data directory; both start()
// functions in this process send it their queue messages.
{
  const { fork } = await import('node:child_process')
  const child = fork(path.join(here, 'app-server.mjs'), [dataDir], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const { baseUrl, workflows } = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code) => reject(new Error(`app server exited (${code})`)))
  })
  process.env.WORKFLOW_LOCAL_BASE_URL = baseUrl
  try {
    const wf = workflows.simple
    const e2e = async (api) => {
      const run = await api.start(wf, [2, 3])
      const v = await run.returnValue
      if (v !== 5) throw new Error(`returnValue ${v}`)
    }
    for (let i = 0; i < 3; i++) await e2e(ours)
    await e2e(official)
    // end to end first, while the app is idle
    const offE = await timeEach(quick ? 3 : 8, () => e2e(official))
    const mineE = await timeEach(quick ? 10 : 40, () => e2e(ours))
    record('start() -> returnValue, no-step workflow (median)', median(offE), median(mineE), 'ms')
    const n = quick ? 30 : 200
    const runs = []
    const off = await timeEach(n, async () => runs.push(await official.start(wf, [1, 2])))
    const mine = await timeEach(n, async () => runs.push(await ours.start(wf, [1, 2])))
    record('start() call latency (median)', median(off) * 1000, median(mine) * 1000, 'µs')
    // let the app finish the runs just started before it goes away
    for (const r of runs) await ours.getRun(r.runId).returnValue


  } finally {
    const exited = new Promise((r) => child.once('exit', r))
    child.send('close')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
}

// -------------------------------------------------------------------- write-up
const cpu = (os.cpus()[0] && os.cpus()[0].model) || 'unknown'
const rustc = (() => {
  try {
    return execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    return 'unknown'
  }
})()
const fsType = (() => {
  try {
    return execFileSync('df', ['-T', os.tmpdir()], { encoding: 'utf8' }).split('\n')[1].split(/\s+/)[1]
  } catch {
    return 'unknown'
  }
})()
const fmt = (x, unit) => `${x < 10 ? x.toFixed(3) : x.toFixed(1)} ${unit}`
const rows = results
  .map(
    (r) =>
      `| ${r.name} | ${r.lowerBound ? '> ' : ''}${fmt(r.official, r.unit)} | ${fmt(r.ours, r.unit)} | **${r.lowerBound ? '> ' : ''}${r.ratio.toFixed(1)}×** |`,
  )
  .join('\n')
const notes = results.filter((r) => r.note).map((r) => `- ${r.name}: ${r.note}`).join('\n')
const extra = results
  .filter((r) => r.p99ours !== undefined || r.chunksPerSecOurs !== undefined || r.p90ours !== undefined)
  .map((r) =>
    r.p99ours !== undefined
      ? `- ${r.name}: p99 official ${r.p99official.toFixed(1)} µs, ours ${r.p99ours.toFixed(1)} µs`
      : r.chunksPerSecOurs !== undefined
        ? `- ${r.name}: ours ${r.chunksPerSecOurs.toLocaleString('en-US')} chunks/s (decoded values)`
        : `- ${r.name}: ours p90 ${r.p90ours.toFixed(2)} ms`,
  )
  .join('\n')
const md = `# Benchmark results

Generated by \`npm run bench\` (\`node bench/run.mjs${quick ? ' --quick' : ''}\`) on ${new Date().toISOString()}.
Official = \`workflow@4.8.9\` \`getRun\` over \`@workflow/world-local@4.4.1\`; ours = workflow-native (release build).
Both run in one Node process, one after the other, on the same data directory written by the official world;
the two engine rows (issue 4) run first, in a child process on a fresh data directory, against the official
runtime served by the test app (official flow and step endpoints) on that same directory, official first.
File-system note: on this VM's ext4 (no journal), creating files gets much slower for minutes after many deletions (the
inode allocator skips recently freed inodes); both implementations pay it, and figures vary between runs. The
benchmark removes no directory while it measures (finished ones are moved aside and removed at its end), so
its own clean-up does not cause that state; the files the workloads themselves replace still do.

| measurement | official | workflow-native | ratio (official / ours) |
|---|---|---|---|
${rows}

### The engine against the file-system floor (issue 8)

The floor is what the disk allows: per step, the file writes a step needs (3 create-once event
files + 1 replaced step file, of the sizes the engine's step files have) written in a loop by the
same native primitives, in the same directory, interleaved with the engine runs (medians of the
rounds). The format's floor is every write world-local's file format makes per step — the step
file created and replaced twice, the 3 events and the step's terminal lock: 7 files against the
floor's 4 — with the same primitives (the engine itself writes the step file once less: its
creation and start travel in one batch). The JS thread's longest block is the largest gap between two ticks of a 1 ms interval
while the workflow runs (the largest over the rounds); "same, idle process" is that interval in the
same process doing nothing for as long, right after: the gaps the machine causes by itself (on this
virtual machine, stolen time and scheduling produce gaps of several ms in an idle process). Engine
CPU is the process's CPU time (all threads): the engine trades CPU for latency — its journal thread
looks for the next batch for 200 µs before sleeping and the JS side looks for answers, one
event-loop turn at a time, for up to 2 ms before it waits to be woken, because a thread wake-up on
this VM costs more than an append.

| file system | steps | engine (start → returnValue) | floor | engine / floor | format's floor | engine / format's floor | JS thread's longest block | same, idle process | engine CPU |
|---|---|---|---|---|---|---|---|---|---|
${floorRows
  .map(
    (r) =>
      `| ${r.fsType} (\`${r.base}\`) | ${r.steps} | ${r.engineMs.toFixed(1)} ms | ${r.floorMs.toFixed(1)} ms | **${(r.engineMs / r.floorMs).toFixed(2)}×** | ${r.formatFloorMs.toFixed(1)} ms | ${(r.engineMs / r.formatFloorMs).toFixed(2)}× | ${r.maxGapMs.toFixed(1)} ms | ${r.idleGapMs.toFixed(1)} ms | ${r.cpuMs.toFixed(0)} ms |`,
  )
  .join('\n')}

Per-round figures: ${floorRows
  .map((r) => `${r.fsType}: engine ${r.engineRuns.map((x) => x.toFixed(0)).join(' / ')} ms (cold run ${r.coldMs === undefined ? '?' : r.coldMs.toFixed(0)} ms), floor ${r.floors.map((x) => x.toFixed(0)).join(' / ')} ms, format's floor ${r.formatFloors.map((x) => x.toFixed(0)).join(' / ')} ms`)
  .join('; ')}.
On ext4 the state of the file system swings within seconds on this VM (file creation 4× to 10×
slower for a while after deletions — the floor of one round and the next differ by up to 8× in
the per-round figures), so the ext4 ratio of one run says little; tmpfs has no such state.
Targets (issue 8): ≤ 5× the floor on tmpfs, ≤ 2× on disk (in its fast state); the JS thread never blocked
for more than 5 ms.

${extra}
${notes}

Targets (issue 2): status ≥ 10× lower latency at 10 / 1,000 / 10,000 runs; full read of a closed
10,000 × 1 KiB stream ≥ 50× faster; \`getTailIndex()\` < 5 ms; completion → \`returnValue\` < 10 ms median.
Targets (issue 3): \`start()\` ≥ 5× faster; start → \`returnValue\` ≥ 10× faster (same app, same data).
Targets (issue 4): a 1,000-step workflow on the embedded engine ≥ 50× faster end to end than the official
runtime (its real flow and step endpoints); a no-step workflow start → \`returnValue\` < 5 ms median.
${perStep ? `Per-step overhead (multi-step time minus no-step time, per step; every step writes step_created,
step_started and step_completed plus its step file, synchronously): official ${perStep.official.toFixed(0)} µs
(over the ${perStep.officialSteps} steps it completed), ours ${perStep.ours.toFixed(0)} µs.` : ''}

${peers.markdown}
Targets (issue 12): faster than both DBOS and Restate on a, b and c, durability on, same disk.

### The embedded engine on PostgreSQL across worker processes (issue 9)

Runs × 3 steps started at once by a client process with no worker (\`start()\` → the run's
\`returnValue\`, woken by NOTIFY), executed by 1, 2 and 4 worker processes (\`startWorker()\`)
on a database of their own on the same server; connections: the most \`pg_stat_activity\` showed
for that database at once (each process: the async pool, the synchronous batch connections and one
listener).

${pgWorkers.markdown}

### workflow/api and the engine on PostgreSQL, against the official world-postgres (issue 9)

${pgApi.markdown}

## Machine
- CPU: ${cpu}, ${os.cpus().length} cores; RAM ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB
- OS: ${os.type()} ${os.release()}; data directory on ${fsType} (${os.tmpdir()})
- Node ${process.version}; ${rustc}
`
fs.writeFileSync(path.join(here, 'RESULTS.md'), md)
discard(dataDir)
console.log(`\nwrote ${path.join(here, 'RESULTS.md')}`)
process.exit(0)
