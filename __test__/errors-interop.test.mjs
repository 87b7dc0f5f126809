// Errors of ours and of the official packages recognise each other: `X.is()` of the
// official `workflow/errors` accepts our errors and vice versa; constructing the same
// error in both gives the same name, message and fields.
import { createRun, official, ours, settle, newRunId } from './helpers/harness.mjs'
import * as ourErrors from '../errors.js'
import * as officialErrors from 'workflow/errors'
import * as allOfficialErrors from '@workflow/errors'
import { FatalError as OfficialFatalError, RetryableError as OfficialRetryableError } from 'workflow'
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'

const officialClasses = { ...allOfficialErrors, FatalError: OfficialFatalError, RetryableError: OfficialRetryableError }

const cause = new Error('root cause')
const SAMPLES = {
  WorkflowError: ['base message', { slug: 'some-slug', cause }],
  WorkflowWorldError: ['world failed', { status: 503, code: 'TIMEOUT', url: 'https://x/y', retryAfter: 7, cause }],
  EntityConflictError: ['Cannot transition run from terminal state "completed"'],
  RunExpiredError: ['Workflow run "wrun_x" is already in terminal state "failed"'],
  TooEarlyError: ['too early', { retryAfter: 3 }],
  ThrottleError: ['slow down', { retryAfter: 9 }],
  PreconditionFailedError: ['stale', { retryAfter: 1 }],
  WorkflowRunNotFoundError: ['wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV'],
  WorkflowRunFailedError: ['wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV', { message: 'boom', stack: 'Error: boom\n    at x', code: 'USER_ERROR' }],
  WorkflowRunCancelledError: ['wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV'],
  WorkflowRunNotCompletedError: ['wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV', 'running'],
  HookNotFoundError: ['tok-1'],
  HookConflictError: ['tok-1', 'wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV'],
  RunNotSupportedError: [4, 3],
  MaxEventsExceededError: [25001, 25000],
  WorkflowRuntimeError: ['runtime', { slug: 'serialization-failed' }],
  CorruptedEventLogError: ['corrupt log'],
  ReplayDivergenceError: ['diverged', { eventId: 'evnt_01ARZ3NDEKTSV4RRFFQ69G5FAV' }],
  RuntimeDecryptionError: ['no key', { context: { operation: 'decrypt', byteLength: 40, formatPrefix: 'encr' } }],
  StepNotRegisteredError: ['step//./wf.js//s'],
  WorkflowNotRegisteredError: ['workflow//./wf.js//w'],
  FatalError: ['fatal!'],
}

/** All own fields (enumerable or not) apart from stack/message, as name → value. */
function fieldValues(e, keys) {
  const out = {}
  for (const k of keys) {
    const v = e[k]
    out[k] = v instanceof Error ? { name: v.name, message: v.message, code: v.code } : v
  }
  return out
}
const ownFields = (e) => Object.getOwnPropertyNames(e).filter((k) => k !== 'stack' && k !== 'message')

describe('same constructor arguments → same error', () => {
  for (const [name, args] of Object.entries(SAMPLES)) {
    test(name, () => {
      const Official = officialClasses[name]
      const Ours = ourErrors[name]
      assert.equal(typeof Official, 'function', `official ${name} missing`)
      assert.equal(typeof Ours, 'function', `ours does not export ${name}`)
      const o = new Official(...args)
      const m = new Ours(...args)
      assert.ok(m instanceof Error)
      assert.ok(m instanceof Ours)
      assert.equal(m.name, o.name)
      assert.equal(m.message, o.message)
      const keys = [...new Set([...ownFields(o), ...ownFields(m)])].sort()
      assert.deepEqual(fieldValues(m, keys), fieldValues(o, keys))
      if (o.cause !== undefined) {
        assert.equal(m.cause && m.cause.message, o.cause.message)
        assert.equal(m.cause && m.cause.code, o.cause.code)
        assert.equal(m.cause && m.cause.stack, o.cause.stack)
      }
      if (o.stack.includes('\nCaused by: ')) {
        assert.ok(m.stack.includes(`\nCaused by: ${o.cause.stack}`), 'stack lacks "Caused by:"')
      }
      // (base WorkflowError never sets `name`, so its `is()` is false even for itself)
      const expected = Official.is(o)
      assert.equal(expected, name !== 'WorkflowError')
      assert.equal(Official.is(m), expected, `official ${name}.is(ours) is ${!expected}`)
      assert.equal(Ours.is(o), expected, `our ${name}.is(official) is ${!expected}`)
      assert.equal(Ours.is(m), expected)
      assert.equal(Ours.is({ name, message: 'duck' }), Official.is({ name, message: 'duck' }))
      assert.equal(Ours.is(null), false)
      assert.equal(Ours.is('WorkflowRunNotFoundError'), false)
    })
  }

  test('own enumerable properties match the official (Object.keys, spread, JSON.stringify)', () => {
    // The official classes declare TypeScript fields (`cause`, `runId`, `conflictingRunId`, …),
    // which become own *enumerable* properties even when undefined.
    const mismatches = []
    for (const [name, args] of Object.entries({ ...SAMPLES, 'HookConflictError(token only)': ['tok-1'] })) {
      const cls = name.replace(/\(.*$/, '')
      const o = new officialClasses[cls](...args)
      const m = new ourErrors[cls](...args)
      const ko = Object.keys(o).sort().join(',')
      const km = Object.keys(m).sort().join(',')
      if (ko !== km) mismatches.push(`${name}: official [${ko}] ours [${km}]`)
    }
    assert.deepEqual(mismatches, [])
  })

  test('RetryableError: same name/message, retryAfter is a Date', () => {
    const at = new Date('2030-01-01T00:00:00Z')
    const o = new OfficialRetryableError('again', { retryAfter: at })
    const m = new ourErrors.RetryableError('again', { retryAfter: at })
    assert.equal(m.name, o.name)
    assert.equal(m.message, o.message)
    assert.ok(m.retryAfter instanceof Date)
    assert.equal(m.retryAfter.getTime(), o.retryAfter.getTime())
    assert.ok(OfficialRetryableError.is(m))
    assert.ok(ourErrors.RetryableError.is(o))
    const d = new ourErrors.RetryableError('x', { retryAfter: '5m' })
    const od = new OfficialRetryableError('x', { retryAfter: '5m' })
    assert.ok(Math.abs(d.retryAfter.getTime() - od.retryAfter.getTime()) < 5_000)
  })

  test('class hierarchy mirrors the official one', () => {
    const { WorkflowError, WorkflowWorldError, WorkflowRuntimeError } = ourErrors
    for (const n of ['EntityConflictError', 'RunExpiredError', 'TooEarlyError', 'ThrottleError', 'PreconditionFailedError']) {
      assert.ok(new ourErrors[n]('m') instanceof WorkflowWorldError, n)
    }
    for (const n of ['CorruptedEventLogError', 'StepNotRegisteredError', 'WorkflowNotRegisteredError', 'RuntimeDecryptionError']) {
      assert.ok(new ourErrors[n]('m') instanceof WorkflowRuntimeError, n)
    }
    assert.ok(new ourErrors.WorkflowRunNotFoundError('r') instanceof WorkflowError)
    assert.ok(!(new ourErrors.FatalError('f') instanceof WorkflowError))
    // WorkflowError never names itself, so WorkflowError.is() is false for every subclass
    assert.equal(officialErrors.WorkflowError.is(new ourErrors.WorkflowRunNotFoundError('r')), false)
    assert.equal(WorkflowError.is(new officialErrors.WorkflowRunNotFoundError('r')), false)
    assert.equal(new WorkflowError('x').name, 'Error')
  })

  test('`is()` does not confuse classes', () => {
    const m = new ourErrors.WorkflowRunNotFoundError('r')
    assert.equal(officialErrors.WorkflowRunCancelledError.is(m), false)
    assert.equal(officialErrors.WorkflowRunFailedError.is(m), false)
    assert.equal(ourErrors.WorkflowRunNotFoundError.is(new officialErrors.WorkflowRunCancelledError('r')), false)
    assert.equal(officialErrors.EntityConflictError.is(new ourErrors.WorkflowWorldError('x')), false)
  })
})

describe('errors produced by real operations', () => {
  test('not found, failed, cancelled and conflict errors from ours pass the official is() checks (and vice versa)', async () => {
    const unknown = newRunId()
    const failed = await createRun({ status: 'failed' })
    const cancelled = await createRun({ status: 'cancelled' })
    const completed = await createRun({ status: 'completed', value: 1 })
    const cases = [
      ['WorkflowRunNotFoundError', (api) => api.getRun(unknown).status],
      ['WorkflowRunFailedError', (api) => api.getRun(failed).returnValue],
      ['WorkflowRunCancelledError', (api) => api.getRun(cancelled).returnValue],
      ['EntityConflictError', (api) => api.getRun(completed).cancel()],
    ]
    for (const [name, op] of cases) {
      const m = await settle(() => op(ours))
      const o = await settle(() => op(official))
      assert.equal(m.ok, false, `${name}: ours resolved`)
      assert.equal(o.ok, false)
      assert.equal(officialErrors[name].is(m.error), true, `official ${name}.is(ours) false (got ${m.error.name})`)
      assert.equal(ourErrors[name].is(o.error), true, `our ${name}.is(official) false`)
      assert.ok(m.error instanceof ourErrors[name], `ours is not an instance of our ${name}`)
      assert.equal(m.error.message, o.error.message)
    }
  })

  test('an unsafe id error has the official name and is a WorkflowWorldError', async () => {
    const m = await settle(() => ours.getRun('../etc').status)
    assert.equal(m.ok, false)
    assert.equal(m.error.name, 'UnsafeEntityIdError')
    assert.ok(m.error instanceof ourErrors.WorkflowWorldError)
    assert.ok(ourErrors.UnsafeEntityIdError.is(m.error))
  })
})
