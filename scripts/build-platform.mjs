// Builds this machine's platform package, npm/<platform>/, ready for `npm pack ./npm/<platform>`:
// the addon compiled for the host and put where that package's `files` expects it. The other
// platforms are built by .github/workflows/release.yml. Arguments go to `napi build`
// (default `--release`; the tests pass `--profile ci`).
//
//   npm run build:platform                 # release build (lto, stripped)
//   npm run build:platform -- --profile ci
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { currentPlatform, platformId, PREBUILT } = require('../lib/loader.js')

const id = platformId(currentPlatform())
if (!PREBUILT.includes(id)) {
  console.error(`build-platform: no platform package for ${id} (packages exist for ${PREBUILT.join(', ')})`)
  process.exit(1)
}
const outDir = path.join(root, 'npm', id)
const args = process.argv.slice(2)
if (!args.some((a) => a === '--release' || a === '-r' || a.startsWith('--profile'))) args.push('--release')

const cliPkg = require.resolve('@napi-rs/cli/package.json')
const cli = path.join(path.dirname(cliPkg), JSON.parse(fs.readFileSync(cliPkg, 'utf8')).bin.napi)
const r = spawnSync(
  process.execPath,
  // The generated type file goes where `npm run build` puts it, not into the package.
  [cli, 'build', '--platform', '--no-js', '--output-dir', outDir, '--dts', path.relative(outDir, path.join(root, 'binding.d.ts')), ...args],
  { cwd: root, stdio: 'inherit' },
)
if (r.status !== 0) process.exit(r.status ?? 1)

const binary = path.join(outDir, `workflow-native.${id}.node`)
if (!fs.existsSync(binary)) {
  console.error(`build-platform: napi build finished but ${binary} is missing`)
  process.exit(1)
}
console.log(`build-platform: ${path.relative(root, binary)} (pack it with: npm pack ./npm/${id})`)
