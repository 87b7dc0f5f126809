// A small Workflow DevKit app used by the e2e harness (__test__/e2e/*.mjs).
// It is compiled by the OFFICIAL toolchain (@workflow/builders + @workflow/swc-plugin
// + esbuild) into the workflow-VM bundle and the step bundle; see build-app.mjs.
//
// Workflow ids (as assigned by the SWC transform, workingDir = the copied app dir):
//   workflow//./workflows//simple
//   workflow//./workflows//full
//   workflow//./workflows//manySteps
import {
  createHook,
  createWebhook,
  FatalError,
  getStepMetadata,
  getWorkflowMetadata,
  getWritable,
  RetryableError,
  type RequestWithResponse,
  sleep,
} from 'workflow';

// ---------------------------------------------------------------- steps

/** Fails on its first attempt (RetryableError), succeeds on the second. */
async function flaky(label: string) {
  'use step';
  const { attempt } = getStepMetadata();
  if (attempt < 2) {
    throw new RetryableError(`flaky "${label}" transient failure (attempt ${attempt})`, {
      retryAfter: 1, // ms; the step handler rounds the redelivery up to 1 s
    });
  }
  return { label, attempt };
}

/** Always throws a FatalError (no retries); `full` catches it. */
async function alwaysFatal() {
  'use step';
  throw new FatalError('fatal on purpose');
}

/** Writes `count` values to the run's default stream and closes it. */
async function emitValues(count: number) {
  'use step';
  const writer = getWritable<{ i: number; at: Date }>().getWriter();
  for (let i = 0; i < count; i++) {
    await writer.write({ i, at: new Date(Date.UTC(2024, 0, 1, 0, 0, i)) });
  }
  await writer.close();
  return count;
}

/**
 * Publishes the hook token and the webhook url/token on the `control` stream
 * namespace, so that a test can discover the (random) webhook token.
 */
async function announce(info: { hookToken: string; webhookToken: string; webhookUrl: string }) {
  'use step';
  const writer = getWritable<typeof info>({ namespace: 'control' }).getWriter();
  await writer.write(info);
  await writer.close();
}

async function increment(n: number) {
  'use step';
  return n + 1;
}

// ------------------------------------------------------------ workflows

/** No steps at all. */
export async function simple(a: number, b: number) {
  'use workflow';
  return a + b;
}

export type FullInput = { hookToken?: string; values?: number };

/**
 * retry -> stream -> sleep('1h') -> hook + webhook -> value with Date and Map.
 */
export async function full(input: FullInput = {}) {
  'use workflow';
  const { workflowRunId } = getWorkflowMetadata();

  const flakyResult = await flaky('first');

  let fatalMessage: string | null = null;
  try {
    await alwaysFatal();
  } catch (err) {
    fatalMessage = (err as Error).message;
  }

  const streamed = await emitValues(input.values ?? 3);

  await sleep('1h');

  const hook = createHook<{ message: string }>({
    token: input.hookToken ?? `full-hook-${workflowRunId}`,
    metadata: { purpose: 'e2e' },
  });
  const webhook = createWebhook();
  await announce({ hookToken: hook.token, webhookToken: webhook.token, webhookUrl: webhook.url });

  const hookPayload = await hook;
  const request = await webhook;
  const webhookBody = await request.text();

  return {
    flaky: flakyResult,
    fatalMessage,
    streamed,
    hookPayload,
    webhook: { method: request.method, body: webhookBody },
    fixedDate: new Date('2020-01-02T03:04:05.678Z'),
    map: new Map<string, unknown>([
      ['a', 1],
      ['b', { nested: true }],
    ]),
  };
}

/** n trivial steps, sequentially (benchmark workload). */
export async function manySteps(n: number) {
  'use workflow';
  let acc = 0;
  for (let i = 0; i < n; i++) {
    acc = await increment(acc);
  }
  return acc;
}

/** Answers a webhook request itself (`respondWith: 'manual'`). */
async function reply(request: RequestWithResponse, text: string) {
  'use step';
  await request.respondWith(new Response(text, { status: 201, headers: { 'x-handled-by': 'workflow' } }));
}

/** Publishes the webhook token on the `control` namespace (see `announce`). */
async function announceWebhook(info: { webhookToken: string }) {
  'use step';
  const writer = getWritable<typeof info>({ namespace: 'control' }).getWriter();
  await writer.write(info);
  await writer.close();
}

/** A webhook in manual mode: the workflow writes the HTTP response. */
export async function manualWebhook() {
  'use workflow';
  const webhook = createWebhook({ respondWith: 'manual' });
  await announceWebhook({ webhookToken: webhook.token });
  const request = await webhook;
  const body = await request.text();
  await reply(request, `handled: ${body}`);
  return body;
}
