// devalue 5 ships only ES modules, which Jest's module loader (and older Node `require`)
// cannot load from our CommonJS entry. Bundle it once, at build time, into a CommonJS file
// so it is evaluated in the caller's module system and realm.
import { build } from 'esbuild'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const entry = require.resolve('devalue')
await build({
  entryPoints: [entry],
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node18',
  outfile: path.join(root, 'lib', 'vendor', 'devalue.cjs'),
  legalComments: 'inline',
  logLevel: 'warning',
})
