// Serves the e2e Workflow DevKit app (built by build-app.mjs with the official
// 4.8.9 toolchain) on 127.0.0.1 with node:http, with the official local world in
// the same process — i.e. what `next dev` does for a WDK app, without Next.js.
//
//   POST /.well-known/workflow/v1/flow            -> flow.js  POST = workflowEntrypoint(workflowCode)
//   POST /.well-known/workflow/v1/step            -> step.js  POST = stepEntrypoint
//   *    /.well-known/workflow/v1/webhook/<token> -> webhook.js (resumeWebhook)
//
// Usage:
//   const app = await serveApp({ dataDir });
//   const run = await start(app.workflows.simple, [1, 2]);   // start() from 'workflow/api'
//   ...
//   await app.close();
//
// Returns { baseUrl, port, dataDir, world, build, workflows: { simple, full,
// manySteps } (each `{ workflowId }`, usable as start()'s first argument), close() }.
//
// Pitfalls handled here (keep them in mind when changing this file):
// * ONE app per process at a time: the World is a process-wide singleton kept on
//   globalThis[Symbol.for('@workflow/world//cache')] (+ '//stubbedCache'), shared by
//   the node_modules runtime (`workflow/api`) and the runtime copies inlined into
//   flow.js / step.js / webhook.js.
// * Order: listen first (port 0), then set the env + install the World, THEN load
//   the bundles — they call getWorldHandlers() at module load.
// * createLocalWorld() memoizes WORKFLOW_LOCAL_* per module instance, so the World
//   is created with explicit { dataDir, baseUrl } and installed with setWorld().
// * Webhook URLs are built inside the workflow from the process's FIRST listening
//   TCP port (OS socket table), cached per runtime copy: `http://localhost:<port>`,
//   not WORKFLOW_LOCAL_BASE_URL.  Bundles are re-required fresh on every
//   serveApp() so a second app in the same process gets its own port cache.
// * The local queue sleeps with ref'd timers that world.close() does not cancel
//   (a `sleep('1h')` keeps the process alive for an hour), and the step runtime can
//   leave a ref'd lock-polling setInterval behind: see unrefPromiseTimers().
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { createServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import timersPromises from 'node:timers/promises';
import { resolve } from 'node:path';
import { buildApp, defaultOutDir } from './build-app.mjs';

const require = createRequire(import.meta.url);

const ROUTE_FLOW = '/.well-known/workflow/v1/flow';
const ROUTE_STEP = '/.well-known/workflow/v1/step';
const ROUTE_WEBHOOK_PREFIX = '/.well-known/workflow/v1/webhook/';
const ENV_KEYS = ['WORKFLOW_TARGET_WORLD', 'WORKFLOW_LOCAL_DATA_DIR', 'WORKFLOW_LOCAL_BASE_URL', 'WORKFLOW_POSTGRES_URL'];

let active = null;

/** Load a CommonJS route bundle as a FRESH module instance (each bundle inlines its own runtime copy). */
function loadBundle(file) {
  const resolved = require.resolve(file);
  delete require.cache[resolved];
  const mod = require(resolved);
  delete require.cache[resolved];
  return mod;
}

async function toWebRequest(req, origin) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const method = req.method ?? 'GET';
  const init = { method, headers };
  if (method !== 'GET' && method !== 'HEAD') {
    init.body = Buffer.concat(chunks);
    init.duplex = 'half';
  }
  return new Request(new URL(req.url ?? '/', origin), init);
}

async function writeWebResponse(res, response, method) {
  const headers = {};
  response.headers.forEach((value, key) => {
    if (key === 'set-cookie') return;
    headers[key] = value;
  });
  const cookies = response.headers.getSetCookie?.() ?? [];
  if (cookies.length) headers['set-cookie'] = cookies;
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (!response.body || method === 'HEAD') {
    res.end();
    return;
  }
  for await (const chunk of response.body) {
    if (res.destroyed) break;
    // 'drain' never comes once the socket is gone (close() ends connections).
    if (!res.write(chunk)) await new Promise((r) => { res.once('drain', r); res.once('close', r); });
  }
  res.end();
}

/**
 * The local world's queue sleeps with a REF'd `setTimeout` from
 * node:timers/promises while a message waits for redelivery (e.g. 3600 s for
 * `sleep('1h')`), and `world.close()` does not cancel it: the process would stay
 * alive for an hour after the test.  While the server is listening we make those
 * timers unref'd (the listening server keeps the process alive anyway), and we
 * restore the original function on close().  Behaviour while serving is unchanged.
 */
function unrefPromiseTimers() {
  const original = timersPromises.setTimeout;
  const patched = function setTimeout(delay, value, options) {
    return original(delay, value, { ...options, ref: false });
  };
  timersPromises.setTimeout = patched;
  syncBuiltinESMExports();
  // The step runtime polls a revived ReadableStream's lock with a REF'd setInterval
  // until the step releases it; a step that receives a webhook Request and never reads
  // its body (request.respondWith() in a 'manual' webhook) leaves that interval running
  // for ever, with the official resumeWebhook as with ours.  Same treatment.
  const originalInterval = globalThis.setInterval;
  const patchedInterval = function setInterval(...args) {
    const t = originalInterval(...args);
    t?.unref?.();
    return t;
  };
  globalThis.setInterval = patchedInterval;
  return () => {
    if (timersPromises.setTimeout === patched) {
      timersPromises.setTimeout = original;
      syncBuiltinESMExports();
    }
    if (globalThis.setInterval === patchedInterval) globalThis.setInterval = originalInterval;
  };
}

/**
 * Builds (or reuses a build of) the app, starts node:http on 127.0.0.1:<random>,
 * points the local world at `dataDir` and at the server, and loads the route bundles.
 *
 * @param {object} opts
 * @param {string} opts.dataDir          world-local data directory (created if missing)
 * @param {string} [opts.outDir]         build directory (default $TMPDIR/workflow-native-e2e-app)
 * @param {boolean} [opts.rebuild]       force a rebuild
 * @param {boolean} [opts.unrefTimers=true] see unrefPromiseTimers()
 * @param {boolean} [opts.startWorld=true] call world.start() (data-dir init + active-run recovery)
 * @param {boolean} [opts.logRequests=false]
 * @param {string} [opts.postgresUrl]       run the app on @workflow/world-postgres at this URL
 *                                         (its graphile-worker runner POSTs to this server)
 */
export async function serveApp({
  dataDir,
  outDir = defaultOutDir(),
  rebuild = false,
  unrefTimers = true,
  startWorld = true,
  logRequests = false,
  postgresUrl,
} = {}) {
  if (!dataDir) throw new Error('serveApp: dataDir is required');
  if (active) throw new Error('serveApp: an app is already being served in this process; close() it first');
  active = true;
  dataDir = resolve(dataDir);
  await mkdir(dataDir, { recursive: true });

  const build = await buildApp(outDir, { force: rebuild });

  const savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  let restoreTimers = () => {};
  let handlers = null; // set once the bundles are loaded
  const pending = new Set();

  const server = createServer((req, res) => {
    const p = (async () => {
      const path = (req.url ?? '/').split('?')[0];
      try {
        if (!handlers) {
          res.writeHead(503).end('not ready');
          return;
        }
        let handler;
        if (path === ROUTE_FLOW) handler = handlers.flow[req.method];
        else if (path === ROUTE_STEP) handler = handlers.step[req.method];
        else if (path.startsWith(ROUTE_WEBHOOK_PREFIX)) handler = handlers.webhook[req.method];
        else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
          return;
        }
        if (typeof handler !== 'function') {
          res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed');
          return;
        }
        const request = await toWebRequest(req, baseUrl);
        const response = await handler(request);
        if (logRequests) console.log(`[e2e-app] ${req.method} ${req.url} -> ${response.status}`);
        await writeWebResponse(res, response, req.method);
      } catch (err) {
        console.error(`[e2e-app] ${req.method} ${req.url} failed:`, err);
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err?.stack ?? err));
      }
    })();
    pending.add(p);
    p.finally(() => pending.delete(p));
  });

  let baseUrl;
  try {
    await new Promise((resolvePromise, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolvePromise();
      });
    });
    const { port } = server.address();
    baseUrl = `http://127.0.0.1:${port}`;

    // 1. Environment, BEFORE any World is created (createWorld() reads it).
    process.env.WORKFLOW_TARGET_WORLD = postgresUrl ? '@workflow/world-postgres' : 'local';
    if (postgresUrl) process.env.WORKFLOW_POSTGRES_URL = postgresUrl;
    process.env.WORKFLOW_LOCAL_DATA_DIR = dataDir;
    process.env.WORKFLOW_LOCAL_BASE_URL = baseUrl;
    if (unrefTimers) restoreTimers = unrefPromiseTimers();

    // 2. One World for the whole process.  createLocalWorld() memoizes the env
    //    per module instance, so pass dataDir/baseUrl explicitly (a second
    //    serveApp() in the same process would otherwise reuse the first URL),
    //    and setWorld() fills both global caches (getWorld() used by start()/
    //    getRun() and getWorldHandlers() used by the route bundles at load time).
    const { setWorld } = await import('@workflow/core/runtime');
    const { createLocalWorld } = await import('@workflow/world-local');
    setWorld(undefined);
    const world = postgresUrl
      ? (await import('@workflow/world-postgres')).createWorld({ connectionString: postgresUrl })
      : createLocalWorld({ dataDir, baseUrl });
    setWorld(world);
    if (startWorld) await world.start?.();

    // 3. Route bundles generated by the official builder.
    handlers = {
      flow: loadBundle(build.files.flow),
      step: loadBundle(build.files.step),
      webhook: loadBundle(build.files.webhook),
    };

    let closed = false;
    active = {
      baseUrl,
      port,
      dataDir,
      world,
      build,
      workflows: {
        simple: { workflowId: build.workflows.simple.workflowId },
        full: { workflowId: build.workflows.full.workflowId },
        manySteps: { workflowId: build.workflows.manySteps.workflowId },
        manualWebhook: { workflowId: build.workflows.manualWebhook.workflowId },
      },
      steps: build.steps,
      async close() {
        if (closed) return;
        closed = true;
        try {
          await world.close?.();
        } catch {}
        // Stop accepting, let the handlers in flight answer (a run's last flow request
        // can still be writing its reply when returnValue resolves), then end the rest.
        const stopped = new Promise((r) => server.close(() => r()));
        server.closeIdleConnections?.();
        await Promise.allSettled([...pending]);
        server.closeAllConnections?.();
        await stopped;
        const { setWorld: reset } = await import('@workflow/core/runtime');
        reset(undefined);
        restoreTimers();
        for (const [k, v] of Object.entries(savedEnv)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
        active = null;
      },
    };
    return active;
  } catch (err) {
    restoreTimers();
    server.closeAllConnections?.();
    server.close();
    for (const [k, v] of Object.entries(savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    active = null;
    throw err;
  }
}
