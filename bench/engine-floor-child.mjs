// Engine against the file-system floor (issue 8), run by bench/run.mjs in its own process
// on a fresh data directory under the base directory given (the data disk, or tmpfs):
//
//   node bench/engine-floor-child.mjs <baseDir> [--quick]
//
// In interleaved rounds, on the same directory: the floor — the file writes a step needs
// (3 create-once event files + 1 replaced step file, the sizes the engine's own step files
// have, written by the same native primitives in a loop) — the format's floor (every write
// world-local's format makes per step: the step file created then replaced twice, 3 events,
// the step's terminal lock) and a 1,000-step workflow on the embedded engine, start →
// returnValue. While the workflow runs, a 1 ms interval measures
// the JS thread's longest block (the largest gap between two ticks). Reports over IPC.
import fs from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { median } from './stats.mjs'
import { discard } from './trash.mjs'

const base = process.argv[2]
const quick = process.argv.includes('--quick')
const dataDir = fs.mkdtempSync(path.join(base, 'wfn-bench-floor-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir

const { default: api } = await import('../index.js')
const { default: engine } = await import('../workflow.js')
const { binding } = await import('../lib/native.js')

const STEPS = quick ? 300 : 1000
const ROUNDS = quick ? 2 : 3
const WARMUP_RUNS = quick ? 1 : 3

const increment = engine.step('increment', async (x) => x + 1)
const many = engine.workflow('bench-floor-steps', async (n) => {
  let acc = 0
  for (let i = 0; i < n; i++) acc = await increment(acc)
  return acc
})

/** A 1 ms interval measuring the largest gap between two ticks; `stop()` returns it. */
function gapMeter() {
  let last = performance.now()
  let maxGap = 0
  const tick = setInterval(() => {
    const now = performance.now()
    if (now - last > maxGap) maxGap = now - last
    last = now
  }, 1)
  return {
    stop() {
      clearInterval(tick)
      const now = performance.now()
      return Math.max(maxGap, now - last)
    },
  }
}

/** Starts the workflow and waits for its result, measuring the JS thread's longest block. */
async function runOnce(n) {
  const meter = gapMeter()
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const run = await api.start(many, [n])
  const v = await run.returnValue
  const ms = performance.now() - t0
  const cpu = process.cpuUsage(c0)
  const maxGap = meter.stop()
  if (v !== n) throw new Error(`returnValue ${v}`)
  return { ms, maxGap, cpuMs: (cpu.user + cpu.system) / 1000, runId: run.runId }
}

/** Average sizes of a run's step event files and of its step files. */
function fileSizes(runId) {
  const sizes = (dir, filter) =>
    fs
      .readdirSync(dir)
      .filter((f) => f.startsWith(`${runId}-`) && filter(path.join(dir, f)))
      .map((f) => fs.statSync(path.join(dir, f)).size)
  const ev = sizes(path.join(dataDir, 'events'), (p) => /"eventType": "step_/.test(fs.readFileSync(p, 'utf8')))
  const st = sizes(path.join(dataDir, 'steps'), () => true)
  const avg = (xs) => Math.round(xs.reduce((a, b) => a + b, 0) / xs.length)
  return { event: avg(ev), step: avg(st) }
}

/** The same 1 ms interval in this process with nothing else to do, for `ms`: the longest
 * gap the machine itself causes (scheduling, a virtual machine's stolen time). */
async function idleGap(ms) {
  const meter = gapMeter()
  await new Promise((resolve) => setTimeout(resolve, ms))
  return meter.stop()
}

// Warm-up: runs of the measured size first (the engine's JS reaches its optimised tiers
// only after a few thousand step invocations: a server is measured warm). The first one's
// time is reported as the cold run.
const warm = await runOnce(STEPS)
for (let i = 1; i < WARMUP_RUNS; i++) await runOnce(STEPS)
const { event, step } = fileSizes(warm.runId)
const engineRuns = []
const floors = []
const formatFloors = []
const idleGaps = []
for (let r = 0; r < ROUNDS; r++) {
  floors.push(Number(await binding.fsFloor(path.join(dataDir, `floor-${r}`), STEPS, event, step, false)))
  formatFloors.push(Number(await binding.fsFloor(path.join(dataDir, `format-floor-${r}`), STEPS, event, step, true)))
  engineRuns.push(await runOnce(STEPS))
  idleGaps.push(await idleGap(engineRuns.at(-1).ms))
}
const result = {
  base,
  steps: STEPS,
  eventBytes: event,
  stepBytes: step,
  engineMs: median(engineRuns.map((r) => r.ms)),
  engineRuns: engineRuns.map((r) => r.ms),
  cpuMs: median(engineRuns.map((r) => r.cpuMs)),
  floorMs: median(floors),
  floors,
  formatFloorMs: median(formatFloors),
  formatFloors,
  coldMs: warm.ms,
  maxGapMs: Math.max(...engineRuns.map((r) => r.maxGap)),
  idleGapMs: Math.max(...idleGaps),
}
process.send(result, () => {
  discard(dataDir)
  process.exit(0)
})
