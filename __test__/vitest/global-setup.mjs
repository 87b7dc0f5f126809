// One temporary directory for the whole run (each worker takes a data directory inside
// it); removed at the end.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export default function setup() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wfn-vitest-'))
  process.env.WFN_VITEST_ROOT = root
  return () => fs.rmSync(root, { recursive: true, force: true })
}
