'use strict'
// workflow-native: the `workflow/api` surface (workflow@4.8.9) over a native (Rust) World.
// Public functions and classes only; decisions live in the Rust core, decoding in lib/.

const { Run, getRun } = require('./lib/run.js')
const { start } = require('./lib/start.js')
const { getHookByToken, resumeHook, resumeWebhook } = require('./lib/hooks.js')

/** Exported for compatibility with `workflow/api`: a no-op, as in WDK 4.8.9. */
function runStep() {}

// One assignment per export so ESM named imports work (cjs-module-lexer).
exports.Run = Run
exports.getRun = getRun
exports.start = start
exports.getHookByToken = getHookByToken
exports.resumeHook = resumeHook
exports.resumeWebhook = resumeWebhook
exports.runStep = runStep
