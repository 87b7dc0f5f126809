// The package as npm users get it: a clean checkout (the files git tracks, nothing built)
// packs the main package and this platform's package; both tarballs install into a fresh
// project, offline, with no Rust toolchain on PATH; a CommonJS and an ES module script there
// start an engine workflow and read its result, status and stream back.
//
// The checkout lives at a fixed path under target/ and builds into this repository's target
// directory (CARGO_TARGET_DIR), so cargo reuses what it compiled before instead of building
// every dependency again; it is removed afterwards, like the temporary project.
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { currentPlatform, platformId } = require('../lib/loader.js')
const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const id = platformId(currentPlatform())

/** npm's own script, to run it under a PATH that has nothing but `node`. */
function npmCli() {
  if (process.env.npm_execpath && /npm-cli\.js$/.test(process.env.npm_execpath)) return process.env.npm_execpath
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, 'npm')
    if (fs.existsSync(candidate)) return fs.realpathSync(candidate)
  }
  throw new Error('npm not found on PATH')
}

function run(cmd, args, opts) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts })
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`)
  }
  return r.stdout
}

/** A copy of what a clone of this repository holds: the files git tracks, mtimes kept. */
function cleanCheckout(dest) {
  fs.rmSync(dest, { recursive: true, force: true })
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: root,
    encoding: 'utf8',
  })
    .split('\0')
    .filter(Boolean)
  for (const file of files) {
    const from = path.join(root, file)
    if (!fs.existsSync(from)) continue // deleted in the working tree
    fs.mkdirSync(path.dirname(path.join(dest, file)), { recursive: true })
    fs.cpSync(from, path.join(dest, file), { preserveTimestamps: true })
  }
}

function npmPack(cli, cwd, dir, dest) {
  const out = run(process.execPath, [cli, 'pack', dir, '--json', '--pack-destination', dest], { cwd })
  const [info] = JSON.parse(out.slice(out.indexOf('[')))
  return { file: path.join(dest, info.filename), files: info.files.map((f) => f.path) }
}

const SCRIPT_BODY = `
const double = step('double', async (x) => x * 2)
const emit = step('emit', async (values) => {
  const writer = getWritable().getWriter()
  for (const v of values) await writer.write(v)
  await writer.close()
})
const wf = workflow('packed', async (x) => {
  const y = await double(x)
  await emit([x, y])
  return { x, y }
})
const run = await start(wf, [21])
const value = await run.returnValue
const again = getRun(run.runId)
const chunks = []
for await (const chunk of again.getReadable()) chunks.push(chunk)
console.log(JSON.stringify({ runId: run.runId, value, status: await again.status, chunks }))
`

const CJS = `'use strict'
const { workflow, step, getWritable } = require('workflow-native/workflow')
const { start, getRun } = require('workflow-native/api')
;(async () => {${SCRIPT_BODY}})().catch((e) => { console.error(e); process.exit(1) })
`

const ESM = `import { workflow, step, getWritable } from 'workflow-native/workflow'
import { start, getRun } from 'workflow-native'
${SCRIPT_BODY}`

test('a clean checkout packs a main and a platform package that install and run with no Rust toolchain', { timeout: 30 * 60_000 }, async (t) => {
  const checkout = path.join(root, 'target', 'pack-test', 'checkout')
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-pack-'))
  t.after(() => {
    fs.rmSync(tmp, { recursive: true, force: true })
    fs.rmSync(path.dirname(checkout), { recursive: true, force: true })
  })
  const cli = npmCli()

  // 1. The checkout: sources only (no binary, no generated JS); dependencies as `npm install`
  //    would leave them.
  cleanCheckout(checkout)
  assert.ok(!fs.existsSync(path.join(checkout, `workflow-native.${id}.node`)))
  assert.ok(!fs.existsSync(path.join(checkout, 'lib', 'vendor')))
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(checkout, 'node_modules'), 'dir')

  // 2. Build this platform's package and pack both (the main package's prepack bundles what
  //    it generates).
  run(process.execPath, [path.join(checkout, 'scripts', 'build-platform.mjs'), '--profile', 'ci'], {
    cwd: checkout,
    env: { ...process.env, CARGO_TARGET_DIR: path.join(root, 'target') },
  })
  const main = npmPack(cli, checkout, '.', tmp)
  const platform = npmPack(cli, checkout, `./npm/${id}`, tmp)
  assert.ok(main.files.includes('lib/vendor/devalue.cjs'), main.files.join(' '))
  assert.ok(main.files.includes('lib/loader.js'))
  assert.ok(main.files.includes('workflow.d.ts'))
  assert.deepEqual(main.files.filter((f) => f.endsWith('.node')), [], 'the main package carries no binary')
  assert.ok(platform.files.includes(`workflow-native.${id}.node`), platform.files.join(' '))
  // The main package's one runtime dependency, packed from what is installed here.
  const ms = npmPack(cli, tmp, path.join(root, 'node_modules', 'ms'), tmp)

  // 3. A fresh project, installed offline from the tarballs with an empty cache, under a PATH
  //    holding only `node`.
  const bin = path.join(tmp, 'bin')
  fs.mkdirSync(bin)
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  const env = {
    HOME: tmp,
    PATH: bin,
    npm_config_cache: path.join(tmp, 'npm-cache'),
    npm_config_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
  }
  for (const tool of ['cargo', 'rustc']) {
    const r = spawnSync(tool, ['--version'], { env })
    assert.equal(r.error && r.error.code, 'ENOENT', `${tool} must not be on the test PATH`)
  }
  const app = path.join(tmp, 'app')
  fs.mkdirSync(app)
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({
      name: 'fresh-app',
      private: true,
      dependencies: {
        'workflow-native': `file:${main.file}`,
        [`workflow-native-${id}`]: `file:${platform.file}`,
        ms: `file:${ms.file}`,
      },
    }),
  )
  run(process.execPath, [cli, 'install'], { cwd: app, env })
  const installed = JSON.parse(
    fs.readFileSync(path.join(app, 'node_modules', `workflow-native-${id}`, 'package.json'), 'utf8'),
  )
  assert.equal(installed.version, version)
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'workflow-native', `workflow-native.${id}.node`)))

  // 4. CommonJS and ESM: an engine workflow started and read back.
  fs.writeFileSync(path.join(app, 'check.cjs'), CJS)
  fs.writeFileSync(path.join(app, 'check.mjs'), ESM)
  for (const script of ['check.cjs', 'check.mjs']) {
    const out = run(process.execPath, [script], {
      cwd: app,
      env: { ...env, WORKFLOW_LOCAL_DATA_DIR: path.join(app, `data-${script}`) },
      timeout: 120_000,
    })
    const result = JSON.parse(out.trim().split('\n').pop())
    assert.match(result.runId, /^wrun_/, script)
    assert.deepEqual(result.value, { x: 21, y: 42 }, script)
    assert.equal(result.status, 'completed', script)
    assert.deepEqual(result.chunks, [21, 42], script)
    // The run is on disk in world-local's layout.
    assert.ok(fs.existsSync(path.join(app, `data-${script}`, 'runs', `${result.runId}.json`)), script)
  }

  // 5. The loader in the installed layout: a platform package of another version, then none.
  const load = () =>
    spawnSync(process.execPath, ['-e', "require('workflow-native')"], { cwd: app, env, encoding: 'utf8' })
  const platformJson = path.join(app, 'node_modules', `workflow-native-${id}`, 'package.json')
  fs.writeFileSync(platformJson, JSON.stringify({ ...installed, version: '0.0.0-other' }))
  const mismatch = load()
  assert.notEqual(mismatch.status, 0)
  assert.ok(
    mismatch.stderr.includes(`workflow-native ${version} needs workflow-native-${id} ${version}, but 0.0.0-other is installed`),
    mismatch.stderr,
  )
  fs.rmSync(path.dirname(platformJson), { recursive: true })
  const missing = load()
  assert.notEqual(missing.status, 0)
  assert.ok(missing.stderr.includes(`(${id}) is in the package workflow-native-${id}@${version}, which is not installed`), missing.stderr)
  assert.ok(missing.stderr.includes(`npm install workflow-native-${id}@${version}`), missing.stderr)
})
