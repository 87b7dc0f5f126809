// Which data directory a Run reads. The official `workflow/api` reads
// WORKFLOW_LOCAL_DATA_DIR once (at the first getRun/getWorld of the process) and keeps
// that World for the life of the process (spec 1.1: getWorld() is a process-wide
// singleton); a Run is also bound to its World at construction (spec 2.2).
import { createRun, dataDir, newRunId, official, ours, settle } from './helpers/harness.mjs'
import { createLocalWorld } from '@workflow/world-local'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

test('WORKFLOW_LOCAL_DATA_DIR is read once per process, like the official', async () => {
  const idA = await createRun({ status: 'completed', value: 'from A' })
  // first use by both packages: both bind to dataDir (A)
  assert.equal(await official.getRun(idA).returnValue, 'from A')
  assert.equal(await ours.getRun(idA).returnValue, 'from A')
  const constructedBeforeSwitch = ours.getRun(idA)

  const dirB = mkdtempSync(path.join(tmpdir(), 'wfn-test-b-'))
  try {
    const worldB = createLocalWorld({ dataDir: dirB })
    const onlyInB = newRunId()
    await worldB.events.create(onlyInB, {
      eventType: 'run_created',
      specVersion: 3,
      eventData: { deploymentId: 'dpl_local@4.4.1', workflowName: 'wf', input: new TextEncoder().encode('devl[[]]') },
    })
    process.env.WORKFLOW_LOCAL_DATA_DIR = dirB

    // A Run constructed before the switch keeps reading A
    assert.equal(await constructedBeforeSwitch.status, 'completed')

    // New Runs: the official still reads A (A visible, B not)
    const offA = await settle(() => official.getRun(idA).status)
    assert.deepEqual(offA, { ok: true, value: 'completed' })
    assert.equal(await official.getRun(onlyInB).exists, false)

    const ourA = await settle(() => ours.getRun(idA).status)
    assert.deepEqual(
      ourA.ok ? ourA : { ok: false, error: `${ourA.error.name}: ${ourA.error.message}` },
      offA,
      'ours switched data directory after the env var changed',
    )
    assert.equal(await ours.getRun(onlyInB).exists, false)
  } finally {
    process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
    rmSync(dirB, { recursive: true, force: true })
  }
})
