// events.create for every event type: the same sequence written once through the
// official world-local 4.4.1 (`world.events.create`) and once through our
// `NativeWorld#createEventSync`, each on its own run in the same data directory. After
// every event the files of both runs (run, steps, hooks, token claims, waits, events,
// lock files) are compared byte for byte modulo ids and timestamps, the results too,
// and at the end the official World reads our files back exactly as its own.
import { dataDir, listDir, newId, newRunId, readText, shape, world, exists, file } from './helpers/harness.mjs'
import { test, describe, before } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { NativeWorld } = require('../lib/loader.js').loadNative()
const native = new NativeWorld(dataDir)

const MARKER = require('../lib/loader.js').loadNative().errorMarker()
const sha256 = (s) => createHash('sha256').update(s).digest('hex')
const bytes = (s) => new TextEncoder().encode(s)

/** world-local's on-disk JSON encoding (Uint8Array → {__type, data}; Dates → ISO). */
const encode = (v) =>
  JSON.stringify(v, (_k, x) =>
    x instanceof Uint8Array ? { __type: 'Uint8Array', data: Buffer.from(x).toString('base64') } : x,
  )

/** The error data the core produced (name, message), straight from the binding. */
function nativeError(e) {
  if (e && typeof e.message === 'string' && e.message.startsWith(MARKER)) {
    const d = JSON.parse(e.message.slice(MARKER.length))
    return { name: d.name, message: d.message, ...(d.token !== undefined ? { token: d.token } : {}) }
  }
  return { name: e && e.name, message: e && e.message }
}
const officialError = (e) => ({ name: e.name, message: e.message, ...(e.token !== undefined ? { token: e.token } : {}) })

const writers = {
  official: async (runId, req) => {
    const r = await world.events.create(runId, req)
    return JSON.parse(encode({ event: r.event, run: r.run, step: r.step, hook: r.hook, wait: r.wait }))
  },
  ours: async (runId, req) => JSON.parse(native.createEventSync(runId, encode(req))),
}

async function attempt(who, runId, req) {
  try {
    return { ok: true, value: await writers[who](runId, req) }
  } catch (e) {
    return { ok: false, error: who === 'ours' ? nativeError(e) : officialError(e) }
  }
}

/** Ids of one twin: the run, its steps, hooks, waits and tokens. */
function twin() {
  const runId = newRunId()
  const ids = {
    runId,
    step1: newId('step'),
    step2: newId('step'),
    hook1: newId('hook'),
    hook2: newId('hook'),
    hook3: newId('hook'),
    wait1: newId('wait'),
    wait2: newId('wait'),
  }
  ids.tokA = `tok-a-${runId}`
  ids.tokB = `tok-b-${runId}`
  return ids
}

function replacements(t) {
  const r = {}
  for (const [k, v] of Object.entries(t)) r[v] = `<${k}>`
  r[sha256(t.tokA)] = '<sha:tokA>'
  r[sha256(t.tokB)] = '<sha:tokB>'
  r[dataDir] = '<DATA>'
  return r
}

/** Every file of the twin, in name order, as [name, text] with ids replaced. */
function filesOf(t) {
  const rep = replacements(t)
  const out = []
  const add = (dir, names) => {
    for (const n of names.sort()) {
      const rel = [...dir, n]
      const text = readText(...rel)
      out.push([JSON.parse(shape(rel.join('/'), rep)), shape(text, rep)])
    }
  }
  add(['runs'], listDir('runs').filter((n) => n === `${t.runId}.json`))
  add(['steps'], listDir('steps').filter((n) => n.startsWith(`${t.runId}-`)))
  add(['waits'], listDir('waits').filter((n) => n.startsWith(`${t.runId}-`)))
  add(['events'], listDir('events').filter((n) => n.startsWith(`${t.runId}-`)))
  add(['hooks'], listDir('hooks').filter((n) => [t.hook1, t.hook2, t.hook3].some((h) => n === `${h}.json`)))
  const claims = [t.tokA, t.tokB].map((x) => `${sha256(x)}.json`)
  add(['hooks', 'tokens'], listDir('hooks', 'tokens').filter((n) => claims.includes(n)))
  add(['.locks', 'steps'], listDir('.locks', 'steps').filter((n) => n.startsWith(`${t.runId}-`)))
  add(['.locks', 'waits'], listDir('.locks', 'waits').filter((n) => n.startsWith(`${t.runId}-`)))
  add(['.locks', 'hooks'], listDir('.locks', 'hooks').filter((n) => [t.hook1, t.hook2, t.hook3].some((h) => n.startsWith(`${h}.`))))
  return out
}

const WF = 'workflow//./src/workflows/events//eventsWorkflow'
const CTX = { traceCarrier: {}, workflowCoreVersion: '4.8.9', features: { encryption: false } }
const err = (message) => ({ message, stack: `Error: ${message}\n    at step (step.js:1:1)` })

/** The event sequence; `ending` picks the terminal event. */
function sequence(t, ending) {
  const past = new Date(Date.now() - 60_000)
  return [
    ['run_created', t.runId, { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'dpl_local@4.4.1', workflowName: WF, input: bytes('devl[[1,2],1,2]'), executionContext: CTX } }],
    ['run_started', t.runId, { eventType: 'run_started', specVersion: 3 }],
    ['run_started again (idempotent)', t.runId, { eventType: 'run_started', specVersion: 3 }],
    ['step_created 1', t.runId, { eventType: 'step_created', specVersion: 3, correlationId: t.step1, eventData: { stepName: 'step//./s//one', input: bytes('devl[[]]') } }],
    ['step_started 1', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step1 }],
    ['step_retrying 1', t.runId, { eventType: 'step_retrying', specVersion: 3, correlationId: t.step1, eventData: { error: err('flaky'), stack: 'Error: flaky\n    at one', retryAfter: past } }],
    ['step_started 1 (attempt 2)', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step1 }],
    ['step_completed 1', t.runId, { eventType: 'step_completed', specVersion: 3, correlationId: t.step1, eventData: { result: bytes('devl[42]') } }],
    ['step_created 2', t.runId, { eventType: 'step_created', specVersion: 3, correlationId: t.step2, eventData: { stepName: 'step//./s//two', input: bytes('devl[[3]]') } }],
    ['step_started 2', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step2 }],
    ['step_failed 2', t.runId, { eventType: 'step_failed', specVersion: 3, correlationId: t.step2, eventData: { error: err('fatal'), stack: 'Error: fatal\n    at two' } }],
    ['hook_created 1', t.runId, { eventType: 'hook_created', specVersion: 3, correlationId: t.hook1, eventData: { token: t.tokA, metadata: bytes('devl[{"a":1}]'), isWebhook: false } }],
    ['hook_received 1', t.runId, { eventType: 'hook_received', specVersion: 3, correlationId: t.hook1, eventData: { token: t.tokA, payload: bytes('devl["hi"]') } }],
    ['hook_disposed 1', t.runId, { eventType: 'hook_disposed', specVersion: 3, correlationId: t.hook1 }],
    ['hook_created 2 (webhook, no flag)', t.runId, { eventType: 'hook_created', specVersion: 3, correlationId: t.hook2, eventData: { token: t.tokB } }],
    ['hook_created 3 (token conflict)', t.runId, { eventType: 'hook_created', specVersion: 3, correlationId: t.hook3, eventData: { token: t.tokB, isWebhook: true } }],
    ['wait_created 1', t.runId, { eventType: 'wait_created', specVersion: 3, correlationId: t.wait1, eventData: { resumeAt: new Date('2040-01-01T00:00:00.000Z') } }],
    ['wait_completed 1', t.runId, { eventType: 'wait_completed', specVersion: 3, correlationId: t.wait1, eventData: { resumeAt: new Date('2040-01-01T00:00:00.000Z') } }],
    ['wait_created 2', t.runId, { eventType: 'wait_created', specVersion: 3, correlationId: t.wait2, eventData: { resumeAt: new Date(Date.now() + 3_600_000) } }],
    ...(ending === 'completed'
      ? [['run_completed', t.runId, { eventType: 'run_completed', specVersion: 3, eventData: { output: bytes('devl["done"]') } }]]
      : ending === 'failed'
        ? [['run_failed', t.runId, { eventType: 'run_failed', specVersion: 3, eventData: { error: err('wf failed'), errorCode: 'USER_ERROR' } }]]
        : [
            ['run_cancelled', t.runId, { eventType: 'run_cancelled', specVersion: 3 }],
            ['run_cancelled again (idempotent)', t.runId, { eventType: 'run_cancelled', specVersion: 3 }],
          ]),
  ]
}

/** Requests that must fail the same way on both, after the run is terminal. */
function badRequests(t, ending) {
  return [
    ['run_started on a terminal run', t.runId, { eventType: 'run_started', specVersion: 3 }],
    ['run_completed on a terminal run', t.runId, { eventType: 'run_completed', specVersion: 3, eventData: { output: bytes('x') } }],
    ['run_failed on a terminal run', t.runId, { eventType: 'run_failed', specVersion: 3, eventData: { error: 'x' } }],
    ...(ending === 'cancelled' ? [] : [['run_cancelled on a terminal run', t.runId, { eventType: 'run_cancelled', specVersion: 3 }]]),
    ['step_created on a terminal run', t.runId, { eventType: 'step_created', specVersion: 3, correlationId: newId('step'), eventData: { stepName: 's', input: bytes('x') } }],
    ['hook_created on a terminal run', t.runId, { eventType: 'hook_created', specVersion: 3, correlationId: newId('hook'), eventData: { token: `t-${t.runId}` } }],
    ['wait_created on a terminal run', t.runId, { eventType: 'wait_created', specVersion: 3, correlationId: newId('wait'), eventData: { resumeAt: new Date() } }],
    ['step_completed on a completed step', t.runId, { eventType: 'step_completed', specVersion: 3, correlationId: t.step1, eventData: { result: bytes('x') } }],
    ['step_started on a failed step', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step2 }],
    ['step_started on an unknown step', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: 'step_nope' }],
    ['hook_received on a disposed hook', t.runId, { eventType: 'hook_received', specVersion: 3, correlationId: t.hook1, eventData: { payload: bytes('x') } }],
    ['hook_disposed on an unknown hook', t.runId, { eventType: 'hook_disposed', specVersion: 3, correlationId: 'hook_nope' }],
    ['wait_completed twice', t.runId, { eventType: 'wait_completed', specVersion: 3, correlationId: t.wait1 }],
    ['wait_completed on an unknown wait', t.runId, { eventType: 'wait_completed', specVersion: 3, correlationId: 'wait_nope' }],
    ['unsafe runId', '../escape', { eventType: 'run_started', specVersion: 3 }],
    ['unsafe correlationId', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: 'a/../../b' }],
    ['empty correlationId', t.runId, { eventType: 'wait_created', specVersion: 3, correlationId: '', eventData: {} }],
    ['missing runId', null, { eventType: 'run_started', specVersion: 3 }],
    ['run_created with a bad run id', 'wrun_notaulid', { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'd', workflowName: 'w', input: bytes('x') } }],
    ['run_created with an id from 2 days ago', `wrun_${'01'}${'0'.repeat(24)}`, { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'd', workflowName: 'w', input: bytes('x') } }],
  ]
}

for (const ending of ['completed', 'failed', 'cancelled']) {
  describe(`every event type, run ${ending}`, () => {
    const theirs = twin()
    const mine = twin()
    const log = []
    before(async () => {
      const a = sequence(theirs, ending)
      const b = sequence(mine, ending)
      for (let i = 0; i < a.length; i++) {
        const r1 = await attempt('official', a[i][1], a[i][2])
        const f1 = filesOf(theirs)
        const r2 = await attempt('ours', b[i][1], b[i][2])
        const f2 = filesOf(mine)
        log.push({ label: a[i][0], r1, r2, f1, f2 })
      }
    })

    test('each event gives the same result (event, run, step, hook, wait)', () => {
      for (const { label, r1, r2 } of log) {
        assert.equal(r1.ok, true, `${label}: official failed: ${JSON.stringify(r1.error)}`)
        assert.equal(r2.ok, true, `${label}: ours failed: ${JSON.stringify(r2.error)}`)
        assert.equal(shape(r2.value, replacements(mine)), shape(r1.value, replacements(theirs)), label)
      }
    })

    test('after each event the files are the same (bytes, modulo ids and times)', () => {
      for (const { label, f1, f2 } of log) {
        assert.deepEqual(f2, f1, label)
      }
    })

    test('our run went through every effect', () => {
      const names = log.at(-1).f2.map(([n]) => n)
      assert.ok(names.includes('runs/<runId>.json'))
      assert.ok(names.includes('steps/<runId>-<step1>.json'))
      assert.ok(names.includes('.locks/steps/<runId>-<step1>.terminal'))
      assert.ok(names.includes('.locks/hooks/<hook1>.disposed'))
      assert.ok(names.includes('.locks/waits/<runId>-<wait1>.completed'))
      // terminal runs delete their hooks, claims and waits
      assert.ok(!names.some((n) => n.startsWith('hooks/') || n.startsWith('waits/')), names.join('\n'))
      const conflict = log.find((l) => l.label.includes('token conflict')).r2.value
      assert.equal(conflict.event.eventType, 'hook_conflict')
      assert.deepEqual(conflict.event.eventData, { token: mine.tokB, conflictingRunId: mine.runId })
      const step = JSON.parse(readText('steps', `${mine.runId}-${mine.step1}.json`))
      assert.equal(step.attempt, 2)
      assert.equal(step.status, 'completed')
    })

    test('the official World reads our run, steps and events back as its own', async () => {
      const norm = (v, t) => shape(JSON.parse(encode(v)), replacements(t))
      assert.equal(norm(await world.runs.get(mine.runId), mine), norm(await world.runs.get(theirs.runId), theirs))
      const steps = async (t) => (await world.steps.list({ runId: t.runId, pagination: { limit: 100 } })).data
      assert.equal(norm(await steps(mine), mine), norm(await steps(theirs), theirs))
      for (const s of ['step1', 'step2']) {
        assert.equal(norm(await world.steps.get(mine.runId, mine[s]), mine), norm(await world.steps.get(theirs.runId, theirs[s]), theirs))
      }
      const events = async (t) => (await world.events.list({ runId: t.runId, pagination: { limit: 1000 } })).data
      const ev = await events(mine)
      assert.equal(norm(ev, mine), norm(await events(theirs), theirs))
      // and our listing returns the stored files in the same order
      const listed = JSON.parse(native.listEventsJson(mine.runId))
      assert.deepEqual(listed.map((e) => e.eventId), ev.map((e) => e.eventId))
      assert.deepEqual(listed, eventFilesParsed(mine.runId))
    })

    test('bad requests fail with the same error name and message', async () => {
      const a = badRequests(theirs, ending)
      const b = badRequests(mine, ending)
      for (let i = 0; i < a.length; i++) {
        const r1 = await attempt('official', a[i][1], a[i][2])
        const r2 = await attempt('ours', b[i][1], b[i][2])
        assert.equal(r1.ok, false, `${a[i][0]}: official succeeded`)
        assert.equal(r2.ok, false, `${a[i][0]}: ours succeeded: ${JSON.stringify(r2.value)}`)
        assert.equal(shape(r2.error, replacements(mine)), shape(r1.error, replacements(theirs)), a[i][0])
      }
      // nothing of the above changed any file
      assert.deepEqual(filesOf(mine), log.at(-1).f2)
    })
  })
}

function eventFilesParsed(runId) {
  return listDir('events')
    .filter((n) => n.startsWith(`${runId}-`))
    .map((n) => JSON.parse(readText('events', n)))
    .sort((x, y) => (x.createdAt === y.createdAt ? (x.eventId < y.eventId ? -1 : 1) : x.createdAt < y.createdAt ? -1 : 1))
}

describe('hooks while the run is live', () => {
  test('getByToken reads our hook like the official one', async () => {
    const pair = [twin(), twin()]
    for (const [who, t] of [['official', pair[0]], ['ours', pair[1]]]) {
      for (const [label, runId, req] of sequence(t, 'completed').slice(0, 2)) {
        const r = await attempt(who, runId, req)
        assert.ok(r.ok, `${who} ${label}`)
      }
      const r = await attempt(who, t.runId, { eventType: 'hook_created', specVersion: 3, correlationId: t.hook1, eventData: { token: t.tokA, metadata: bytes('devl[1]'), isWebhook: true } })
      assert.ok(r.ok, `${who} hook_created`)
    }
    const norm = (v, t) => shape(JSON.parse(encode(v)), replacements(t))
    assert.equal(norm(await world.hooks.getByToken(pair[1].tokA), pair[1]), norm(await world.hooks.getByToken(pair[0].tokA), pair[0]))
    // a second hook of another run on the same token: hook_conflict naming the holder
    const other = twin()
    for (const who of ['official', 'ours']) {
      const holder = who === 'official' ? pair[0] : pair[1]
      const r = await attempt(who, other.runId, { eventType: 'hook_created', specVersion: 3, correlationId: newId('hook'), eventData: { token: holder.tokA } })
      assert.ok(r.ok)
      assert.equal(r.value.event.eventType, 'hook_conflict')
      assert.equal(r.value.event.eventData.conflictingRunId, holder.runId)
      assert.equal(r.value.hook, undefined)
    }
  })
})

describe('step_started before retryAfter', () => {
  test('TooEarlyError with the same message on both', async () => {
    const pair = [twin(), twin()]
    const out = []
    for (const [who, t] of [['official', pair[0]], ['ours', pair[1]]]) {
      const reqs = sequence(t, 'completed').slice(0, 2)
      reqs.push(['c', t.runId, { eventType: 'step_created', specVersion: 3, correlationId: t.step1, eventData: { stepName: 's', input: bytes('x') } }])
      reqs.push(['s', t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step1 }])
      reqs.push(['r', t.runId, { eventType: 'step_retrying', specVersion: 3, correlationId: t.step1, eventData: { error: 'oops', retryAfter: new Date(Date.now() + 3_600_000) } }])
      for (const [label, runId, req] of reqs) assert.ok((await attempt(who, runId, req)).ok, `${who} ${label}`)
      out.push(await attempt(who, t.runId, { eventType: 'step_started', specVersion: 3, correlationId: t.step1 }))
    }
    assert.equal(out[0].ok, false)
    assert.equal(out[0].error.name, 'TooEarlyError')
    assert.deepEqual(shape(out[1].error, replacements(pair[1])), shape(out[0].error, replacements(pair[0])))
    // the retried step file: error from a string, retryAfter kept
    const a = readText('steps', `${pair[0].runId}-${pair[0].step1}.json`)
    const b = readText('steps', `${pair[1].runId}-${pair[1].step1}.json`)
    assert.equal(shape(b, replacements(pair[1])), shape(a, replacements(pair[0])))
  })
})

describe('run_created without a run id, run_started bootstrapping a missing run', () => {
  test('generated run id; resilient start writes run_created then run_started', async () => {
    const req = { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'd', workflowName: 'w', input: bytes('devl[[]]') } }
    const r = JSON.parse(native.createEventSync(null, encode(req)))
    assert.match(r.run.runId, /^wrun_[0-9A-Z]{26}$/)
    assert.ok(exists('runs', `${r.run.runId}.json`))

    const pair = [newRunId(), newRunId()]
    const start = { eventType: 'run_started', specVersion: 3, eventData: { deploymentId: 'd', workflowName: 'w', input: bytes('devl[[]]'), executionContext: CTX } }
    const r1 = await attempt('official', pair[0], start)
    const r2 = await attempt('ours', pair[1], start)
    assert.ok(r1.ok && r2.ok)
    const rep = (id) => ({ [id]: '<RUN>' })
    assert.equal(shape(r2.value, rep(pair[1])), shape(r1.value, rep(pair[0])))
    const files = (id) =>
      [
        shape(readText('runs', `${id}.json`), rep(id)),
        ...listDir('events')
          .filter((n) => n.startsWith(`${id}-`))
          .map((n) => shape(readText('events', n), rep(id))),
      ]
    assert.deepEqual(files(pair[1]), files(pair[0]))
  })
})

test('listRunsJson filters by status and returns the stored runs', () => {
  const all = JSON.parse(native.listRunsJson(null))
  const done = JSON.parse(native.listRunsJson(['completed', 'failed']))
  assert.ok(all.length > done.length && done.length > 0)
  assert.ok(done.every((r) => r.status === 'completed' || r.status === 'failed'))
  for (const r of done) assert.deepEqual(r, JSON.parse(readText('runs', `${r.runId}.json`)))
  assert.deepEqual(JSON.parse(native.listRunsJson([])), [])
  assert.equal(file('runs').startsWith(dataDir), true)
})

test('createEvent (async) works like createEventSync', async () => {
  const runId = newRunId()
  const req = { eventType: 'run_created', specVersion: 3, eventData: { deploymentId: 'd', workflowName: 'w', input: bytes('devl[[]]') } }
  const r = JSON.parse(await native.createEvent(runId, encode(req)))
  assert.equal(r.run.runId, runId)
  await assert.rejects(native.createEvent(runId, encode(req)), (e) => {
    assert.deepEqual(nativeError(e), { name: 'EntityConflictError', message: `Workflow run "${runId}" already exists` })
    return true
  })
})
