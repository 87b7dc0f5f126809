#!/usr/bin/env node
// End-to-end smoke check of the e2e harness: a REAL Workflow DevKit 4.8.9 app
// (compiled by the official toolchain, served by node:http with the official
// flow/step/webhook routes and the official local world) driven by the OFFICIAL
// `workflow/api` (start, getRun, getHookByToken, resumeHook, resumeWebhook).
//
//   node __test__/e2e/smoke.mjs [--keep] [--rebuild] [--verbose]
//
// --keep     keep the data directory (its path is printed)
// --rebuild  force a rebuild of the app bundles
// --verbose  log every HTTP request served by the app
//
// Exits 0 on success, 1 on failure, 2 on overall timeout (50 s).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveApp } from './serve-app.mjs';

const args = new Set(process.argv.slice(2));
const OVERALL_TIMEOUT_MS = 50_000;
const watchdog = setTimeout(() => {
  console.error(`smoke: FAILED - overall timeout (${OVERALL_TIMEOUT_MS} ms)`);
  process.exit(2);
}, OVERALL_TIMEOUT_MS);
watchdog.unref();

const t0 = performance.now();
const timings = [];
const ms = (t) => `${Math.round(t)} ms`;
async function timed(label, fn) {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    const d = performance.now() - t;
    timings.push([label, d]);
    console.log(`  ${label.padEnd(46)} ${ms(d)}`);
  }
}

async function waitFor(what, fn, timeoutMs = 20_000, intervalMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

async function readAll(stream) {
  const out = [];
  for await (const v of stream) out.push(v);
  return out;
}

let app;
let dataDir;
let exitCode = 0;
try {
  dataDir = await mkdtemp(join(tmpdir(), 'wdk-e2e-data-'));
  console.log(`smoke: data dir ${dataDir}`);

  app = await timed('build (or reuse) + serve', () =>
    serveApp({ dataDir, rebuild: args.has('--rebuild'), logRequests: args.has('--verbose') })
  );
  console.log(`smoke: serving on ${app.baseUrl} (build ${app.build.reused ? 'reused' : `${app.build.buildMs} ms`})`);
  console.log(`smoke: workflow ids ${JSON.stringify(app.workflows)}`);

  // Imported after serveApp() on purpose: the env is set and the World is installed.
  const { start, getRun, getHookByToken, resumeHook, resumeWebhook } = await import('workflow/api');
  const listEvents = async (runId) => {
    const events = [];
    let cursor;
    do {
      const page = await app.world.events.list({
        runId,
        pagination: { limit: 1000, sortOrder: 'asc', ...(cursor ? { cursor } : {}) },
        resolveData: 'none',
      });
      events.push(...page.data);
      cursor = page.hasMore ? page.cursor : undefined;
    } while (cursor);
    return events;
  };

  // ------------------------------------------------------------- routes
  await timed('routes: health + webhook 404', async () => {
    const health = await fetch(`${app.baseUrl}/.well-known/workflow/v1/flow?__health`);
    assert.equal(health.status, 200);
    const h = await health.json();
    assert.equal(h.healthy, true);
    const stepHealth = await fetch(`${app.baseUrl}/.well-known/workflow/v1/step?__health`, { method: 'HEAD' });
    assert.equal(stepHealth.status, 200);
    // The official webhook route console.error()s the HookNotFoundError: mute it.
    const consoleError = console.error;
    console.error = () => {};
    try {
      const wh = await fetch(`${app.baseUrl}/.well-known/workflow/v1/webhook/no-such-token`, { method: 'POST', body: 'x' });
      assert.equal(wh.status, 404);
    } finally {
      console.error = consoleError;
    }
  });

  // ------------------------------------------------------------- simple
  await timed('simple(2, 3): start -> returnValue', async () => {
    const run = await start(app.workflows.simple, [2, 3]);
    assert.equal(await run.returnValue, 5);
    assert.equal(await run.status, 'completed');
    assert.equal(await run.workflowName, app.workflows.simple.workflowId);
  });

  // --------------------------------------------------------------- full
  const hookToken = `smoke-hook-${process.pid}-${Date.now()}`;
  const fullRun = await timed('full: start', () => start(app.workflows.full, [{ hookToken }]));
  console.log(`smoke: full run ${fullRun.runId}`);

  await timed('full: retry + fatal + stream -> wait_created', () =>
    waitFor('wait_created', async () => (await listEvents(fullRun.runId)).some((e) => e.eventType === 'wait_created'))
  );
  assert.equal(await fullRun.status, 'running');
  {
    const types = (await listEvents(fullRun.runId)).map((e) => e.eventType);
    assert.ok(types.includes('step_retrying'), `expected a step_retrying event, got ${types.join(',')}`);
    assert.ok(types.includes('step_failed'), 'expected a step_failed event (FatalError)');
  }

  const woke = await timed('full: getRun(id).wakeUp()', () => getRun(fullRun.runId).wakeUp());
  assert.equal(woke.stoppedCount, 1);

  const [announcement] = await timed('full: hooks created, read "control" stream', () =>
    readAll(fullRun.getReadable({ namespace: 'control' }))
  );
  assert.equal(announcement.hookToken, hookToken);
  assert.ok(announcement.webhookToken);
  const webhookUrl = new URL(announcement.webhookUrl);
  assert.equal(webhookUrl.pathname, `/.well-known/workflow/v1/webhook/${encodeURIComponent(announcement.webhookToken)}`);
  assert.equal(Number(webhookUrl.port), app.port, 'webhook url should carry the detected server port');
  console.log(`smoke: webhook url ${announcement.webhookUrl}`);

  const hook = await getHookByToken(hookToken);
  assert.equal(hook.runId, fullRun.runId);
  assert.deepEqual(hook.metadata, { purpose: 'e2e' });

  await timed('full: resumeHook(token, payload)', () => resumeHook(hookToken, { message: 'hello hook' }));
  const webhookResponse = await timed('full: resumeWebhook(token, Request)', () =>
    resumeWebhook(
      announcement.webhookToken,
      new Request(announcement.webhookUrl, { method: 'POST', body: 'hello webhook', headers: { 'content-type': 'text/plain' } })
    )
  );
  assert.equal(webhookResponse.status, 202);

  const streamed = await timed('full: read default stream', () => readAll(fullRun.getReadable()));
  assert.equal(streamed.length, 3);
  assert.deepEqual(
    streamed.map((v) => v.i),
    [0, 1, 2]
  );
  assert.ok(streamed[2].at instanceof Date);

  const result = await timed('full: returnValue', () => fullRun.returnValue);
  assert.deepEqual(result.flaky, { label: 'first', attempt: 2 });
  assert.equal(result.fatalMessage, 'fatal on purpose');
  assert.equal(result.streamed, 3);
  assert.deepEqual(result.hookPayload, { message: 'hello hook' });
  assert.deepEqual(result.webhook, { method: 'POST', body: 'hello webhook' });
  assert.ok(result.fixedDate instanceof Date);
  assert.equal(result.fixedDate.toISOString(), '2020-01-02T03:04:05.678Z');
  assert.ok(result.map instanceof Map);
  assert.deepEqual([...result.map.entries()], [
    ['a', 1],
    ['b', { nested: true }],
  ]);
  assert.equal(await fullRun.status, 'completed');

  // ---------------------------------------------------------- manySteps
  const n = 20;
  await timed(`manySteps(${n}): start -> returnValue`, async () => {
    const t = performance.now();
    const run = await start(app.workflows.manySteps, [n]);
    // returnValue polls once per second; also observe the real completion time.
    await waitFor(
      'manySteps completion',
      async () => (await app.world.runs.get(run.runId, { resolveData: 'none' })).status === 'completed',
      20_000,
      5
    );
    console.log(`  ${`  (run completed after, polling every 5 ms)`.padEnd(46)} ${ms(performance.now() - t)}`);
    assert.equal(await run.returnValue, n);
    const events = await listEvents(run.runId);
    assert.equal(events.filter((e) => e.eventType === 'step_completed').length, n);
  });

  console.log(`smoke: OK in ${ms(performance.now() - t0)}`);
} catch (err) {
  exitCode = 1;
  console.error('smoke: FAILED');
  console.error(err);
} finally {
  try {
    await app?.close();
  } catch (err) {
    console.error('smoke: close failed', err);
    exitCode ||= 1;
  }
  if (dataDir) {
    if (args.has('--keep')) console.log(`smoke: kept data dir ${dataDir}`);
    else await rm(dataDir, { recursive: true, force: true });
  }
}
// The local world may still hold queue timers / sockets; exit explicitly.
process.exit(exitCode);
