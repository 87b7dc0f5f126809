// The peer benchmark's workloads, identical for every system (issue 12), and the child
// side of the coordinator's protocol. A child script declares, on its own system, two
// workflows — `steps(n)`: n sequential trivial steps (each returns its input + 1, starting
// from 0, so the result is n); `empty(x)`: no step, returns x — and gives `runChild` a
// function per workflow that starts one run and resolves with its result:
//
//   (a) one `steps(1000)`, start → result, wall time;
//   (b) `empty(i)` 50 times one after the other, start → result: median and p90;
//   (c) 500 `steps(3)` started in the same tick; runs/s from the first start to the last
//       result.
//
// A child runs a warm-up pass of all three (discarded), then the measured pass, and
// reports over IPC. The coordinator (coordinator.mjs) starts a fresh child per system and
// round.
import { performance } from 'node:perf_hooks'
import { median, pct } from '../stats.mjs'

export const SIZES = {
  full: { steps: 1000, empties: 50, concurrent: 500, concurrentSteps: 3 },
  quick: { steps: 200, empties: 20, concurrent: 100, concurrentSteps: 3 },
}

export const sizesFromArgv = (argv = process.argv) => (argv.includes('--quick') ? SIZES.quick : SIZES.full)

function check(got, want, what) {
  if (got !== want) throw new Error(`${what}: result ${JSON.stringify(got)}, expected ${want}`)
}

/**
 * Runs the three workloads once on a system: `sys.steps(n)` and `sys.empty(x)` start one
 * run and resolve with its result.
 */
export async function runWorkloads(sys, sz) {
  let t = performance.now()
  check(await sys.steps(sz.steps), sz.steps, `(a) ${sz.steps}-step workflow`)
  const aMs = performance.now() - t

  const bMs = []
  for (let i = 0; i < sz.empties; i++) {
    t = performance.now()
    check(await sys.empty(i), i, '(b) no-step workflow')
    bMs.push(performance.now() - t)
  }

  t = performance.now()
  const results = await Promise.all(Array.from({ length: sz.concurrent }, () => sys.steps(sz.concurrentSteps)))
  const cMs = performance.now() - t
  for (const v of results) check(v, sz.concurrentSteps, `(c) ${sz.concurrentSteps}-step workflow`)

  return {
    aMs,
    bMedianMs: median(bMs),
    bP90Ms: pct(bMs, 0.9),
    cMs,
    cRunsPerSec: sz.concurrent / (cMs / 1000),
  }
}

/** Sends one message to the coordinator, resolving once it is handed to the channel (run
 * alone, without a coordinator: prints it). */
export function report(msg) {
  return new Promise((resolve) => {
    if (!process.send) {
      console.log(JSON.stringify(msg, null, 1))
      return resolve()
    }
    process.send(msg, () => resolve())
  })
}

/**
 * The child's life: `setup()` brings the system up and returns `{ sys, info, teardown }`;
 * then a warm-up pass and the measured pass; `teardown()` runs whatever happened. Resources
 * a crash could leave behind are announced early with `report({ type: 'resource', ... })`
 * by the setup, so the coordinator can clean them up if this process dies.
 */
export async function runChild(setup) {
  const sz = sizesFromArgv()
  let teardown
  let exitCode = 0
  try {
    const up = await setup()
    teardown = up.teardown
    const warmup = await runWorkloads(up.sys, sz)
    const measured = await runWorkloads(up.sys, sz)
    await report({ type: 'result', sizes: sz, warmup, measured, info: up.info || {} })
  } catch (e) {
    exitCode = 1
    await report({ type: 'error', message: e && e.stack ? e.stack : String(e) })
  } finally {
    if (teardown) {
      try {
        await teardown()
      } catch (e) {
        exitCode = 1
        await report({ type: 'error', message: `teardown: ${e && e.stack ? e.stack : e}` })
      }
    }
  }
  process.exit(exitCode)
}
