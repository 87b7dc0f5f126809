// Side by side with DBOS Transact and Restate (issue 12): the coordinator. Workloads
// (a) 1,000 sequential trivial steps, (b) a no-step workflow ×50, (c) 500 × 3-step
// workflows started at once — identical on every system, defined in common.mjs.
//
// Each system runs in a child process of its own, fresh for every round (a fresh data
// directory, database or server), which runs a warm-up pass and then the measured pass.
// Rounds are interleaved — every system once per round, the order rotated from round to
// round — and the figures reported are the medians over the rounds. Whatever a child
// announced (a data directory, a server pid, a database) is cleaned up here too once the
// child is gone, so a crashed or timed-out child leaves nothing behind.
//
// Used by bench/run.mjs (`node bench/run.mjs --peers-only [--quick]` runs only this).
// WFN_BENCH_PEERS=ours-disk,dbos,restate,... limits the systems (development);
// WFN_BENCH_PG_URL names the PostgreSQL server (see pg.mjs).
import { execFileSync, fork } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { median } from '../stats.mjs'
import { discard } from '../trash.mjs'
import { pgClient, PG_ADMIN_URL } from './pg.mjs'
import { installedVersion } from './versions.mjs'
import { SIZES } from './common.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)

/** The file-system type under `dir` (`df -T`), or 'unknown'. */
export function fsTypeOf(dir) {
  try {
    return execFileSync('df', ['-T', dir], { encoding: 'utf8' }).split('\n')[1].split(/\s+/)[1]
  } catch {
    return 'unknown'
  }
}

/** ", journaled" / ", no journal" for an ext4 directory (from /proc/fs/jbd2), else "". */
export function journalOf(dir) {
  try {
    if (fsTypeOf(dir) !== 'ext4') return ''
    const [maj, min] = execFileSync('stat', ['-c', '%Hd %Ld', dir], { encoding: 'utf8' }).trim().split(' ')
    const dev = fs.readFileSync(`/sys/dev/block/${maj}:${min}/uevent`, 'utf8').match(/DEVNAME=(\S+)/)?.[1]
    const jbd2 = fs.existsSync('/proc/fs/jbd2') ? fs.readdirSync('/proc/fs/jbd2') : []
    return dev && jbd2.some((e) => e.startsWith(`${dev}-`)) ? ', journaled' : ', no journal'
  } catch {
    return ''
  }
}

/** The systems, in the order of the first round. `ref` is the row the ratios compare with. */
function systems(env) {
  const disk = os.tmpdir()
  const inherited = env.WORKFLOW_NATIVE_SYNC
  const dflt = inherited === undefined ? 'default settings' : `WORKFLOW_NATIVE_SYNC=${inherited} (inherited)`
  const list = [
    { id: 'ours-disk', label: `workflow-native, ${dflt} (${fsTypeOf(disk)}${journalOf(disk)})`, script: 'ours-child.mjs', args: [disk], ref: true },
    { id: 'dbos', label: 'DBOS Transact', script: 'dbos-child.mjs', args: [], execArgv: ['--no-deprecation'] },
    { id: 'restate', label: 'Restate', script: 'restate-child.mjs', args: [disk] },
    { id: 'ours-pg', label: 'workflow-native on PostgreSQL (a worker in the process; same server as DBOS)', script: 'ours-pg-child.mjs', args: [] },
    { id: 'ours-disk-files', label: `workflow-native, in-place durability, WORKFLOW_NATIVE_SYNC=files (${fsTypeOf(disk)}${journalOf(disk)})`, script: 'ours-child.mjs', args: [disk], env: { WORKFLOW_NATIVE_SYNC: 'files' } },
    { id: 'ours-disk-off', label: `workflow-native, sync off (${fsTypeOf(disk)}${journalOf(disk)})`, script: 'ours-child.mjs', args: [disk], env: { WORKFLOW_NATIVE_SYNC: 'off' } },
  ]
  if (fs.existsSync('/dev/shm')) {
    list.push(
      { id: 'ours-shm', label: `workflow-native, ${dflt} (${fsTypeOf('/dev/shm')})`, script: 'ours-child.mjs', args: ['/dev/shm'] },
      { id: 'ours-shm-off', label: `workflow-native, sync off (${fsTypeOf('/dev/shm')})`, script: 'ours-child.mjs', args: ['/dev/shm'], env: { WORKFLOW_NATIVE_SYNC: 'off' } },
    )
  }
  // WFN_BENCH_EXTRA_DIR=<dir>: one more row of ours on another file system (e.g. a
  // journaled ext4 when the data disk has no journal; see journalOf())
  const extra = env.WFN_BENCH_EXTRA_DIR
  if (extra && fs.existsSync(extra)) {
    list.push({ id: 'ours-extra', label: `workflow-native, ${dflt} (${fsTypeOf(extra)}${journalOf(extra)}, ${extra})`, script: 'ours-child.mjs', args: [extra] })
  }
  // WFN_BENCH_PEERS=<id>,<id>: only these (development; ids above)
  const only = env.WFN_BENCH_PEERS ? new Set(env.WFN_BENCH_PEERS.split(',').map((x) => x.trim())) : null
  return only ? list.filter((s) => only.has(s.id)) : list
}

const procAlive = (pid) => fs.existsSync(`/proc/${pid}`)

/** Removes what a child announced and may have left behind. */
async function cleanUp(res, log) {
  if (res.serverPid && procAlive(res.serverPid)) {
    // Only the server this child started: a restate-server whose arguments name its data dir.
    let cmdline = ''
    try {
      cmdline = fs.readFileSync(`/proc/${res.serverPid}/cmdline`, 'utf8')
    } catch {}
    if (cmdline.includes('restate-server') && res.dataDir && cmdline.includes(res.dataDir)) {
      log(`  (stopping the restate-server the child left running, pid ${res.serverPid})`)
      try {
        process.kill(res.serverPid, 'SIGKILL')
      } catch {}
      for (let i = 0; i < 100 && procAlive(res.serverPid); i++) await new Promise((r) => setTimeout(r, 50))
    }
  }
  if (res.dataDir && path.basename(res.dataDir).startsWith('wfn-bench-peers-') && fs.existsSync(res.dataDir)) {
    discard(res.dataDir)
  }
  if (res.pgDatabase && /^wfn_bench_(dbos|ours)_\d+$/.test(res.pgDatabase)) {
    let c
    try {
      c = await pgClient(PG_ADMIN_URL)
      const { rows } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [res.pgDatabase])
      if (rows.length) {
        log(`  (dropping the database the child left, ${res.pgDatabase})`)
        await c.query(`DROP DATABASE IF EXISTS "${res.pgDatabase}" WITH (FORCE)`)
      }
    } catch (e) {
      log(`  could not drop ${res.pgDatabase}: ${e.message}`)
    } finally {
      if (c) await c.end().catch(() => {})
    }
  }
}

/** One child: resolves with its result message, or rejects with its error. */
function runOne(sys, { quick, env, timeoutMs, log, onChild }) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(here, sys.script), [...sys.args, ...(quick ? ['--quick'] : [])], {
      env: { ...env, ...(sys.env || {}) },
      execArgv: sys.execArgv || [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    onChild(child)
    const resources = {}
    let result
    let error
    const timer = setTimeout(() => {
      error = `timed out after ${timeoutMs / 1000} s`
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('message', (m) => {
      if (m.type === 'resource') Object.assign(resources, m)
      else if (m.type === 'result') result = m
      else if (m.type === 'error') error = error ? `${error}\n${m.message}` : m.message
    })
    child.once('error', (e) => {
      error = error ? `${error}\n${e.message}` : e.message
      // never spawned: no 'exit' will come
      if (child.pid === undefined) {
        clearTimeout(timer)
        onChild(null)
        reject(new Error(error))
      }
    })
    child.once('exit', async (code, signal) => {
      clearTimeout(timer)
      onChild(null)
      await cleanUp(resources, log)
      if (result && !error && code === 0) resolve(result)
      else reject(new Error(error || `exited with ${signal || code} without a result`))
    })
  })
}

async function machineNotes(env) {
  const notes = {
    cpu: `${(os.cpus()[0] && os.cpus()[0].model) || 'unknown'}, ${os.cpus().length} CPUs`,
    ramGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    disk: { dir: os.tmpdir(), type: fsTypeOf(os.tmpdir()) },
    tmpfs: fs.existsSync('/dev/shm') ? { dir: '/dev/shm', type: fsTypeOf('/dev/shm') } : null,
    versions: {
      dbos: installedVersion('@dbos-inc/dbos-sdk'),
      restateServer: installedVersion('@restatedev/restate-server'),
      restateSdk: installedVersion('@restatedev/restate-sdk'),
    },
    syncEnv: env.WORKFLOW_NATIVE_SYNC ?? null,
  }
  let c
  try {
    c = await pgClient(PG_ADMIN_URL)
    const show = async (name) => {
      try {
        return (await c.query(`SHOW ${name}`)).rows[0][name]
      } catch (e) {
        return `unknown (${e.message})`
      }
    }
    notes.pg = { version: (await c.query('SELECT version() AS v')).rows[0].v }
    for (const k of ['fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'commit_delay', 'shared_buffers', 'data_directory']) {
      notes.pg[k] = await show(k)
    }
    if (notes.pg.data_directory && !notes.pg.data_directory.startsWith('unknown')) {
      notes.pg.dataFsType = fsTypeOf(notes.pg.data_directory)
    }
  } catch (e) {
    notes.pg = { error: e.message }
  } finally {
    if (c) await c.end().catch(() => {})
  }
  // The Restate defaults that decide its durability, as the binary reports them.
  try {
    const bin = require.resolve(`@restatedev/restate-server-${os.platform()}-${os.arch()}/bin/restate-server`)
    const clean = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('RESTATE_')))
    const toml = execFileSync(bin, ['--dump-config'], { encoding: 'utf8', env: clean, stdio: ['ignore', 'pipe', 'ignore'] })
    const picked = []
    let section = ''
    for (const line of toml.split('\n')) {
      const s = line.match(/^\[(.+)\]$/)
      if (s) section = s[1]
      const kv = line.match(/^(default-num-partitions|default-provider|rocksdb-disable-wal|rocksdb-disable-wal-fsync) = (.+)$/)
      if (kv) picked.push(`${section ? `${section}.` : ''}${kv[1]} = ${kv[2]}`)
    }
    notes.restateDefaults = picked
  } catch (e) {
    notes.restateDefaults = [`unknown (${e.message})`]
  }
  return notes
}

/**
 * Runs the peer section. `env`: the environment the children get (the caller's, before it
 * set anything of its own). Resolves with the rows, the machine notes and the markdown.
 */
export async function runPeers({ quick = false, env = process.env, log = console.log } = {}) {
  const rounds = quick ? 1 : 3
  const timeoutMs = quick ? 5 * 60_000 : 15 * 60_000
  const list = systems(env)
  const notes = await machineNotes(env)
  notes.loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(' ')
  const byId = Object.fromEntries(list.map((s) => [s.id, { sys: s, rounds: [], error: null, info: null, sizes: null }]))

  // Ctrl-C / SIGTERM: stop the running child (SIGTERM, SIGKILL after 10 s); what it leaves
  // is cleaned up when it has exited.
  let current = null
  let aborted = false
  const onSignal = (sig) => {
    aborted = true
    log(`\n${sig}: stopping the peer benchmark`)
    const child = current
    if (child) {
      child.kill('SIGTERM')
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), 10_000).unref()
    }
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // The durability floor of workload a, once per round on the data disk: as many small
  // files as a has steps, each created, synced and its directory synced (issue 12).
  const { binding } = await import('../../lib/native.js')
  const floorSteps = (quick ? SIZES.quick : SIZES.full).steps
  const floors = []
  const extraDir = env.WFN_BENCH_EXTRA_DIR && fs.existsSync(env.WFN_BENCH_EXTRA_DIR) ? env.WFN_BENCH_EXTRA_DIR : null
  const extraFloors = []
  try {
    for (let r = 0; r < rounds && !aborted; r++) {
      for (const [base, into] of [[os.tmpdir(), floors], ...(extraDir ? [[extraDir, extraFloors]] : [])]) {
        const dir = fs.mkdtempSync(path.join(base, 'wfn-bench-sync-floor-'))
        try {
          into.push(Number(await binding.fsSyncFloor(path.join(dir, 'f'), floorSteps, 450)))
        } finally {
          discard(dir)
        }
        log(`peers round ${r + 1}/${rounds}: durability floor on ${base} (${floorSteps} × file + fdatasync + directory fsync): ${into.at(-1).toFixed(0)} ms`)
      }
      const order = list.map((_, i) => list[(i + r) % list.length])
      for (const sys of order) {
        if (aborted) break
        const slot = byId[sys.id]
        if (slot.error) continue // failed before: not retried
        log(`peers round ${r + 1}/${rounds}: ${sys.label} ...`)
        try {
          const res = await runOne(sys, { quick, env, timeoutMs, log, onChild: (c) => (current = c) })
          const m = res.measured
          slot.rounds.push(m)
          slot.info = res.info
          slot.sizes = res.sizes
          log(
            `  a ${m.aMs.toFixed(0)} ms   b ${m.bMedianMs.toFixed(2)} ms (p90 ${m.bP90Ms.toFixed(2)})   c ${m.cRunsPerSec.toFixed(0)} runs/s   (warm-up: a ${res.warmup.aMs.toFixed(0)} ms, b ${res.warmup.bMedianMs.toFixed(2)} ms, c ${res.warmup.cRunsPerSec.toFixed(0)} runs/s)`,
          )
        } catch (e) {
          slot.error = `round ${r + 1}: ${e.message}`
          log(`  FAILED: ${e.message}`)
        }
      }
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  if (aborted) throw new Error('peer benchmark interrupted')
  notes.loadAfter = os.loadavg().map((x) => x.toFixed(2)).join(' ')

  const rows = list.map((s) => {
    const slot = byId[s.id]
    const rs = slot.rounds
    const row = { id: s.id, label: s.label, ref: !!s.ref, error: slot.error, info: slot.info, sizes: slot.sizes, n: rs.length }
    if (rs.length) {
      row.aMs = median(rs.map((x) => x.aMs))
      row.bMs = median(rs.map((x) => x.bMedianMs))
      row.bP90Ms = median(rs.map((x) => x.bP90Ms))
      row.cRps = median(rs.map((x) => x.cRunsPerSec))
      row.perRound = rs
    }
    return row
  })
  const ref = rows.find((r) => r.ref && r.n)
  for (const row of rows) {
    if (!ref || !row.n) continue
    // > 1: ours (the reference row) is faster
    row.ratio = { a: row.aMs / ref.aMs, b: row.bMs / ref.bMs, c: ref.cRps / row.cRps }
  }
  const sizes = rows.find((r) => r.sizes)?.sizes
  const floor = floors.length ? { ms: median(floors), rounds: floors, steps: floorSteps } : null
  if (floor && ref) floor.ratio = ref.aMs / floor.ms
  const extraRow = rows.find((r) => r.id === 'ours-extra' && r.n)
  if (floor && extraFloors.length) {
    floor.extra = { dir: extraDir, ms: median(extraFloors), rounds: extraFloors }
    if (extraRow) floor.extra.ratio = extraRow.aMs / floor.extra.ms
  }
  for (const row of rows) log(consoleLine(row))
  if (floor) {
    log(`durability floor for a: ${floor.ms.toFixed(0)} ms; ours (default, data disk) ${floor.ratio ? `${floor.ratio.toFixed(2)}x the floor` : 'not measured'}`)
    if (floor.extra) log(`durability floor on ${floor.extra.dir}: ${floor.extra.ms.toFixed(0)} ms; ours there ${floor.extra.ratio ? `${floor.extra.ratio.toFixed(2)}x` : '-'}`)
  }
  return { rows, notes, rounds, quick, sizes, floor, markdown: markdown({ rows, notes, rounds, quick, sizes, floor }) }
}

const f2 = (x) => (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0))
const sec = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`)

function consoleLine(row) {
  if (!row.n) return `${row.label.padEnd(58)} FAILED: ${row.error.split('\n')[0]}`
  const r = row.ratio ? `   ratio to ours: a ${row.ratio.a.toFixed(2)}x, b ${row.ratio.b.toFixed(2)}x, c ${row.ratio.c.toFixed(2)}x` : ''
  return `${row.label.padEnd(58)} a ${sec(row.aMs).padStart(8)}   b ${f2(row.bMs).padStart(6)} ms (p90 ${f2(row.bP90Ms)})   c ${row.cRps.toFixed(0).padStart(5)} runs/s${r}${row.error ? `   (then failed: ${row.error.split('\n')[0]})` : ''}`
}

function label(row, notes) {
  if (row.id === 'dbos') {
    const pg = notes.pg || {}
    const server = pg.version
      ? `${pg.version.match(/PostgreSQL [\d.]+/)?.[0] ?? 'PostgreSQL'} (fsync ${pg.fsync}, synchronous_commit ${pg.synchronous_commit}; ${pg.dataFsType ?? 'unknown'})`
      : 'PostgreSQL (unavailable)'
    return `DBOS Transact ${row.info?.version ?? notes.versions.dbos}, ${server}`
  }
  if (row.id === 'restate') {
    return `Restate ${row.info?.serverVersion ?? notes.versions.restateServer}, server defaults (SDK ${row.info?.sdkVersion ?? notes.versions.restateSdk}; ${notes.disk.type})`
  }
  return row.label
}

function markdown({ rows, notes, rounds, quick, sizes, floor }) {
  const s = sizes || { steps: 1000, empties: 50, concurrent: 500, concurrentSteps: 3 }
  const x = (v) => `${v.toFixed(2)}×`
  const table = rows
    .map((row) =>
      row.n
        ? `| ${label(row, notes)} | ${sec(row.aMs)} | ${f2(row.bMs)} ms (p90 ${f2(row.bP90Ms)}) | ${row.cRps.toFixed(0)} runs/s | ${row.ratio ? `${x(row.ratio.a)} / ${x(row.ratio.b)} / ${x(row.ratio.c)}` : '–'} |`
        : `| ${label(row, notes)} | failed: ${row.error.split('\n')[0].replace(/\|/g, '\\|')} | | | |`,
    )
    .join('\n')
  const perRound = rows
    .filter((r) => r.n)
    .map(
      (r) =>
        `- ${r.label}: a ${r.perRound.map((m) => sec(m.aMs)).join(' / ')}; b ${r.perRound.map((m) => `${f2(m.bMedianMs)} ms`).join(' / ')}; c ${r.perRound.map((m) => m.cRunsPerSec.toFixed(0)).join(' / ')} runs/s`,
    )
    .join('\n')
  const failures = rows.filter((r) => r.error).map((r) => `- ${r.label}: ${r.error.split('\n')[0]}`).join('\n')
  const pg = notes.pg || {}
  return `### Side by side with DBOS Transact and Restate (issue 12)

Workloads, the same on every system: (a) one workflow of ${s.steps.toLocaleString('en-US')} sequential trivial steps (each step
returns its input + 1), start → result; (b) a workflow with no steps, start → result, median (and
p90) of ${s.empties} runs one after the other; (c) ${s.concurrent} workflows of ${s.concurrentSteps} steps started at once, runs/s from
the first start to the last result. Every system runs in a child process of its own, fresh for each
round (new data directory, database, server), a warm-up pass of all three workloads first; ${rounds}
interleaved round${rounds === 1 ? '' : 's'} (each system once per round, the order rotated), medians of the rounds${quick ? ' — **quick run: reduced sizes, one round**' : ''}.
Finished data directories are moved aside and removed only when the whole benchmark ends: on this
VM's ext4 (no journal) the inode allocator skips inodes freed in the last minutes, so removing one
round's tens of thousands of files slowed file creation in the next rounds 5–10× (see bench/trash.mjs).
Ratio = how many times ours (the first row: default settings, on the data disk) is faster —
the other system's time / ours for a and b, our runs/s / its runs/s for c; below 1, it is faster.

| system | a: ${s.steps.toLocaleString('en-US')} steps | b: no-step workflow | c: ${s.concurrent} × ${s.concurrentSteps} steps | ratio a / b / c |
|---|---|---|---|---|
${table}

How each system runs: ours, the embedded engine in the benchmark process (\`start(wf, [arg])\` →
\`run.returnValue\`), on a fresh data directory on the file system named; the default durability is
the durability log (one \`fdatasync\` per group commit); "in-place" is \`WORKFLOW_NATIVE_SYNC=files\` (every
file and directory synced); "sync off" is the same with \`WORKFLOW_NATIVE_SYNC=off\`. DBOS, launched in the benchmark process (\`DBOS.registerWorkflow\` /
\`DBOS.registerStep\`, \`DBOS.startWorkflow(wf)(arg)\` → \`getResult()\`) on a database of its own,
created and dropped by the benchmark, on the local PostgreSQL as configured (not changed).
Restate, its server binary from \`@restatedev/restate-server\` with server defaults (only its listen
addresses — loopback — and its fresh data directory set), stopped by pid; the workflows are Restate
workflows (\`restate.workflow\`, each step a \`ctx.run\`) served by the SDK from an HTTP/2 endpoint in the
benchmark process, registered through the admin API, and invoked through the HTTP ingress
(\`POST /<workflow>/<key>/run\`, which answers with the result; keep-alive connections).

${floor ? `Durability floor of (a), same disk, same run: ${floor.steps.toLocaleString('en-US')} × (create a 450-byte file, \`fdatasync\` it, \`fsync\` its directory) = ${sec(floor.ms)} (rounds: ${floor.rounds.map(sec).join(' / ')}); ours (default, data disk) on a: **${floor.ratio ? `${floor.ratio.toFixed(2)}×` : '–'} the floor** (target ≤ 2×).${floor.extra ? ` On \`${floor.extra.dir}\`: floor ${sec(floor.extra.ms)} (rounds: ${floor.extra.rounds.map(sec).join(' / ')}); ours there **${floor.extra.ratio ? `${floor.extra.ratio.toFixed(2)}×` : '–'} the floor**.` : ''}\n\n` : ''}Per round:
${perRound}
${failures ? `\nFailures:\n${failures}\n` : ''}
Machine: ${notes.cpu}, ${notes.ramGiB} GiB RAM; ${notes.kernel}; Node ${notes.node}; load average (1/5/15 min)
${notes.loadBefore} before, ${notes.loadAfter} after. Data disk: ${notes.disk.type} (\`${notes.disk.dir}\`: ours, Restate's data)${notes.tmpfs ? `; tmpfs: ${notes.tmpfs.type} (\`${notes.tmpfs.dir}\`)` : ''}.
PostgreSQL: ${pg.error ? `unavailable (${pg.error})` : `${pg.version}; data directory \`${pg.data_directory}\` on ${pg.dataFsType ?? 'unknown'}; in effect: fsync ${pg.fsync}, synchronous_commit ${pg.synchronous_commit}, wal_sync_method ${pg.wal_sync_method}, full_page_writes ${pg.full_page_writes}, commit_delay ${pg.commit_delay}, shared_buffers ${pg.shared_buffers}`}.
Restate defaults (\`restate-server --dump-config\`): ${notes.restateDefaults.map((d) => `\`${d}\``).join(', ')}.
workflow-native durability: \`WORKFLOW_NATIVE_SYNC\` ${notes.syncEnv === null ? 'unset (default) for the default rows' : `= ${notes.syncEnv} in the environment, passed to the default rows`}.
`
}
