// The peer benchmark's harness (bench/peers/, issue 12): the workloads are what they say
// — (a) one n-step run, (b) no-step runs one after the other, (c) runs all started before
// any finished — a wrong result fails the bench instead of being timed, and the
// coordinator runs our engine in a child with the environment passed through, leaving no
// data directory behind. DBOS and Restate need a PostgreSQL server and a server binary:
// they are exercised by `node bench/run.mjs --peers-only --quick`, not here.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { SIZES, runWorkloads } from '../bench/peers/common.mjs'
import { runPeers } from '../bench/peers/coordinator.mjs'

/** A system in memory recording what it was asked and how many runs were in flight. */
function fakeSystem({ wrongAt = -1 } = {}) {
  const calls = []
  let inFlight = 0
  let maxInFlight = 0
  let n = 0
  const run = async (kind, arg, value) => {
    const i = n++
    calls.push({ kind, arg, inFlightAtStart: inFlight })
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    await new Promise((r) => setImmediate(r))
    inFlight--
    return i === wrongAt ? value + 1 : value
  }
  return {
    calls,
    maxInFlight: () => maxInFlight,
    sys: { steps: (k) => run('steps', k, k), empty: (x) => run('empty', x, x) },
  }
}

test('runWorkloads: (a) one run of n steps, (b) sequential no-step runs, (c) all runs started at once', async () => {
  const sz = SIZES.quick
  const fake = fakeSystem()
  const m = await runWorkloads(fake.sys, sz)
  const [a, ...rest] = fake.calls
  assert.deepEqual({ kind: a.kind, arg: a.arg }, { kind: 'steps', arg: sz.steps })
  const b = rest.slice(0, sz.empties)
  assert.ok(b.every((c, i) => c.kind === 'empty' && c.arg === i && c.inFlightAtStart === 0))
  const c = rest.slice(sz.empties)
  assert.equal(c.length, sz.concurrent)
  assert.ok(c.every((x) => x.kind === 'steps' && x.arg === sz.concurrentSteps))
  assert.equal(fake.maxInFlight(), sz.concurrent) // every run of (c) was in flight together
  for (const k of ['aMs', 'bMedianMs', 'bP90Ms', 'cMs', 'cRunsPerSec']) assert.ok(Number.isFinite(m[k]) && m[k] > 0, k)
  assert.ok(m.bP90Ms >= m.bMedianMs)
  assert.equal(SIZES.full.steps, 1000)
  assert.equal(SIZES.full.empties, 50)
  assert.equal(SIZES.full.concurrent, 500)
  assert.equal(SIZES.full.concurrentSteps, 3)
})

test('runWorkloads: a wrong result fails the bench, in each workload', async () => {
  const sz = SIZES.quick
  for (const [wrongAt, what] of [
    [0, /\(a\) 200-step workflow: result 201, expected 200/],
    [3, /\(b\) no-step workflow: result 3, expected 2/],
    [1 + sz.empties + 7, /\(c\) 3-step workflow: result 4, expected 3/],
  ]) {
    await assert.rejects(runWorkloads(fakeSystem({ wrongAt }).sys, sz), what)
  }
})

const shmEntries = () => fs.readdirSync('/dev/shm').filter((f) => f.startsWith('wfn-bench-peers-'))

test(
  'coordinator: our engine in a child, WORKFLOW_NATIVE_SYNC passed through, nothing left behind',
  { skip: !fs.existsSync('/dev/shm') && 'no /dev/shm', timeout: 300_000 },
  async () => {
    const before = shmEntries()
    const env = { ...process.env, WFN_BENCH_PEERS: 'ours-shm,ours-shm-off' }
    delete env.WORKFLOW_NATIVE_SYNC
    const plain = await runPeers({ quick: true, env, log: () => {} })
    const inherited = await runPeers({ quick: true, env: { ...env, WORKFLOW_NATIVE_SYNC: 'off' }, log: () => {} })
    for (const r of [...plain.rows, ...inherited.rows]) {
      assert.equal(r.error, null)
      assert.equal(r.n, 1)
      assert.ok(r.aMs > 0 && r.bMs > 0 && r.cRps > 0)
    }
    const sync = (res, id) => res.rows.find((r) => r.id === id).info.sync
    assert.equal(sync(plain, 'ours-shm'), null)
    assert.equal(sync(plain, 'ours-shm-off'), 'off')
    assert.equal(sync(inherited, 'ours-shm'), 'off')
    assert.match(inherited.rows.find((r) => r.id === 'ours-shm').label, /WORKFLOW_NATIVE_SYNC=off \(inherited\)/)
    assert.match(plain.markdown, /\| workflow-native, sync off \(tmpfs\) \| \d/)
    assert.deepEqual(shmEntries(), before)
  },
)
