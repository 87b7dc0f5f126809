// A durable workflow declared with workflow-native (no compiler, no directives): it writes
// a tick to the run's stream, then pauses (a durable sleep, or until someone resumes its
// hook), and again, `ticks` times. The stream is read live by the page through
// app/api/runs/[runId]/stream.
import { workflow, step, sleep, createHook, getWritable, getWorkflowMetadata } from 'workflow-native/workflow'

export type Tick = { n: number; of: number; text: string; at: string }

export type TickerInput = {
  /** how many ticks to write */
  ticks: number
  /** pause between two ticks: a durable sleep ('1s', '5m', …) */
  pause?: string
  /** wait for the `continue-<runId>` hook instead of sleeping */
  stepByStep?: boolean
}

const emit = step('emit', async (n: number, of: number) => {
  const tick: Tick = { n, of, text: `tick ${n} of ${of}`, at: new Date().toISOString() }
  const writer = getWritable<Tick>().getWriter()
  await writer.write(tick)
  writer.releaseLock()
  return tick.at
})

export const ticker = workflow('ticker', async ({ ticks, pause = '1s', stepByStep = false }: TickerInput) => {
  const { workflowRunId } = getWorkflowMetadata()
  // One hook for the whole run: each resume delivers one payload.
  const next = stepByStep ? createHook<{ note?: string }>({ token: `continue-${workflowRunId}` })[Symbol.asyncIterator]() : undefined
  const times: string[] = []
  for (let n = 1; n <= ticks; n++) {
    times.push(await emit(n, ticks))
    if (n === ticks) break
    if (next) await next.next()
    else await sleep(pause)
  }
  // The stream is not closed: its readers end because the run ends.
  return { ticks, first: times[0], last: times[times.length - 1] }
})
