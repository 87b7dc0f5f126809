// The installed version of a package, read from its package.json wherever Node would find
// it (some packages do not export ./package.json).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export function installedVersion(name) {
  for (const dir of require.resolve.paths(name) || []) {
    const file = path.join(dir, name, 'package.json')
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')).version
  }
  return 'not installed'
}
