// Every value each entry point's .d.ts declares can be imported by name from ESM (a static
// `import { … }`, which fails to link if Node's CommonJS export detection misses a name),
// is the same object `require()` returns (one module, so `instanceof` works across both),
// and is defined. The names come from the .d.ts files through the TypeScript compiler.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const ts = require('typescript')
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

/** The entry points: `workflow-native`, `workflow-native/api`, … with their .d.ts. */
const entries = Object.entries(manifest.exports)
  .filter(([, target]) => typeof target === 'object' && target.types)
  .map(([sub, target]) => ({
    specifier: sub === '.' ? manifest.name : `${manifest.name}/${sub.slice(2)}`,
    dts: path.join(root, target.types),
  }))

/** The names a .d.ts exports as values (functions, classes, consts), not types only. */
function valueExports(dts) {
  const program = ts.createProgram([dts], { noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022 })
  const checker = program.getTypeChecker()
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(dts))
  assert.ok(moduleSymbol, `${dts} is a module`)
  return checker
    .getExportsOfModule(moduleSymbol)
    .filter((s) => {
      const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s
      return (target.flags & ts.SymbolFlags.Value) !== 0
    })
    .map((s) => s.getName())
    .sort()
}

/** Runs an ES module from the package root (so the package resolves itself by name). */
function runModule(source) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { cwd: root, encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('the four entry points are workflow-native, /api, /workflow and /errors', () => {
  assert.deepEqual(entries.map((e) => e.specifier).sort(), [
    'workflow-native',
    'workflow-native/api',
    'workflow-native/errors',
    'workflow-native/workflow',
  ])
})

for (const { specifier, dts } of entries) {
  test(`every value ${path.basename(dts)} declares imports by name from ${specifier}, the same object require() gives`, () => {
    const names = valueExports(dts)
    assert.ok(names.length > 0, `${dts} declares values`)
    const source = `
      import { ${names.join(', ')} } from '${specifier}'
      import { createRequire } from 'node:module'
      const cjs = createRequire(import.meta.url)('${specifier}')
      const imported = { ${names.join(', ')} }
      const report = {}
      for (const [name, value] of Object.entries(imported)) {
        report[name] = { type: typeof value, same: value === cjs[name] }
      }
      console.log(JSON.stringify(report))
    `
    const r = runModule(source)
    assert.equal(r.status, 0, r.stderr)
    const report = JSON.parse(r.stdout)
    assert.deepEqual(Object.keys(report).sort(), names)
    for (const name of names) {
      assert.notEqual(report[name].type, 'undefined', `${specifier} ${name} is defined`)
      assert.equal(report[name].same, true, `${specifier} ${name} is require()'s object`)
    }
  })
}

test('names the .d.ts files declare include the ones ESM users reported missing', () => {
  const names = valueExports(path.join(root, 'workflow.d.ts'))
  for (const n of ['useVirtualTime', 'nextSleep', 'resumeRuns', 'startWorker', 'advanceTime', 'useRealTime', 'RetryableError']) {
    assert.ok(names.includes(n), n)
  }
  // Interfaces and type aliases are not runtime exports.
  assert.ok(!names.includes('StepMetadata'))
  assert.ok(!valueExports(path.join(root, 'index.d.ts')).includes('WorkflowRunStatus'))
})

test('error classes are one class across ESM and CJS: instanceof works both ways', () => {
  const r = runModule(`
    import { FatalError, WorkflowRunNotFoundError } from 'workflow-native/errors'
    import { RetryableError } from 'workflow-native/workflow'
    import { createRequire } from 'node:module'
    const require = createRequire(import.meta.url)
    const errors = require('workflow-native/errors')
    console.log(JSON.stringify([
      new FatalError('x') instanceof errors.FatalError,
      new errors.WorkflowRunNotFoundError('wrun_1') instanceof WorkflowRunNotFoundError,
      new RetryableError('x') instanceof errors.RetryableError,
      require('workflow-native/workflow').FatalError === FatalError,
    ]))
  `)
  assert.equal(r.status, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), [true, true, true, true])
})
