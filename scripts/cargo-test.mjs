// Runs the Rust core's tests with the same target triple and profile as `napi build`,
// so both share one target directory and dependencies are compiled once.
import { execFileSync, spawnSync } from 'node:child_process'

const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' })
  .split('\n')
  .find((l) => l.startsWith('host: '))
  ?.slice(6)
  .trim()
const args = ['test', '--profile', 'ci', '-p', 'workflow-core', ...(host ? ['--target', host] : [])]
const r = spawnSync('cargo', args, { stdio: 'inherit' })
process.exit(r.status ?? 1)
