// The .d.ts files as a TypeScript project sees them through the package's `exports` (and
// `typesVersions` for the older `node10` resolution): each entry point type-checks, with
// and without DOM libs, under every module resolution users have.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')
const tsMajor = Number(require('typescript/package.json').version.split('.')[0])

const SOURCE = `
import { getRun, start, Run } from 'workflow-native/api'
import { getRun as getRunRoot } from 'workflow-native'
import { workflow, step, sleep, useVirtualTime, startWorker, type Worker } from 'workflow-native/workflow'
import { FatalError, WorkflowRunNotFoundError } from 'workflow-native/errors'

const double = step('double', async (x: number) => x * 2)
const wf = workflow('typed', async (x: number) => { await sleep('1s'); return double(x) })

export async function serve(): Promise<void> {
  const worker: Worker = startWorker({ concurrency: 10, leaseMs: 5_000, onError: (e) => console.error(e.runId, e) })
  const claimed: string[] = await worker.ready
  console.log(claimed.length, worker.running)
  await worker.stop()
}

export async function main(): Promise<number> {
  useVirtualTime()
  const run = await start(wf, [21])
  const again: Run<number> = getRunRoot<number>(run.runId)
  for await (const chunk of getRun(run.runId).getReadable()) console.log(chunk)
  if (WorkflowRunNotFoundError.is(new FatalError('x'))) return -1
  return again.returnValue
}
`

/** A project with this package (and @types/node) in its node_modules, checked by tsc. */
function typecheck(dir, compilerOptions) {
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'es2022',
        types: ['node'],
        ...(tsMajor >= 6 ? { ignoreDeprecations: '6.0' } : {}),
        ...compilerOptions,
      },
      files: ['main.ts'],
    }),
  )
  return spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' })
}

test('the types resolve and check from every entry point under node16, bundler and node10 resolution', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-types-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.mkdirSync(path.join(dir, 'node_modules', '@types'), { recursive: true })
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'workflow-native'), 'dir')
  for (const dep of ['@types/node', 'undici-types']) {
    fs.symlinkSync(path.join(root, 'node_modules', dep), path.join(dir, 'node_modules', dep), 'dir')
  }
  fs.writeFileSync(path.join(dir, 'main.ts'), SOURCE)
  const configs = [
    { module: 'node16', moduleResolution: 'node16', lib: ['esnext'] },
    { module: 'node16', moduleResolution: 'node16', lib: ['dom', 'dom.iterable', 'dom.asynciterable', 'esnext'] },
    { module: 'esnext', moduleResolution: 'bundler', lib: ['dom', 'dom.iterable', 'dom.asynciterable', 'esnext'] },
    { module: 'commonjs', moduleResolution: 'node10', lib: ['esnext'] },
  ]
  for (const options of configs) {
    const r = typecheck(dir, options)
    assert.equal(r.status, 0, `${JSON.stringify(options)}\n${r.stdout}${r.stderr}`)
  }
  // The check can fail: a wrong type is reported.
  fs.writeFileSync(path.join(dir, 'main.ts'), `${SOURCE}\nexport const wrong: string = getRun('x')\n`)
  const bad = typecheck(dir, configs[0])
  assert.notEqual(bad.status, 0)
  assert.match(bad.stdout, /TS2322/)
})
