// The embedded engine shares its process with the user's server: while a 1,000-step
// workflow runs, an HTTP server in the same process keeps answering. A client in another
// process asks `/health` back to back for as long as the run lasts; every answer must
// come, and the 99th percentile must stay under 10 ms. In the same run, a 1 ms interval
// measures the JS thread's longest block.
import { dataDir, official, ours } from './helpers/harness.mjs'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { spawn } from 'node:child_process'
import readline from 'node:readline'
import { performance } from 'node:perf_hooks'
import wf from '../workflow.js'

const { workflow, step } = wf

/** A client process hammering GET /health until told to stop; reports its latencies. */
function startClient(port) {
  const script = `
    const http = require('node:http')
    const { performance } = require('node:perf_hooks')
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const latencies = []
    let stop = false
    let failures = 0
    process.stdin.on('data', () => { stop = true })
    const once = () => new Promise((resolve) => {
      const t0 = performance.now()
      const req = http.get({ host: '127.0.0.1', port: ${port}, path: '/health', agent }, (res) => {
        res.resume()
        res.on('end', () => { if (res.statusCode === 200) latencies.push(performance.now() - t0); else failures++; resolve() })
      })
      req.on('error', () => { failures++; resolve() })
    })
    ;(async () => {
      console.log('READY')
      while (!stop) await once()
      console.log(JSON.stringify({ latencies, failures }))
      agent.destroy()
    })()
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: child.stdout })
  const ready = new Promise((resolve) => lines.once('line', resolve))
  const report = new Promise((resolve) => {
    lines.on('line', (line) => {
      if (line.startsWith('{')) resolve(JSON.parse(line))
    })
  })
  return {
    ready,
    async stop() {
      child.stdin.write('stop\n')
      const r = await report
      child.stdin.end()
      return r
    },
  }
}

test('a 1,000-step run leaves the JS thread free: an HTTP server in the same process answers /health with p99 < 10 ms', async () => {
  assert.ok(dataDir)
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/health' ? 200 : 404, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  const client = startClient(port)
  await client.ready

  const increment = step('responsive-increment', async (x) => x + 1)
  const many = workflow('responsive-many', async (n) => {
    let acc = 0
    for (let i = 0; i < n; i++) acc = await increment(acc)
    return acc
  })

  let last = performance.now()
  let maxGap = 0
  const tick = setInterval(() => {
    const now = performance.now()
    maxGap = Math.max(maxGap, now - last)
    last = now
  }, 1)
  const run = await ours.start(many, [1000])
  const value = await run.returnValue
  clearInterval(tick)
  const { latencies, failures } = await client.stop()
  await new Promise((resolve) => server.close(resolve))

  assert.equal(value, 1000)
  assert.equal(await official.getRun(run.runId).status, 'completed')
  assert.equal(failures, 0)
  assert.ok(latencies.length >= 50, `only ${latencies.length} answers during the run`)
  const sorted = [...latencies].sort((a, b) => a - b)
  const p99 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]
  console.log(
    `# ${latencies.length} /health answers during the run: p50 ${sorted[sorted.length >> 1].toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, max ${sorted.at(-1).toFixed(2)} ms; JS thread's longest block ${maxGap.toFixed(2)} ms`,
  )
  assert.ok(p99 < 10, `/health p99 ${p99.toFixed(2)} ms`)
})
