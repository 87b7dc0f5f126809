// The loader (lib/loader.js): which binary it loads, what it says when there is none, and
// that the platform packages, optionalDependencies and napi targets describe the same set.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { loadNative, currentPlatform, platformId, PREBUILT } = require('../lib/loader.js')
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

/** What napi-rs calls each Rust target, and the os/cpu/libc npm matches it by. */
const TARGETS = {
  'x86_64-unknown-linux-gnu': { id: 'linux-x64-gnu', os: 'linux', cpu: 'x64', libc: 'glibc' },
  'aarch64-unknown-linux-gnu': { id: 'linux-arm64-gnu', os: 'linux', cpu: 'arm64', libc: 'glibc' },
  'x86_64-unknown-linux-musl': { id: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl' },
  'aarch64-unknown-linux-musl': { id: 'linux-arm64-musl', os: 'linux', cpu: 'arm64', libc: 'musl' },
  'x86_64-apple-darwin': { id: 'darwin-x64', os: 'darwin', cpu: 'x64' },
  'aarch64-apple-darwin': { id: 'darwin-arm64', os: 'darwin', cpu: 'arm64' },
  'x86_64-pc-windows-msvc': { id: 'win32-x64-msvc', os: 'win32', cpu: 'x64' },
}

function thrown(fn) {
  try {
    fn()
  } catch (e) {
    return e
  }
  assert.fail('expected an error')
}

test('an unsupported platform is named in the error, with the platforms that have binaries and how to build from source', () => {
  const err = thrown(() => loadNative({ platform: 'freebsd', arch: 'x64' }))
  assert.equal(err.code, 'ERR_WORKFLOW_NATIVE_BINARY')
  assert.equal(err.platform, 'freebsd-x64')
  assert.match(err.message, /no prebuilt binary for freebsd x64 \(freebsd-x64\)/)
  for (const id of PREBUILT) assert.ok(err.message.includes(id), `lists ${id}: ${err.message}`)
  assert.match(err.message, /build it from source/i)
  assert.match(err.message, /npm run build:release/)
  assert.doesNotMatch(err.message, /npm bug|package-lock/i)
})

test('Windows on arm64 and Linux on an unsupported CPU are unsupported platforms too', () => {
  const win = thrown(() => loadNative({ platform: 'win32', arch: 'arm64' }))
  assert.equal(win.platform, 'win32-arm64-msvc')
  assert.match(win.message, /no prebuilt binary for win32 arm64 \(win32-arm64-msvc\)/)
  const riscv = thrown(() => loadNative({ platform: 'linux', arch: 'riscv64', libc: 'musl' }))
  assert.equal(riscv.platform, 'linux-riscv64-musl')
  assert.match(riscv.message, /no prebuilt binary for linux riscv64 with musl libc \(linux-riscv64-musl\)/)
})

test('a supported platform whose package is not installed names the platform and the package to install', () => {
  // This checkout has no binary for Linux arm64 with musl and no such package installed.
  const err = thrown(() => loadNative({ platform: 'linux', arch: 'arm64', libc: 'musl' }))
  assert.equal(err.code, 'ERR_WORKFLOW_NATIVE_BINARY')
  assert.equal(err.platform, 'linux-arm64-musl')
  assert.match(err.message, /binary for linux arm64 with musl libc \(linux-arm64-musl\)/)
  assert.ok(err.message.includes(`npm install workflow-native-linux-arm64-musl@${manifest.version}`), err.message)
  assert.match(err.message, /--omit=optional/)
  assert.doesNotMatch(err.message, /npm bug|package-lock/i)
})

test('a binary that is there but cannot be loaded is reported with its path and the reason', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-loader-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const host = { platform: 'linux', arch: 'x64', libc: 'gnu' }
  const file = path.join(dir, 'workflow-native.linux-x64-gnu.node')
  fs.writeFileSync(file, 'not a shared library')
  const err = thrown(() => loadNative(host, { root: dir }))
  assert.equal(err.code, 'ERR_WORKFLOW_NATIVE_BINARY')
  assert.equal(err.platform, 'linux-x64-gnu')
  assert.ok(err.message.includes(file), err.message)
  assert.match(err.message, /could not be loaded: /)
  assert.ok(err.cause instanceof Error)
  assert.ok(err.message.endsWith(err.cause.message), err.message)
})

test('this platform loads: the native addon with its classes', () => {
  const host = currentPlatform()
  assert.ok(PREBUILT.includes(platformId(host)), `tests run on a prebuilt platform, got ${platformId(host)}`)
  const binding = loadNative()
  assert.equal(typeof binding.NativeWorld, 'function')
  assert.equal(typeof binding.errorMarker(), 'string')
  // The same module object as the package uses (one load per process).
  assert.equal(loadNative(host), binding)
})

test('platform detection on this machine: libc matches what Node reports', () => {
  const host = currentPlatform()
  assert.equal(host.platform, process.platform)
  assert.equal(host.arch, process.arch)
  if (process.platform === 'linux') {
    const glibc = process.report.getReport().header.glibcVersionRuntime
    assert.equal(host.libc, glibc ? 'gnu' : 'musl')
  }
})

test('napi targets, npm/<platform> packages and optionalDependencies list the same platforms at one version', () => {
  const targets = manifest.napi.targets
  assert.deepEqual([...targets].sort(), Object.keys(TARGETS).sort())
  const ids = targets.map((t) => TARGETS[t].id)
  assert.deepEqual([...PREBUILT].sort(), [...ids].sort())
  assert.deepEqual(
    manifest.optionalDependencies,
    Object.fromEntries(ids.map((id) => [`workflow-native-${id}`, manifest.version])),
  )
  assert.deepEqual(fs.readdirSync(path.join(root, 'npm')).sort(), [...ids].sort())
  for (const target of targets) {
    const { id, os: osName, cpu, libc } = TARGETS[target]
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'npm', id, 'package.json'), 'utf8'))
    assert.equal(pkg.name, `workflow-native-${id}`)
    assert.equal(pkg.version, manifest.version, pkg.name)
    assert.deepEqual(pkg.os, [osName], pkg.name)
    assert.deepEqual(pkg.cpu, [cpu], pkg.name)
    assert.deepEqual(pkg.libc, libc ? [libc] : undefined, pkg.name)
    assert.equal(pkg.main, `workflow-native.${id}.node`)
    assert.deepEqual(pkg.files, [pkg.main])
  }
})
