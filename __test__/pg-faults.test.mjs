// PostgreSQL faults through the public API: a wrong URL fails every call with a clear
// error within the connect timeout (nothing hangs); an unsupported WORKFLOW_TARGET_WORLD
// names the supported ones; a live stream read and a waiting returnValue finish although
// the LISTEN connection is killed (the polling backstop); sslmode=require against a server
// without TLS is refused, not hung.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { testDatabase, sql } from './helpers/pg.mjs'

const require = createRequire(import.meta.url)
const db = await testDatabase('faults')
const skip = db.skip
const ours = await import('../index.js')
const ourErrors = await import('../errors.js')
const { binding } = await import('../lib/native.js')
const { resetWorldForTests } = require('../lib/world.js')

function useWorld(env) {
  for (const k of ['WORKFLOW_TARGET_WORLD', 'WORKFLOW_POSTGRES_URL']) delete process.env[k]
  Object.assign(process.env, env)
  resetWorldForTests()
}

let client
before(async () => {
  if (!skip) client = await sql(db.url)
})
after(async () => {
  if (skip) return
  await client.end()
  await db.drop()
})

describe('PostgreSQL faults', () => {
  test('an unreachable server: getRun() calls reject with the URL (password hidden) and the cause', async () => {
    useWorld({ WORKFLOW_TARGET_WORLD: '@workflow/world-postgres', WORKFLOW_POSTGRES_URL: 'postgres://u:secret@127.0.0.1:1/nodb' })
    const run = ours.getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV')
    await assert.rejects(run.status, (e) => {
      assert.match(e.message, /Could not connect to PostgreSQL at postgres:\/\/\[redacted\]@127\.0\.0\.1:1\/nodb/)
      assert.doesNotMatch(e.message, /secret/)
      return true
    })
    // a later call tries again (and fails the same way), it does not hang on the first failure
    await assert.rejects(run.exists, /Could not connect/)
  })

  test('a malformed URL is a TypeError naming WORKFLOW_POSTGRES_URL', async () => {
    useWorld({ WORKFLOW_TARGET_WORLD: '@workflow/world-postgres', WORKFLOW_POSTGRES_URL: 'postgres://h:notaport/db' })
    await assert.rejects(ours.getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV').status, (e) => {
      assert.equal(e.name, 'TypeError')
      assert.match(e.message, /WORKFLOW_POSTGRES_URL/)
      return true
    })
  })

  test('an unsupported target names the supported ones', async () => {
    useWorld({ WORKFLOW_TARGET_WORLD: '@acme/world-redis' })
    await assert.rejects(ours.getRun('wrun_01ARZ3NDEKTSV4RRFFQ69G5FAV').status, (e) => {
      assert.ok(ourErrors.WorkflowRuntimeError.is(e))
      assert.match(e.message, /"@acme\/world-redis"/)
      assert.match(e.message, /"local"/)
      assert.match(e.message, /"@workflow\/world-postgres"/)
      return true
    })
  })

  test('sslmode=require against a server without TLS is refused with the reason', { skip }, async () => {
    const ssl = (await client.query('SHOW ssl')).rows[0].ssl
    const url = `${db.url}${db.url.includes('?') ? '&' : '?'}sslmode=require`
    const r = await binding.pgConnect({ url }).then(
      () => 'connected',
      (e) => e,
    )
    if (ssl === 'on') {
      assert.equal(r, 'connected')
    } else {
      assert.ok(r instanceof Error)
      assert.match(r.message, /Could not connect/)
    }
  })

  test('TLS as node-postgres decides it: none without sslmode, encrypted with sslmode=require', { skip }, async () => {
    const ssl = (await client.query('SHOW ssl')).rows[0].ssl
    const sep = db.url.includes('?') ? '&' : '?'
    const used = async (name, extra) => {
      const native = await binding.pgConnect({ url: `${db.url}${sep}application_name=${name}${extra}` })
      await native.readRuns()
      const rows = (
        await client.query(
          'SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1',
          [name],
        )
      ).rows
      return rows.map((r) => r.ssl)
    }
    const plain = await used('wfn_tls_none', '')
    assert.ok(plain.length > 0, 'the World holds a connection')
    assert.ok(plain.every((s) => s === false), `no TLS without sslmode: ${plain}`)
    if (ssl === 'on') {
      const enc = await used('wfn_tls_req', '&sslmode=require')
      assert.ok(enc.length > 0 && enc.every((s) => s === true), `TLS with sslmode=require: ${enc}`)
    }
  })

  test('a killed LISTEN connection: a live read and a waiting returnValue still finish', { skip }, async () => {
    useWorld({ WORKFLOW_TARGET_WORLD: '@workflow/world-postgres', WORKFLOW_POSTGRES_URL: db.url })
    const native = await binding.pgConnect({ url: db.url })
    const runId = `wrun_${binding.newUlid()}`
    await native.createEvent(
      runId,
      JSON.stringify({
        eventType: 'run_created',
        specVersion: 3,
        eventData: { deploymentId: 'postgres', workflowName: 'workflow//./x//wf', input: { __type: 'Uint8Array', data: 'ZGV2bFtbXV0=' } },
      }),
    )
    const name = `strm_${runId.slice(5)}_user`
    const reader = ours.getRun(runId).getReadable().getReader()
    const first = reader.read()
    const done = ours.getRun(runId).returnValue
    // the reader and the waiter are subscribed; kill every listener of this database
    await waitFor(async () => {
      const r = await client.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
      )
      return r.rows[0].n >= 1
    })
    await client.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    const frame = (text) => {
      const body = Buffer.from(`devl${text}`)
      const len = Buffer.alloc(4)
      len.writeUInt32BE(body.length)
      return Buffer.concat([len, body])
    }
    await native.writeStreamChunks(name, runId, [frame('["hello"]')])
    assert.equal((await first).value, 'hello')
    await native.closeStream(name, runId)
    assert.equal((await reader.read()).done, true)
    await native.createEvent(runId, JSON.stringify({ eventType: 'run_started', specVersion: 3 }))
    await native.createEvent(
      runId,
      JSON.stringify({ eventType: 'run_completed', specVersion: 3, eventData: { output: { __type: 'Uint8Array', data: Buffer.from('devl[7]').toString('base64') } } }),
    )
    assert.equal(await done, 7)
  })
})

async function waitFor(check) {
  for (let i = 0; i < 2000; i++) {
    if (await check()) return
    await new Promise((r) => setImmediate(r))
  }
  assert.fail('condition never became true')
}

