// The embedded engine under Vitest, as a user's project runs it. `npm test` runs this
// suite with pool=forks and pool=threads, and once more without isolation (every file in
// one worker, as `vitest --no-isolate` does: two files declare the same workflow).
//   npx vitest run --config __test__/vitest/vitest.config.mjs --pool=threads
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ['*.test.mjs'],
    globalSetup: ['./global-setup.mjs'],
    setupFiles: ['./setup.mjs'],
    testTimeout: 30_000,
  },
})
