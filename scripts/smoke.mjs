// Loads the package from this checkout (the binary `npm run build` or the release workflow put
// at its root) and runs one engine workflow end to end: a step, a stream, the return value.
// The release workflow runs it on each platform's binary, in the oldest environment it targets.
//
//   node scripts/smoke.mjs
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-smoke-'))
process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir
try {
  const { workflow, step, getWritable } = await import('../workflow.js')
  const { start, getRun } = await import('../index.js')
  const { currentPlatform, platformId } = await import('../lib/loader.js')

  const double = step('double', async (x) => x * 2)
  const emit = step('emit', async (values) => {
    const writer = getWritable().getWriter()
    for (const v of values) await writer.write(v)
    await writer.close()
  })
  const smoke = workflow('smoke', async (x) => {
    const y = await double(x)
    await emit([x, y])
    return { x, y }
  })

  const run = await start(smoke, [21])
  assert.deepEqual(await run.returnValue, { x: 21, y: 42 })
  const again = getRun(run.runId)
  assert.equal(await again.status, 'completed')
  const chunks = []
  for await (const chunk of again.getReadable()) chunks.push(chunk)
  assert.deepEqual(chunks, [21, 42])
  console.log(`smoke: ok on ${platformId(currentPlatform())} (node ${process.version}), run ${run.runId}`)
} finally {
  fs.rmSync(dataDir, { recursive: true, force: true })
}
