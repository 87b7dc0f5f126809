// Workflows of the corruption matrix (__test__/corruption-matrix.test.mjs), declared alike
// in the child that creates the runs and in the test process that resumes them. One run
// of `matrix` leaves every kind of file and every event type the engine writes on disk:
// steps completed, retried and failed, a completed sleep, a hook that received a payload
// and was disposed, then a live hook and a pending sleep it waits for.
import wf from '../../workflow.js'

const { workflow, step, sleep, createHook, getStepMetadata, FatalError } = wf

const inc = step('matrix-inc', async (x) => x + 1)
const flaky = step('matrix-flaky', async (x) => {
  if (getStepMetadata().attempt === 1) throw new Error('first attempt fails')
  return x * 2
})
const fatal = step('matrix-fatal', async () => {
  throw new FatalError('fatal on purpose')
})

/** Tokens of the hooks of run `n`. */
export const firstToken = (n) => `matrix-first-${n}`
export const secondToken = (n) => `matrix-second-${n}`

async function body(n) {
  const a = await inc(n)
  const b = await flaky(a)
  let f = 'not thrown'
  try {
    await fatal()
  } catch (e) {
    f = e.message
  }
  await sleep('1s')
  const first = createHook({ token: firstToken(n) })
  const p1 = await first
  first.dispose()
  const second = createHook({ token: secondToken(n) })
  const [p2] = await Promise.all([second, sleep('1h')])
  return { n, a, b, f, p1, p2 }
}

/** What a `matrix` run of `n` returns once resumed with payload `{ p: n }` twice. */
export const expected = (n) => ({ n, a: n + 1, b: (n + 1) * 2, f: 'fatal on purpose', p1: { p: n }, p2: { p: n } })

export const matrix = workflow('matrix', body)

/**
 * The same workflow under the name `matrix-late-<i>`: a process resumes the runs of a
 * workflow only once it declared it, so each of these runs waits for its own test case.
 */
export const declareLate = (i) => workflow(`matrix-late-${i}`, body)

export const done = workflow('matrix-done', async (n) => ({ done: n }))

/** A workflow whose code fails once its hook got a payload (declared when needed). */
export const throwsToken = (n) => `matrix-throws-${n}`
export const declareThrows = () =>
  workflow('matrix-throws', async (n) => {
    const payload = await createHook({ token: throwsToken(n) })
    throw new Error(`user code failed on ${JSON.stringify(payload)}`)
  })
