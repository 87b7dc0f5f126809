// Restate under the peer workloads (see common.mjs). This process starts the server binary
// shipped by npm @restatedev/restate-server (server defaults; only its listen addresses are
// set, to free loopback ports, and its data directory, a fresh one under <baseDir>), serves
// the two workflows with @restatedev/restate-sdk from an HTTP/2 endpoint on loopback,
// registers that deployment through the admin API (POST /deployments), and invokes the
// workflows through the HTTP ingress, waiting for each result (POST /<workflow>/<key>/run
// answers with the workflow's result). Each step is a `ctx.run`. The server is stopped by
// its pid (SIGTERM, then SIGKILL after 20 s) and its data directory removed.
//
//   node bench/peers/restate-child.mjs <baseDir> [--quick]
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { discard } from '../trash.mjs'
import { report, runChild } from './common.mjs'
import { installedVersion } from './versions.mjs'

const require = createRequire(import.meta.url)
const base = process.argv[2]

// The SDK 1.17 uses Promise.withResolvers (Node >= 22).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve
    let reject
    const promise = new this((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}

/** The server binary the npm package ships for this platform. */
function serverBinary() {
  const pkg = `@restatedev/restate-server-${os.platform()}-${os.arch()}`
  try {
    return require.resolve(`${pkg}/bin/restate-server`)
  } catch {
    throw new Error(`${pkg} is not installed (npm installs it with @restatedev/restate-server on supported platforms)`)
  }
}

/** A loopback port free right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity })

/** One HTTP request on loopback; resolves with `{ status, body }`. */
function request(port, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: urlPath,
        agent,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
      },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(data)
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

await runChild(async () => {
  const binary = serverBinary()
  const dataDir = fs.mkdtempSync(path.join(base, 'wfn-bench-peers-restate-'))
  const [ingressPort, adminPort, fabricPort] = [await freePort(), await freePort(), await freePort()]
  // Server defaults: no configuration inherited from this environment, only the addresses.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RESTATE_')))
  env.RESTATE_INGRESS__BIND_ADDRESS = `127.0.0.1:${ingressPort}`
  env.RESTATE_ADMIN__BIND_ADDRESS = `127.0.0.1:${adminPort}`
  // Its temporary directories (empty `invoker-*` ones) go beside its base directory, inside
  // ours (a directory at the top of its base directory is taken for another node's data).
  const tmp = path.join(dataDir, 'tmp')
  fs.mkdirSync(tmp)
  env.TMPDIR = tmp
  const serverDir = path.join(dataDir, 'server')
  fs.mkdirSync(serverDir)
  const logFile = path.join(dataDir, 'server.log')
  const logFd = fs.openSync(logFile, 'a')
  const server = spawn(
    binary,
    ['--base-dir', serverDir, '--bind-address', `127.0.0.1:${fabricPort}`, '--no-logo', '--log-disable-ansi-codes', 'true'],
    { cwd: serverDir, env, stdio: ['ignore', logFd, logFd] },
  )
  fs.closeSync(logFd)
  let exited = null
  const exit = new Promise((resolve) => {
    server.once('exit', (code, signal) => {
      exited = { code, signal }
      resolve()
    })
    server.once('error', (e) => {
      exited = { error: e.message }
      resolve()
    })
  })
  // Last resort if this process ends abruptly: the server must not outlive it.
  const killOnExit = () => {
    if (exited === null && server.pid) {
      try {
        process.kill(server.pid, 'SIGKILL')
      } catch {}
    }
  }
  process.on('exit', killOnExit)
  // Interrupted (Ctrl-C reaches the whole process group): no 'exit' event by default.
  const onSignal = () => {
    killOnExit()
    fs.rmSync(dataDir, { recursive: true, force: true })
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  await report({ type: 'resource', serverPid: server.pid, dataDir })
  const logTail = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n')
    } catch {
      return ''
    }
  }

  let endpoint
  const sessions = new Set()
  const teardown = async () => {
    agent.destroy()
    if (exited === null) {
      server.kill('SIGTERM')
      const timer = setTimeout(() => {
        if (exited === null) server.kill('SIGKILL')
      }, 20_000)
      await exit
      clearTimeout(timer)
    }
    process.off('exit', killOnExit)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    // The server held HTTP/2 sessions to the endpoint; close() waits for them to end.
    if (endpoint) {
      const closed = new Promise((r) => endpoint.close(() => r()))
      for (const s of sessions) s.destroy()
      await closed
    }
    discard(dataDir)
  }

  try {
    // Wait until the admin API and the ingress answer.
    const deadline = Date.now() + 120_000
    for (;;) {
      if (exited !== null) throw new Error(`restate-server exited during startup (${JSON.stringify(exited)}):\n${logTail()}`)
      if (Date.now() > deadline) throw new Error(`restate-server not ready after 120 s:\n${logTail()}`)
      const ok = await Promise.all([
        request(adminPort, 'GET', '/health').then((r) => r.status === 200, () => false),
        request(ingressPort, 'GET', '/restate/health').then((r) => r.status === 200, () => false),
      ])
      if (ok.every(Boolean)) break
      await sleep(100)
    }

    const restate = await import('@restatedev/restate-sdk')
    const steps = restate.workflow({
      name: 'PeersSteps',
      handlers: {
        run: async (ctx, n) => {
          let acc = 0
          for (let i = 0; i < n; i++) {
            const input = acc
            acc = await ctx.run('increment', async () => input + 1)
          }
          return acc
        },
      },
    })
    const empty = restate.workflow({ name: 'PeersEmpty', handlers: { run: async (ctx, x) => x } })
    // Warnings and errors only (the default logs a line per invocation), less the one about
    // request signatures (none are configured: the endpoint listens on loopback only).
    const logger = (meta, message, ...rest) => {
      if (meta.level !== 'warn' && meta.level !== 'error') return
      if (/request signatures/.test(String(message))) return
      console.error('[restate-sdk]', message, ...rest)
    }
    endpoint = http2.createServer(restate.createEndpointHandler({ services: [steps, empty], logger }))
    endpoint.on('session', (session) => {
      sessions.add(session)
      session.once('close', () => sessions.delete(session))
    })
    await new Promise((resolve, reject) => {
      endpoint.once('error', reject)
      endpoint.listen(0, '127.0.0.1', resolve)
    })
    const reg = await request(adminPort, 'POST', '/deployments', { uri: `http://127.0.0.1:${endpoint.address().port}/` })
    if (reg.status < 200 || reg.status >= 300) throw new Error(`registering the deployment: HTTP ${reg.status} ${reg.body}`)

    let seq = 0
    const invoke = async (name, arg) => {
      const r = await request(ingressPort, 'POST', `/${name}/${process.pid}-${seq++}/run`, arg)
      if (r.status !== 200) throw new Error(`${name}: HTTP ${r.status} ${r.body}`)
      return JSON.parse(r.body)
    }
    // The ingress may learn of the deployment a moment after the admin API acknowledged it.
    for (let i = 0; ; i++) {
      try {
        await invoke('PeersEmpty', 0)
        break
      } catch (e) {
        if (i >= 100 || exited !== null) throw e
        await sleep(100)
      }
    }
    const version = (() => {
      try {
        return fs.readFileSync(logFile, 'utf8').match(/Starting Restate Server (\S+)/)?.[1]
      } catch {
        return undefined
      }
    })()
    return {
      sys: { steps: (n) => invoke('PeersSteps', n), empty: (x) => invoke('PeersEmpty', x) },
      info: { serverVersion: version, sdkVersion: installedVersion('@restatedev/restate-sdk'), dataDir },
      teardown,
    }
  } catch (e) {
    await teardown()
    throw e
  }
})
