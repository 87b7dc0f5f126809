// Argument validation of every public function (getReadable/getTailIndex aside: see
// streams.test.mjs). Each bad input goes to our package and, where the official
// `workflow/api` 4.8.9 runs on the same data directory, to the official one too:
//
//  * where the official code has a check of its own (an unsafe id, a missing run id, an
//    unknown hook, an invalid workflow), ours gives the same error name and message;
//  * where it has none (it fails deep inside with "x.startsWith is not a function", or
//    writes the value into the run), ours gives a TypeError (ERR_INVALID_ARG_TYPE) or a
//    RangeError (ERR_OUT_OF_RANGE) naming the argument and what it received, before
//    anything is written.
//
// Whatever ours throws is an Error with a clear message: never a napi conversion message,
// never a bare TypeError from deep inside, and nothing is written for a rejected call.
import {
  createHook,
  createRun,
  createWait,
  dataDir,
  describeError,
  newId,
  official,
  ours,
  ourErrors,
  settle,
  startQueueServer,
} from './helpers/harness.mjs'
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, statSync, existsSync } from 'node:fs'
import path from 'node:path'
import wf from '../workflow.js'

const HUGE = `wrun_${'A'.repeat(100_000)}`
const fn = function someFunction() {}

/** Values that are not run ids / tokens, with labels. */
const BAD = [
  ['42', 42],
  ['Symbol()', Symbol('s')],
  ['{}', {}],
  ['undefined', undefined],
  ['null', null],
  ["''", ''],
  ['a huge string', HUGE],
  ["'../x'", '../x'],
  ["'a\\0b'", 'a\0b'],
  ['10n', 10n],
  ['true', true],
  ['[]', []],
  ['a function', fn],
  ['NaN', NaN],
]

/** Messages that mean a check is missing: napi conversions, crashes deep inside. */
const LEAKS = [
  /Failed to convert/,
  /into rust type/,
  /Cannot read properties of/,
  /is not a function/,
  /is not iterable/,
  /Cannot convert a Symbol/,
  /Cannot destructure/,
  /Do not know how to serialize/,
]

/** Every file and directory under the data directory, with sizes (nothing-written checks). */
function snapshot() {
  const out = []
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name)
      const st = statSync(p)
      out.push(`${path.relative(dataDir, p)}:${st.isDirectory() ? 'dir' : st.size}`)
      if (st.isDirectory()) walk(p)
    }
  }
  walk(dataDir)
  return out.sort().join('\n')
}

function assertClear(e, what) {
  assert.ok(e instanceof Error, `${what}: not an Error (${String(e)})`)
  for (const re of LEAKS) assert.doesNotMatch(e.message, re, `${what}: ${e.name}: ${e.message}`)
  if (e.cause instanceof Error) for (const re of LEAKS) assert.doesNotMatch(e.cause.message, re, `${what} (cause)`)
}

/** Our TypeError for a value of the wrong type. */
function assertArgType(e, name, what) {
  assertClear(e, what)
  assert.equal(e.name, 'TypeError', `${what}: ${e.name}: ${e.message}`)
  assert.equal(e.code, 'ERR_INVALID_ARG_TYPE', `${what}: ${e.message}`)
  assert.ok(e.message.startsWith(`The "${name}" `), `${what}: ${e.message}`)
  assert.match(e.message, / Received /, what)
}

const same = (a, b) => ({ name: a.name, message: a.message }).name === b.name && a.message === b.message

/** Runs `call` on ours (no files written when it fails) and on the official package. */
async function both(call, { write = false } = {}) {
  const before = write ? null : snapshot()
  const mine = await settle(() => call(ours))
  if (!write && !mine.ok) assert.equal(snapshot(), before, 'a rejected call wrote to the data directory')
  const theirs = await settle(() => call(official))
  return { mine, theirs }
}

let server
before(async () => {
  // Queue messages (start, resumeHook) go to a local stand-in, for both packages.
  server = await startQueueServer()
  process.env.PORT = String(new URL(server.url).port)
})
after(async () => {
  delete process.env.PORT
  await server.close()
})

// ------------------------------------------------------------ getRun() and the Run

const RUN_OPS = {
  exists: (api, v) => api.getRun(v).exists,
  status: (api, v) => api.getRun(v).status,
  returnValue: (api, v) => api.getRun(v).returnValue,
  workflowName: (api, v) => api.getRun(v).workflowName,
  createdAt: (api, v) => api.getRun(v).createdAt,
  startedAt: (api, v) => api.getRun(v).startedAt,
  completedAt: (api, v) => api.getRun(v).completedAt,
  cancel: (api, v) => api.getRun(v).cancel(),
  wakeUp: (api, v) => api.getRun(v).wakeUp(),
}

describe('getRun(id): every getter and method', () => {
  for (const [op, call] of Object.entries(RUN_OPS)) {
    for (const [label, v] of BAD) {
      test(`${op} of getRun(${label})`, async () => {
        let run
        assert.doesNotThrow(() => (run = ours.getRun(v)), 'getRun never throws')
        assert.equal(run.runId, v)
        const { mine, theirs } = await both((api) => call(api, v))
        assert.equal(mine.ok, false, `ours resolved with ${String(mine.value)}`)
        assert.equal(theirs.ok, false, 'the official package resolved')
        const e = mine.error
        assertClear(e, op)
        if (typeof v === 'string') {
          if (v === HUGE) {
            // The file system's error: same name and errno code (the message is the I/O
            // error's own text, see the README).
            const inner = op === 'wakeUp' ? e.cause : e
            const theirInner = op === 'wakeUp' ? theirs.error.cause : theirs.error
            assert.equal(inner.name, theirInner.name)
            assert.equal(inner.code, 'ENAMETOOLONG')
            assert.equal(inner.code, theirInner.code)
          } else {
            // The World's own checks (unsafe id, missing id): the official error.
            assert.deepEqual(describeError(e), describeError(theirs.error))
            if (op === 'wakeUp') assert.deepEqual(describeError(e.cause), describeError(theirs.error.cause))
          }
        } else if (op === 'cancel' && (v === undefined || v === null)) {
          assert.deepEqual(describeError(e), describeError(theirs.error))
          assert.equal(e.message, 'runId is required for non-run_created events')
        } else if (op === 'wakeUp') {
          // "Failed to wake up run <id>: …", as the official wakeUpRun words every
          // failure, with our TypeError as the cause (never a bare TypeError from
          // formatting a Symbol into the message).
          assert.equal(e.name, 'Error')
          assert.ok(e.message.startsWith(`Failed to wake up run ${typeof v === 'symbol' ? v.toString() : String(v)}: The "runId" argument`), e.message)
          assertArgType(e.cause, 'runId', 'wakeUp cause')
          assert.equal(e.message.slice(e.message.indexOf(': ') + 2), e.cause.message)
        } else {
          assertArgType(e, 'runId', op)
          // The official package has no check here: it fails inside (same class).
          assert.equal(theirs.error.name === 'TypeError' || theirs.error.name === 'UnsafeEntityIdError', true)
        }
      })
    }
  }

  test('nothing was written outside the data directory', () => {
    for (const p of ['x.json', 'x', 'runs', 'events']) {
      assert.equal(existsSync(path.join(dataDir, '..', p)) && p === 'x.json', false, p)
    }
  })
})

describe('wakeUp(options)', () => {
  let runId
  let corr
  before(async () => {
    runId = await createRun({ status: 'running' })
    corr = await createWait(runId)
  })

  const CASES = [
    ['42', 42, 'options'],
    ["'abc'", 'abc', 'options'],
    ['{ correlationIds: "abc" }', { correlationIds: 'abc' }, 'options.correlationIds'],
    ['{ correlationIds: 5 }', { correlationIds: 5 }, 'options.correlationIds'],
    ['{ correlationIds: { length: 1 } }', { correlationIds: { length: 1 } }, 'options.correlationIds'],
    ['{ correlationIds: [1] }', { correlationIds: [1] }, 'options.correlationIds[0]'],
    ['{ correlationIds: ["x", Symbol()] }', { correlationIds: ['x', Symbol('s')] }, 'options.correlationIds[1]'],
  ]
  for (const [label, options, name] of CASES) {
    test(`wakeUp(${label}) is refused, the sleep is left alone`, async () => {
      const mine = await settle(() => ours.getRun(runId).wakeUp(options))
      assert.equal(mine.ok, false)
      assert.equal(mine.error.name, 'Error')
      assert.ok(mine.error.message.startsWith(`Failed to wake up run ${runId}: The "${name}" `), mine.error.message)
      assertArgType(mine.error.cause, name, label)
      // (The official wakeUpRun ignores most of these and wakes every sleep, or none:
      // not compared.) The sleep is still pending: a valid call stops it.
    })
  }

  test('valid options still work: null, {}, [] and a list of ids', async () => {
    for (const options of [null, {}, { correlationIds: [] }, { correlationIds: null }]) {
      const other = await createRun({ status: 'running' })
      await createWait(other)
      assert.deepEqual(await ours.getRun(other).wakeUp(options), { stoppedCount: 1 })
    }
    assert.deepEqual(await ours.getRun(runId).wakeUp({ correlationIds: ['nope', corr] }), { stoppedCount: 1 })
  })
})

// -------------------------------------------------------------- hooks

describe('getHookByToken / resumeHook / resumeWebhook (token)', () => {
  const OPS = {
    getHookByToken: (api, v) => api.getHookByToken(v),
    resumeHook: (api, v) => api.resumeHook(v, { x: 1 }),
    resumeWebhook: (api, v) => api.resumeWebhook(v, new Request('http://x.test/')),
  }
  for (const [op, call] of Object.entries(OPS)) {
    for (const [label, v] of BAD) {
      test(`${op}(${label})`, async () => {
        const { mine, theirs } = await both((api) => call(api, v))
        assert.equal(mine.ok, false)
        assert.equal(theirs.ok, false)
        const e = mine.error
        assertClear(e, op)
        if (typeof v === 'string') {
          assert.deepEqual(describeError(e), describeError(theirs.error))
          assert.ok(ourErrors.HookNotFoundError.is(e))
        } else if (op !== 'resumeHook') {
          // The official World looks the value up as a token and finds nothing.
          assertArgType(e, 'token', op)
        } else if (v !== null && typeof v === 'object') {
          assertArgType(e, 'tokenOrHook.runId', op)
        } else {
          assertArgType(e, 'tokenOrHook', op)
        }
      })
    }
  }
})

describe('resumeHook(hook object) and resumeWebhook(token, request)', () => {
  let hook
  let token
  before(async () => {
    const runId = await createRun({ status: 'running' })
    token = `tok-${newId('t')}`
    await createHook(runId, { token, isWebhook: true })
    hook = await official.getHookByToken(token)
  })

  // Fields of the wrong type: ours refuses them; the official code fails inside or
  // writes them into the hook_received event.
  const TYPE_CASES = [
    ['{}', () => ({}), 'tokenOrHook.runId'],
    ['runId: 42', (h) => ({ ...h, runId: 42 }), 'tokenOrHook.runId'],
    ['hookId missing', (h) => ({ ...h, hookId: undefined }), 'tokenOrHook.hookId'],
    ['hookId: 42', (h) => ({ ...h, hookId: 42 }), 'tokenOrHook.hookId'],
    ['token: 42', (h) => ({ ...h, token: 42 }), 'tokenOrHook.token'],
    ["specVersion: 'x'", (h) => ({ ...h, specVersion: 'x' }), 'tokenOrHook.specVersion'],
  ]
  for (const [label, make, name] of TYPE_CASES) {
    test(`resumeHook({ ${label} }) is refused before anything is written`, async () => {
      const before = snapshot()
      const mine = await settle(() => ours.resumeHook(make(hook), { x: 1 }))
      assert.equal(mine.ok, false)
      assertArgType(mine.error, name, label)
      assert.equal(snapshot(), before)
    })
  }

  // Values the World checks: the official errors.
  const WORLD_CASES = [
    ["runId: '../x'", (h) => ({ ...h, runId: '../x' })],
    ['an unknown run', (h) => ({ ...h, runId: 'wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV' })],
    ["hookId: '../x'", (h) => ({ ...h, hookId: '../x' })],
    ['an unknown hook', (h) => ({ ...h, hookId: 'hook_01ARZ3NDEKTSV4RRFFQ69G5FAV' })],
  ]
  for (const [label, make] of WORLD_CASES) {
    test(`resumeHook({ ${label} }): the official error`, async () => {
      const { mine, theirs } = await both((api) => api.resumeHook(make(hook), { x: 1 }))
      assert.equal(mine.ok, false)
      assert.equal(theirs.ok, false)
      assertClear(mine.error, label)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    })
  }

  test('an unserializable payload: the official serialization error', async () => {
    for (const payload of [() => 1, Symbol('p')]) {
      const { mine, theirs } = await both((api) => api.resumeHook(token, payload))
      assert.equal(mine.ok, false)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    }
  })

  for (const [label, request] of [
    ['undefined', undefined],
    ['{}', {}],
    ["'x'", 'x'],
    ['a Response', new Response('x')],
  ]) {
    test(`resumeWebhook(token, ${label}): the request must be a Request`, async () => {
      const before = snapshot()
      const mine = await settle(() => ours.resumeWebhook(token, request))
      assert.equal(mine.ok, false)
      assertArgType(mine.error, 'request', label)
      assert.equal(snapshot(), before)
    })
  }
})

// ------------------------------------------------------------------- start()

describe('start()', () => {
  const W = 'workflow//./src/x//wf'
  test('an invalid workflow: the official WorkflowRuntimeError', async () => {
    for (const [, v] of BAD) {
      const { mine, theirs } = await both((api) => api.start(v, []))
      assert.equal(mine.ok, false)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
      assert.ok(ourErrors.WorkflowRuntimeError.is(mine.error))
    }
  })

  const TYPE_CASES = [
    ['workflowId: 42', [{ workflowId: 42 }, []], 'workflow.workflowId'],
    ['workflowId: Symbol()', [{ workflowId: Symbol('s') }, []], 'workflow.workflowId'],
    ['workflowId: {}', [{ workflowId: {} }, []], 'workflow.workflowId'],
    ['workflowId: true', [{ workflowId: true }, []], 'workflow.workflowId'],
    ['argsOrOptions: null', [{ workflowId: W }, null], 'argsOrOptions'],
    ['deploymentId: 42', [{ workflowId: W }, [], { deploymentId: 42 }], 'options.deploymentId'],
    ['deploymentId: {}', [{ workflowId: W }, { deploymentId: {} }], 'options.deploymentId'],
    ["specVersion: 'x'", [{ workflowId: W }, [], { specVersion: 'x' }], 'options.specVersion'],
    ['world: 42', [{ workflowId: W }, [], { world: 42 }], 'options.world'],
    ['world: {}', [{ workflowId: W }, [], { world: {} }], 'options.world'],
  ]
  for (const [label, args, name] of TYPE_CASES) {
    test(`start(${label}) is refused before anything is written`, async () => {
      const before = snapshot()
      const mine = await settle(() => ours.start(...args))
      assert.equal(mine.ok, false)
      assertArgType(mine.error, name, label)
      assert.equal(snapshot(), before)
    })
  }
  for (const spec of [0, -1, 1.5, 99, NaN, Infinity]) {
    test(`start(options.specVersion: ${spec}) is out of range`, async () => {
      const before = snapshot()
      const mine = await settle(() => ours.start({ workflowId: W }, [], { specVersion: spec }))
      assert.equal(mine.ok, false)
      assert.ok(mine.error instanceof RangeError, `${mine.error.name}: ${mine.error.message}`)
      assert.equal(mine.error.code, 'ERR_OUT_OF_RANGE')
      assert.match(mine.error.message, /^The value of "options\.specVersion" is out of range\. It must be an integer from 1 to 3\. Received /)
      assert.equal(snapshot(), before)
    })
  }

  // After all of ours: the official start() may go on writing after it settled, which
  // must not land between one of our snapshots and the next.
  test('the official start() fails deep inside or writes a run no reader accepts, for each of these', async () => {
    for (const [label, args] of TYPE_CASES) {
      const theirs = await settle(async () => {
        const run = await official.start(...args)
        return run.status
      })
      assert.equal(theirs.ok, false, `the official start(${label}) produced a readable run`)
    }
  })

  test('what the official start() ignores, ours ignores too: non-object second and third arguments', async () => {
    for (const args of [[42], ['abc'], [Symbol('s')], [[], 42], [[], 'abc'], [[], null]]) {
      const run = await ours.start({ workflowId: W }, ...args)
      assert.equal(await run.status, 'pending')
      const theirs = await official.start({ workflowId: W }, ...args)
      assert.equal(await theirs.status, 'pending')
    }
  })

  // Last in this block: both packages' start() of an invalid name writes run_created and
  // may go on writing after it settles (the official's queue), which must not land
  // between two snapshots of the refusal tests above.
  test('an invalid workflow name: the official error (after run_created, as the official)', async () => {
    for (const id of ['not a name', 'a\0b']) {
      const { mine, theirs } = await both((api) => api.start({ workflowId: id }, []), { write: true })
      assert.equal(mine.ok, false)
      assert.deepEqual(describeError(mine.error), describeError(theirs.error))
    }
  })
})

// ------------------------------------------------------- workflow-native/workflow

describe('workflow-native/workflow', () => {
  test('workflow() and step(): name, fn and options', () => {
    const noop = async () => {}
    for (const [decl, kind] of [
      [wf.workflow, 'Workflow'],
      [wf.step, 'Step'],
    ]) {
      for (const [label, v] of BAD) {
        if (typeof v === 'string') {
          // '../x' is a valid name (not a path: it only appears inside the workflow id)
          if (v === HUGE || v === '../x') continue
          assert.throws(() => decl(v, noop), (e) => {
            assertClear(e, label)
            assert.equal(e.name, 'TypeError')
            assert.ok(e.message.startsWith(`${kind} name must be a non-empty string`), e.message)
            return true
          })
        } else {
          assert.throws(() => decl(v, noop), (e) => (assertArgType(e, 'name', `${kind} ${label}`), true))
        }
        if (v !== undefined && v !== null && typeof v !== 'function') {
          assert.throws(() => decl('ok-name', v), (e) => (assertArgType(e, 'fn', `${kind} fn ${label}`), true))
        }
        if (v !== undefined && v !== null && typeof v !== 'object') {
          assert.throws(() => decl(`v-${kind}`, noop, v), (e) => (assertArgType(e, 'options', `${kind} options ${label}`), true))
        }
        if (v !== undefined && v !== null && typeof v !== 'string') {
          assert.throws(() => decl(`v-${kind}`, noop, { id: v }), (e) => (assertArgType(e, 'options.id', `${kind} id ${label}`), true))
        }
      }
    }
    assert.throws(() => wf.step('s', noop, { maxRetries: -1 }), TypeError)
    // null options are no options
    assert.equal(typeof wf.step('null-options', noop, null), 'function')
    // a huge name is refused with a message of bounded size
    assert.throws(() => wf.workflow(`x y${'z'.repeat(100_000)}`, noop), (e) => e.message.length < 300)
  })

  test('useVirtualTime(options)', () => {
    for (const v of [42, 'auto', Symbol('s'), true]) {
      assert.throws(() => wf.useVirtualTime(v), (e) => (assertArgType(e, 'options', String(v?.toString?.())), true))
    }
    for (const auto of ['no', 1, null]) {
      assert.throws(() => wf.useVirtualTime({ auto }), (e) => (assertArgType(e, 'options.auto', String(auto)), true))
    }
    wf.useRealTime()
  })

  test('advanceTime(duration): the errors sleep() gives for a bad duration', async () => {
    wf.useVirtualTime({ auto: false })
    try {
      for (const v of [Symbol('s'), undefined, null, {}, [], 10n, true, fn]) {
        await assert.rejects(wf.advanceTime(v), (e) => (assertArgType(e, 'duration', String(typeof v)), true))
      }
      // The official sleep() reads durations with @workflow/utils' parseDurationToDate.
      const { parseDurationToDate } = await import('@workflow/utils')
      for (const v of [-1, Infinity, NaN, 'soon', '', '-5s', 'x'.repeat(200)]) {
        const expected = await settle(() => parseDurationToDate(v))
        assert.equal(expected.ok, false)
        await assert.rejects(wf.advanceTime(v), (e) => {
          assert.deepEqual(describeError(e), describeError(expected.error))
          return true
        })
      }
      await assert.rejects(wf.advanceTime(1e300), (e) => e instanceof RangeError && e.code === 'ERR_OUT_OF_RANGE')
      await wf.advanceTime('1s')
      await wf.advanceTime(5)
    } finally {
      wf.useRealTime()
    }
  })

  test('nextSleep(runOrId)', async () => {
    for (const [label, v] of BAD) {
      if (typeof v === 'string') continue
      const name = v !== null && typeof v === 'object' ? 'runOrId.runId' : 'runOrId'
      await assert.rejects(wf.nextSleep(v), (e) => (assertArgType(e, name, label), true))
    }
    // a run not executing here: nothing to wait for
    await wf.nextSleep('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV')
    await wf.nextSleep({ runId: 'wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV' })
  })

  test('defineHook(options)', async () => {
    assert.throws(() => wf.defineHook(42), (e) => (assertArgType(e, 'options', 'defineHook'), true))
    // resume() checks its token like resumeHook()
    await assert.rejects(wf.defineHook().resume(42, {}), (e) => (assertArgType(e, 'tokenOrHook', 'resume'), true))
  })

  test('inside a run: createHook/createWebhook options and getWritable({ namespace })', async () => {
    const cases = {
      hookToken: () => wf.createHook({ token: 42 }),
      hookOptions: () => wf.createHook('tok'),
      webhookOptions: () => wf.createWebhook(42),
    }
    const probe = wf.step('validation-probe', async (ns) => {
      try {
        wf.getWritable({ namespace: ns })
        return 'accepted'
      } catch (e) {
        return { name: e.name, message: e.message, code: e.code }
      }
    })
    const body = wf.workflow('validation-body', async (which, ns) => {
      if (which === 'writable') return probe(ns)
      try {
        cases[which]()
        return 'accepted'
      } catch (e) {
        return { name: e.name, message: e.message, code: e.code }
      }
    })
    const expectations = [
      ['hookToken', 'options.token'],
      ['hookOptions', 'options'],
      ['webhookOptions', 'options'],
    ]
    for (const [which, name] of expectations) {
      const r = await (await ours.start(body, [which])).returnValue
      assert.equal(r.code, 'ERR_INVALID_ARG_TYPE', `${which}: ${JSON.stringify(r)}`)
      assert.ok(r.message.startsWith(`The "${name}" `), r.message)
    }
    // The official getWritable() hands the namespace to Buffer.from: the same TypeError.
    for (const ns of [123, true, {}]) {
      const r = await (await ours.start(body, ['writable', ns])).returnValue
      let expected
      try {
        Buffer.from(ns, 'utf-8')
      } catch (e) {
        expected = { name: e.name, message: e.message, code: e.code }
      }
      assert.deepEqual(r, expected)
    }
    // Array-likes the official code would encode as bytes: refused too.
    const arr = await (await ours.start(body, ['writable', [104, 105]])).returnValue
    assert.equal(arr.code, 'ERR_INVALID_ARG_TYPE')
    assert.ok(arr.message.startsWith('The "options.namespace" property must be of type string.'), arr.message)
    // Falsy namespaces are the default stream, as in the official code.
    for (const ns of [undefined, null, '', 0, false]) {
      assert.equal(await (await ours.start(body, ['writable', ns])).returnValue, 'accepted')
    }
  })
})
