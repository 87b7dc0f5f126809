// The addon in worker threads, loaded first by a worker (never by the main thread), the
// worker ended, then loaded by the next one — as a Vitest `threads` pool or a server's
// worker pool does. A native allocator that ties its state to the first thread using it
// crashes the second worker's load (mimalloc 3.x did: microsoft/mimalloc#1287).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')

test('workers load the addon one after the other, the first one ended before the next: no crash', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-addon-workers-'))
  try {
    const script = `
      const { Worker } = require('node:worker_threads')
      const code = \`
        const { parentPort } = require('node:worker_threads')
        const api = require(${JSON.stringify(path.join(root, 'index.js'))})
        api.getRun('wrun_01KBAAAAAAAAAAAAAAAAAAAAAA').status.then(
          (s) => parentPort.postMessage('status ' + s),
          (e) => parentPort.postMessage(e.name),
        )
      \`
      ;(async () => {
        for (let i = 0; i < 4; i++) {
          const w = new Worker(code, { eval: true })
          const msg = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject) })
          await w.terminate()
          console.log('worker ' + i + ': ' + msg)
        }
      })()
    `
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, WORKFLOW_LOCAL_DATA_DIR: dir },
      encoding: 'utf8',
      timeout: 60_000,
    })
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`)
    assert.equal(r.status, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    assert.equal(lines.length, 4, r.stdout)
    for (const l of lines) assert.match(l, /^worker \d: WorkflowRunNotFoundError$/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
