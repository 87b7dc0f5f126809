'use strict'
// Finds the native addon for a platform and loads it: a local build first (what
// `npm run build` leaves in a checkout, also when an app installs that checkout), then the
// platform package npm installs as an optional dependency (`workflow-native-<platform>`).
// When neither is there, the error names the platform and says how to get a binary.
//
// The platform is a parameter so the messages can be tested for platforms this machine is not.

const fs = require('node:fs')
const path = require('node:path')
const { name: NAME, version: VERSION } = require('../package.json')

const ROOT = path.join(__dirname, '..')

/** Platform ids with a prebuilt package: the same as package.json's optionalDependencies (a test checks). */
const PREBUILT = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']

/**
 * One file of a prebuilt platform: its local build, its package, or that package's
 * package.json. Every `require` is a string literal, so file tracers (Next.js output tracing,
 * @vercel/nft) see each file the loader may load, and sits inside `try`, so a bundler that
 * meets this file counts the ones that are not installed as optional, not as build errors.
 */
function requirePrebuilt(kind, id) {
  try {
    switch (`${kind} ${id}`) {
      case 'local linux-x64-gnu':
        return require('../workflow-native.linux-x64-gnu.node')
      case 'package linux-x64-gnu':
        return require('workflow-native-linux-x64-gnu')
      case 'manifest linux-x64-gnu':
        return require('workflow-native-linux-x64-gnu/package.json')
      case 'local linux-arm64-gnu':
        return require('../workflow-native.linux-arm64-gnu.node')
      case 'package linux-arm64-gnu':
        return require('workflow-native-linux-arm64-gnu')
      case 'manifest linux-arm64-gnu':
        return require('workflow-native-linux-arm64-gnu/package.json')
      case 'local linux-x64-musl':
        return require('../workflow-native.linux-x64-musl.node')
      case 'package linux-x64-musl':
        return require('workflow-native-linux-x64-musl')
      case 'manifest linux-x64-musl':
        return require('workflow-native-linux-x64-musl/package.json')
      case 'local linux-arm64-musl':
        return require('../workflow-native.linux-arm64-musl.node')
      case 'package linux-arm64-musl':
        return require('workflow-native-linux-arm64-musl')
      case 'manifest linux-arm64-musl':
        return require('workflow-native-linux-arm64-musl/package.json')
      case 'local darwin-x64':
        return require('../workflow-native.darwin-x64.node')
      case 'package darwin-x64':
        return require('workflow-native-darwin-x64')
      case 'manifest darwin-x64':
        return require('workflow-native-darwin-x64/package.json')
      case 'local darwin-arm64':
        return require('../workflow-native.darwin-arm64.node')
      case 'package darwin-arm64':
        return require('workflow-native-darwin-arm64')
      case 'manifest darwin-arm64':
        return require('workflow-native-darwin-arm64/package.json')
      case 'local win32-x64-msvc':
        return require('../workflow-native.win32-x64-msvc.node')
      case 'package win32-x64-msvc':
        return require('workflow-native-win32-x64-msvc')
      case 'manifest win32-x64-msvc':
        return require('workflow-native-win32-x64-msvc/package.json')
      default:
        throw new Error(`no ${kind} for ${id}`)
    }
  } catch (e) {
    throw e // (the `try` only marks the requires optional for bundlers)
  }
}

/** `require(file)` of a computed path (a local build for a platform without a package). */
function requireFile(file) {
  try {
    return require(file)
  } catch (e) {
    throw e // (see requirePrebuilt)
  }
}

/** The running process's platform: `{ platform, arch, libc }` (`libc` on Linux only). */
function currentPlatform() {
  const host = { platform: process.platform, arch: process.arch }
  if (host.platform === 'linux') host.libc = linuxLibc()
  return host
}

/** `'gnu'` or `'musl'`: the C library this Node runs on. */
function linuxLibc() {
  // glibc's ldd is a shell script naming glibc; musl's is a link to the musl loader.
  try {
    if (fs.readFileSync('/usr/bin/ldd', 'latin1').includes('musl')) return 'musl'
  } catch {
    // No ldd (distroless images and the like): ask Node, below.
  }
  const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null
  return report && report.header && report.header.glibcVersionRuntime ? 'gnu' : 'musl'
}

/** The napi-rs name of a platform: `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, … */
function platformId({ platform, arch, libc }) {
  if (platform === 'linux') return `linux-${arch}-${libc || 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** A platform in words, for messages: `linux arm64 with musl libc`. */
function describe({ platform, arch, libc }) {
  const c = platform !== 'linux' ? '' : libc === 'musl' ? ' with musl libc' : ' with glibc'
  return `${platform} ${arch}${c}`
}

const FROM_SOURCE =
  'To build it from source (needs Rust stable and Node >= 20): in a checkout of the workflow-native ' +
  'repository run `npm install && npm run build:release`, then install that directory in your ' +
  'project (`npm install /path/to/workflow-native`).'

function loadError(message, host, cause) {
  const err = new Error(message, cause === undefined ? undefined : { cause })
  err.code = 'ERR_WORKFLOW_NATIVE_BINARY'
  err.platform = platformId(host)
  return err
}

/** `load()`; a binary that is there but cannot be loaded is named in the error. */
function loadBinary(load, host, what) {
  try {
    return load()
  } catch (e) {
    throw loadError(
      `workflow-native: the binary for ${describe(host)} (${platformId(host)}) in ${what} could not be loaded: ${e && e.message}`,
      host,
      e,
    )
  }
}

/**
 * The native addon for `host` (default: this process's platform): a local build
 * `<root>/workflow-native.<id>.node` (`root`: this package's directory), else the package
 * `workflow-native-<id>` at this package's version. Throws an `Error` with `code`
 * `ERR_WORKFLOW_NATIVE_BINARY` and `platform` (the id) when there is none or it cannot be
 * loaded.
 */
function loadNative(host = currentPlatform(), { root = ROOT } = {}) {
  const id = platformId(host)
  const prebuilt = PREBUILT.includes(id)
  const local = path.join(root, `workflow-native.${id}.node`)
  if (fs.existsSync(local)) {
    // A platform without a package (built from source) or another root: a computed path.
    const load = prebuilt && root === ROOT ? () => requirePrebuilt('local', id) : () => requireFile(local)
    return loadBinary(load, host, local)
  }
  if (!prebuilt) {
    throw loadError(
      `workflow-native has no prebuilt binary for ${describe(host)} (${id}); prebuilt binaries exist for ` +
        `${PREBUILT.join(', ')}. ${FROM_SOURCE}`,
      host,
    )
  }
  const pkg = `${NAME}-${id}`
  let found
  try {
    found = requirePrebuilt('manifest', id).version
  } catch (e) {
    if (!e || e.code !== 'MODULE_NOT_FOUND') throw e
    throw loadError(
      `workflow-native: the binary for ${describe(host)} (${id}) is in the package ${pkg}@${VERSION}, which is ` +
        `not installed. npm installs it with workflow-native on this platform unless optional dependencies ` +
        `are omitted (--omit=optional, --no-optional); install it with \`npm install ${pkg}@${VERSION}\`. ` +
        FROM_SOURCE,
      host,
    )
  }
  if (found !== VERSION) {
    throw loadError(
      `workflow-native ${VERSION} needs ${pkg} ${VERSION}, but ${found} is installed: install the same ` +
        `version, \`npm install ${pkg}@${VERSION}\`.`,
      host,
    )
  }
  return loadBinary(() => requirePrebuilt('package', id), host, `the package ${pkg}`)
}

module.exports = { loadNative, currentPlatform, platformId, PREBUILT }
