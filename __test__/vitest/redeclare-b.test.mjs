// Declares the same workflow id as redeclare-a.test.mjs. Without isolation both files
// run in one worker, sharing workflow-native: the later declaration replaces the earlier
// one (it used to throw "A different workflow is already registered").
import { expect, test } from 'vitest'
import wf from 'workflow-native/workflow'
import api from 'workflow-native/api'

const shared = wf.workflow('vitest-shared', async (x) => `file b: ${x}`)

test('file b starts its own declaration of the shared workflow', async () => {
  const run = await api.start(shared, ['hello'])
  expect(await run.returnValue).toBe('file b: hello')
})
