// Compiles __test__/e2e/app/workflows.ts with the OFFICIAL Workflow DevKit 4.8.9
// toolchain: `BaseBuilder` from @workflow/builders 4.1.14 (the class behind
// `workflow build` / StandaloneBuilder), which runs @workflow/swc-plugin 4.1.3
// through @swc/core inside esbuild, exactly as the standalone builder does.
//
// Output (<build> = <outDir>/<fingerprint>):
//   <build>/app/.well-known/workflow/v1/step.js     steps bundle (CJS, self-contained): registers
//                                                   every "use step" function + the built-in steps,
//                                                   exports POST/HEAD = stepEntrypoint
//   <build>/app/.well-known/workflow/v1/flow.js     workflow bundle (CJS, self-contained): the
//                                                   workflow-VM bundle embedded as a string,
//                                                   exports POST/GET/HEAD/OPTIONS =
//                                                   workflowEntrypoint(workflowCode)
//   <build>/app/.well-known/workflow/v1/webhook.js  webhook route (CJS): resumeWebhook(token, request)
//   <build>/app.json                                summary (ids, paths) written by this script
//
// The source is copied into <build>/app together with a tiny package.json and a
// `node_modules` symlink to this repository's node_modules; that directory is the
// builder's `workingDir`.  The SWC transform derives ids from the path relative to
// workingDir, so the ids are `workflow//./workflows//<name>` and
// `step//./workflows//<name>`.  Working in a copy keeps the builder's side files
// (.gitignore, *.debug.json) out of the repository; the builder runs in a child
// process whose cwd is <outDir> because @swc/core caches the compiled wasm plugin in
// `<cwd>/.swc`.  Builds are staged in a temp dir and renamed into place, so
// concurrent processes never see a half-written build; an existing build with the
// same fingerprint (source + toolchain package.json files) is reused.
//
// Usage: `await buildApp(outDir?, { force? })` or `node __test__/e2e/build-app.mjs [outDir]`
// (the CLI always rebuilds and prints the ids).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '..', '..');
const SOURCE_FILE = join(HERE, 'app', 'workflows.ts');
const NODE_MODULES = join(REPO_ROOT, 'node_modules');
const LAYOUT_VERSION = 2; // bump when this script's output changes

export const WORKFLOW_NAMES = ['simple', 'full', 'manySteps', 'manualWebhook'];

/** Default build directory (outside the repository). */
export function defaultOutDir() {
  return join(tmpdir(), 'workflow-native-e2e-app');
}

function bundlePaths(appDir) {
  const v1 = join(appDir, '.well-known', 'workflow', 'v1');
  return {
    v1,
    step: join(v1, 'step.js'),
    flow: join(v1, 'flow.js'),
    webhook: join(v1, 'webhook.js'),
  };
}

async function fingerprintOf(source) {
  const h = createHash('sha256');
  h.update(`layout:${LAYOUT_VERSION}\n`);
  h.update(source);
  for (const pkg of ['workflow', '@workflow/core', '@workflow/builders', '@workflow/swc-plugin', '@workflow/world-local', 'esbuild', '@swc/core']) {
    try {
      h.update(await readFile(join(NODE_MODULES, pkg, 'package.json')));
    } catch {
      h.update(`missing:${pkg}`);
    }
  }
  return h.digest('hex').slice(0, 16);
}

async function prepareAppDir(appDir, source) {
  await mkdir(appDir, { recursive: true });
  await writeFile(join(appDir, 'workflows.ts'), source);
  // A minimal project: `workflow` is a direct dependency, like in a real app
  // (the builder's getImportPath() looks at the project's dependencies).
  await writeFile(
    join(appDir, 'package.json'),
    JSON.stringify(
      { name: 'workflow-native-e2e-app', version: '0.0.0', private: true, dependencies: { workflow: '4.8.9' } },
      null,
      2
    ) + '\n'
  );
  // The builder appends `/.swc` to <workingDir>/.gitignore; pre-create it.
  await writeFile(join(appDir, '.gitignore'), '/.swc\n/.well-known\n/node_modules\n');
  await symlink(NODE_MODULES, join(appDir, 'node_modules'), 'dir');
}

/**
 * Runs the official builder (in the child process).  Same sequence as
 * StandaloneBuilder.build() minus the graph manifest, with explicit input files and
 * output paths (StandaloneBuilder forces `dirs: ['.']`, globs the whole working
 * directory and writes manifest.json into <workingDir>/.well-known).
 */
async function runOfficialBuilder(appDir) {
  const { BaseBuilder } = await import('@workflow/builders');
  const paths = bundlePaths(appDir);
  const config = {
    buildTarget: 'standalone',
    workingDir: appDir,
    dirs: ['.'],
    stepsBundlePath: paths.step,
    workflowsBundlePath: paths.flow,
    webhookBundlePath: paths.webhook,
    suppressCreateManifestLogs: true,
  };
  class E2EAppBuilder extends BaseBuilder {
    async build() {
      const inputFiles = [join(appDir, 'workflows.ts')];
      const tsconfigPath = undefined; // none; esbuild/SWC defaults
      // (Running these concurrently is not faster: the steps bundle dominates,
      // every module it bundles goes through the SWC wasm plugin.)
      const steps = await this.createStepsBundle({ inputFiles, outfile: paths.step, tsconfigPath });
      const flows = await this.createWorkflowsBundle({ inputFiles, outfile: paths.flow, tsconfigPath });
      await this.createWebhookBundle({ outfile: paths.webhook, bundle: true });
      const manifest = {
        steps: { ...steps.manifest.steps, ...flows.manifest.steps },
        workflows: { ...steps.manifest.workflows, ...flows.manifest.workflows },
        classes: { ...steps.manifest.classes, ...flows.manifest.classes },
      };
      // manifest.json with workflow graphs (observability only, ~1 s): opt-in.
      if (process.env.E2E_APP_GRAPH_MANIFEST === '1') {
        await this.createManifest({ workflowBundlePath: paths.flow, manifestDir: paths.v1, manifest });
      }
      return manifest;
    }
  }
  return new E2EAppBuilder(config).build();
}

function runBuilderInChild(appDir, cwd) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', appDir], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const marker = stdout.lastIndexOf('\n@@MANIFEST@@');
      if (code !== 0 || marker < 0) {
        reject(new Error(`official workflow build failed (exit ${code}):\n${stderr}\n${stdout}`));
        return;
      }
      resolvePromise(JSON.parse(stdout.slice(marker + '\n@@MANIFEST@@'.length)));
    });
  });
}

function extractIds(manifest) {
  const workflows = {};
  const steps = {};
  for (const [file, entries] of Object.entries(manifest.workflows ?? {})) {
    if (file !== 'workflows.ts') continue;
    for (const [name, data] of Object.entries(entries)) workflows[name] = { workflowId: data.workflowId };
  }
  for (const [file, entries] of Object.entries(manifest.steps ?? {})) {
    const short = file.replace(/^.*node_modules\//, '');
    for (const [name, data] of Object.entries(entries)) steps[`${short}#${name}`] = data.stepId;
  }
  for (const name of WORKFLOW_NAMES) {
    if (!workflows[name]) throw new Error(`workflow "${name}" missing from the build manifest`);
  }
  return { workflows, steps };
}

async function readSummary(buildDir) {
  try {
    const summary = JSON.parse(await readFile(join(buildDir, 'app.json'), 'utf8'));
    const ok = Object.values(summary.files).every((f) => existsSync(f)) && existsSync(join(summary.appDir, 'node_modules'));
    return ok ? summary : null;
  } catch {
    return null;
  }
}

/**
 * Builds the e2e app under `outDir` (default: $TMPDIR/workflow-native-e2e-app),
 * or reuses an identical earlier build unless `{ force: true }`.
 *
 * @returns {Promise<{ fingerprint, buildDir, appDir,
 *   files: { step, flow, webhook },
 *   workflows: { simple: {workflowId}, full: {workflowId}, manySteps: {workflowId} },
 *   steps: Record<string, string>, reused: boolean, buildMs: number }>}
 */
export async function buildApp(outDir = defaultOutDir(), { force = false } = {}) {
  outDir = resolve(outDir);
  const source = await readFile(SOURCE_FILE, 'utf8');
  const fingerprint = await fingerprintOf(source);
  const buildDir = join(outDir, fingerprint);

  if (!force) {
    const summary = await readSummary(buildDir);
    if (summary) return { ...summary, reused: true, buildMs: 0 };
  }

  const t0 = performance.now();
  await mkdir(outDir, { recursive: true });
  const stagingDir = join(outDir, `${fingerprint}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await prepareAppDir(join(stagingDir, 'app'), source);
    const manifest = await runBuilderInChild(join(stagingDir, 'app'), outDir);
    const { workflows, steps } = extractIds(manifest);

    const appDir = join(buildDir, 'app');
    const paths = bundlePaths(appDir);
    const summary = {
      fingerprint,
      buildDir,
      appDir,
      files: { step: paths.step, flow: paths.flow, webhook: paths.webhook },
      workflows,
      steps,
    };
    await writeFile(join(stagingDir, 'app.json'), JSON.stringify(summary, null, 2) + '\n');

    if (force && existsSync(buildDir)) {
      const trash = `${buildDir}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
      await rename(buildDir, trash).catch(() => {});
      await rm(trash, { recursive: true, force: true });
    }
    try {
      await rename(stagingDir, buildDir);
    } catch (err) {
      if (!['EEXIST', 'ENOTEMPTY', 'EPERM'].includes(err.code)) throw err;
      // Another process published the same fingerprint first: use theirs, if it is usable.
      const theirs = await readSummary(buildDir);
      if (theirs) {
        await rm(stagingDir, { recursive: true, force: true });
        return { ...theirs, reused: true, buildMs: Math.round(performance.now() - t0) };
      }
      // A stale build (its node_modules link points to a checkout that is gone): ours
      // replaces it.
      const trash = `${buildDir}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
      await rename(buildDir, trash).catch(() => {});
      await rm(trash, { recursive: true, force: true });
      await rename(stagingDir, buildDir);
    }
    return { ...summary, reused: false, buildMs: Math.round(performance.now() - t0) };
  } catch (err) {
    await rm(stagingDir, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}

// ------------------------------------------------------------------ CLI
const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  if (process.argv[2] === '--child') {
    const manifest = await runOfficialBuilder(resolve(process.argv[3]));
    process.stdout.write('\n@@MANIFEST@@' + JSON.stringify(manifest));
  } else {
    const res = await buildApp(process.argv[2] ?? defaultOutDir(), { force: true });
    console.log(JSON.stringify({ buildMs: res.buildMs, files: res.files, workflows: res.workflows, steps: res.steps }, null, 2));
  }
}
