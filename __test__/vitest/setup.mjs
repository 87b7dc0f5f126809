// A data directory per worker, set before workflow-native's first use (it reads
// WORKFLOW_LOCAL_DATA_DIR once). Without isolation a worker runs several files: they
// share the directory their first file chose, as they share the package's state.
import fs from 'node:fs'
import path from 'node:path'

if (!process.env.WORKFLOW_LOCAL_DATA_DIR) {
  process.env.WORKFLOW_LOCAL_DATA_DIR = fs.mkdtempSync(path.join(process.env.WFN_VITEST_ROOT, 'data-'))
}
