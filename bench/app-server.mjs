// Child process for the benchmark: serves the real WDK 4.8.9 test app (official flow and
// step endpoints over the official local world) on the given data directory, so the
// process that calls start() measures start() and not the app's own work.
import { serveApp } from '../__test__/e2e/serve-app.mjs'

const app = await serveApp({ dataDir: process.argv[2] })
process.send({ baseUrl: app.baseUrl, workflows: app.workflows })
process.on('message', async (m) => {
  if (m === 'close') {
    setTimeout(() => process.exit(0), 2000).unref()
    await app.close()
    process.exit(0)
  }
})
