// The embedded engine under Jest (each test file in its own vm context): a workflow with a
// retried step and a one-day sleep completes with virtual time (no real waiting), and
// the values it returns are the TEST realm's Dates and Maps.
//
// Run: npx jest --config __test__/jest/jest.config.cjs
'use strict'

if (typeof expect === 'undefined') {
  require('node:test').test('engine under Jest (Jest only)', { skip: 'runs under Jest' })
} else {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-jest-engine-'))
  process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
  afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }))

  const { workflow, step, sleep, useVirtualTime, getStepMetadata } = require('../../workflow.js')
  const { start } = require('../../index.js')

  test('a workflow with a retry and a one-day sleep completes under virtual time', async () => {
    useVirtualTime()
    const flaky = step('jest-flaky', async (x) => {
      if (getStepMetadata().attempt === 1) throw new Error('first attempt fails')
      return x * 2
    })
    const wf = workflow('jest-engine', async (x) => {
      const y = await flaky(x)
      await sleep('1d')
      return { y, at: new Date(0), m: new Map([['k', y]]) }
    })
    const run = await start(wf, [21])
    const value = await run.returnValue
    expect(value.y).toBe(42)
    expect(value.at).toBeInstanceOf(Date)
    expect(value.m).toBeInstanceOf(Map)
    expect(await run.status).toBe('completed')
    // (a real one-day sleep would exceed Jest's 5 s test timeout)
  })
}
