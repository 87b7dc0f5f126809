// Corrupt or truncated run files: ours must reject with a clear error naming the file
// (the official throws a bare SyntaxError / ZodError), must not crash the process and
// must not modify the file.
import { createRun, createWait, file, official, ours, readText, settle, newRunId } from './helpers/harness.mjs'
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readFileSync } from 'node:fs'

const CORRUPTIONS = {
  truncated: (text) => text.slice(0, Math.floor(text.length / 2)),
  empty: () => '',
  garbage: () => '\u0000\u0001not json at all',
  'JSON but not an object': () => '[1,2,3]',
  'JSON null': () => 'null',
  'object missing required fields': () => '{"runId":"x"}',
  'unknown status': (text) => text.replace(/"status": "[a-z]+"/, '"status": "exploded"'),
}

async function corruptRun(kind) {
  const runId = await createRun({ status: 'completed', value: { fine: true } })
  await createWait(runId).catch(() => {}) // (terminal: rejected by world-local, harmless)
  const path = file('runs', `${runId}.json`)
  writeFileSync(path, CORRUPTIONS[kind](readText('runs', `${runId}.json`)))
  return { runId, path }
}

describe('corrupt run files', () => {
  for (const kind of Object.keys(CORRUPTIONS)) {
    test(`${kind}: every operation rejects clearly and the file is left as is`, async () => {
      const { runId, path } = await corruptRun(kind)
      const bytes = readFileSync(path)
      const official_ = await settle(() => official.getRun(runId).status)
      for (const op of ['status', 'exists', 'returnValue', 'createdAt', 'workflowName', 'completedAt', 'wakeUp', 'cancel']) {
        const run = ours.getRun(runId)
        const r = await settle(() => (op === 'wakeUp' || op === 'cancel' ? run[op]() : run[op]))
        if (!official_.ok) {
          assert.equal(r.ok, false, `${op} resolved with ${JSON.stringify(r.value)} although the file is ${kind}`)
        }
        if (!r.ok) {
          assert.ok(r.error instanceof Error, `${op}: not an Error: ${r.error}`)
          const text = `${r.error.message}\n${r.error.cause ? r.error.cause.message : ''}`
          assert.ok(
            text.includes(path) || text.includes(`runs/${runId}.json`),
            `${op}: message does not name the file: ${JSON.stringify(r.error.message)}`,
          )
          assert.ok(r.error.message.length < 2000, `${op}: message is not concise`)
        }
      }
      assert.deepEqual(readFileSync(path), bytes, 'the corrupt file was modified')
    })
  }

  test('reference: the official package rejects truncated files with a SyntaxError', async () => {
    const { runId } = await corruptRun('truncated')
    const r = await settle(() => official.getRun(runId).status)
    assert.equal(r.ok, false)
    assert.equal(r.error.name, 'SyntaxError')
  })

  test('a healthy run next to corrupt ones still works (the process did not crash)', async () => {
    const id = await createRun({ status: 'completed', value: 'still fine' })
    assert.equal(await ours.getRun(id).returnValue, 'still fine')
    assert.equal(await ours.getRun(newRunId()).exists, false)
  })

  test('a pending returnValue rejects when the run file becomes corrupt while waiting', { timeout: 15_000 }, async () => {
    const id = await createRun({ status: 'running' })
    const p = settle(() => ours.getRun(id).returnValue)
    assert.equal(await ours.getRun(id).status, 'running')
    const path = file('runs', `${id}.json`)
    writeFileSync(path, readText('runs', `${id}.json`).slice(0, 40))
    const r = await p
    assert.equal(r.ok, false)
    assert.ok(r.error.message.includes(path) || r.error.message.includes(`${id}.json`), r.error.message)
  })
})
