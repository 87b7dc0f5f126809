// Jest runs every test file in its own vm context, so `Date`, `Map`, `Error`… of the
// test are not the main realm's. A value handed out by the package must be an instance
// of the TEST realm's constructors, or `instanceof Date` / `toBeInstanceOf(Map)` fail.
//
// Run: npx jest --config __test__/jest/jest.config.cjs
// (Under `node --test __test__/` this file is collected too; it then only registers a
// skipped placeholder.)
'use strict'

if (typeof expect === 'undefined') {
  require('node:test').test('realm test (Jest only: npx jest --config __test__/jest/jest.config.cjs)', {
    skip: 'runs under Jest',
  })
} else {
  const { execFileSync } = require('node:child_process')
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-jest-'))
  process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
  // The official packages are ESM-only, so the data is written by a child process.
  const ids = JSON.parse(
    execFileSync(process.execPath, [path.join(__dirname, '..', 'helpers', 'make-fixture.mjs'), dataDir], {
      encoding: 'utf8',
    }),
  )

  afterAll(() => {
    fs.rmSync(dataDir, { recursive: true, force: true })
  })

  const load = () => require('../../index.js')

  test('the package loads under Jest', () => {
    expect(typeof load().getRun).toBe('function')
  })

  test('(await run.createdAt) instanceof Date of the test realm', async () => {
    const run = load().getRun(ids.completed)
    const createdAt = await run.createdAt
    expect(createdAt instanceof Date).toBe(true)
    expect(createdAt).toBeInstanceOf(Date)
    expect(Number.isNaN(createdAt.getTime())).toBe(false)
    expect((await run.startedAt) instanceof Date).toBe(true)
    expect((await run.completedAt) instanceof Date).toBe(true)
  })

  test('Date / Map / Set / Uint8Array / RegExp / Error inside returnValue belong to the test realm', async () => {
    const value = await load().getRun(ids.completed).returnValue
    expect(value.when instanceof Date).toBe(true)
    expect(value.when.toISOString()).toBe('2024-01-02T03:04:05.006Z')
    expect(value.map instanceof Map).toBe(true)
    expect(value.map.get('k') instanceof Date).toBe(true)
    expect(value.set instanceof Set).toBe(true)
    expect(value.list[0] instanceof Date).toBe(true)
    expect(value.list[1].deep instanceof Map).toBe(true)
    expect(value.bytes instanceof Uint8Array).toBe(true)
    expect(value.re instanceof RegExp).toBe(true)
    expect(value.err instanceof Error).toBe(true)
    expect(value).toEqual({
      when: new Date('2024-01-02T03:04:05.006Z'),
      map: new Map([['k', new Date(0)]]),
      set: new Set([1, 2]),
      list: [new Date(1), { deep: new Map([[1, [2]]]) }],
      bytes: new Uint8Array([1, 2, 3]),
      re: /x+/g,
      big: 12n,
      err: expect.any(Error),
    })
  })

  test('plain objects and arrays inside returnValue belong to the test realm', async () => {
    const value = await load().getRun(ids.completed).returnValue
    expect(value instanceof Object).toBe(true)
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype)
    expect(value.list instanceof Array).toBe(true)
    expect(Array.isArray(value.list)).toBe(true)
    expect(value).toStrictEqual({
      when: new Date('2024-01-02T03:04:05.006Z'),
      map: new Map([['k', new Date(0)]]),
      set: new Set([1, 2]),
      list: [new Date(1), { deep: new Map([[1, [2]]]) }],
      bytes: new Uint8Array([1, 2, 3]),
      re: /x+/g,
      big: 12n,
      err: value.err,
    })
  })

  test('stream chunks belong to the test realm', async () => {
    const stream = load().getRun(ids.streaming).getReadable()
    const values = []
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      values.push(value)
    }
    expect(values).toHaveLength(3)
    expect(values[0] instanceof Date).toBe(true)
    expect(values[1] instanceof Map).toBe(true)
    expect(Object.getPrototypeOf(values[2])).toBe(Object.prototype)
  })

  test('errors are instances of the test realm Error and of the package classes', async () => {
    const { getRun } = load()
    const errors = require('../../errors.js')
    await expect(getRun(ids.failed).returnValue).rejects.toBeInstanceOf(errors.WorkflowRunFailedError)
    const err = await getRun(ids.failed).returnValue.catch((e) => e)
    expect(err instanceof Error).toBe(true)
    expect(err.cause instanceof Error).toBe(true)
    expect(err.cause.code).toBe('USER_ERROR')
    const missing = await getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV').status.catch((e) => e)
    expect(missing instanceof Error).toBe(true)
    expect(missing.name).toBe('WorkflowRunNotFoundError')
    const typeErr = await getRun(42).status.catch((e) => e)
    expect(typeErr instanceof TypeError).toBe(true)
  })
}
