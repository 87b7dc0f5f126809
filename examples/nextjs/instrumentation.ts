// Runs once when the Next.js server process starts (`next start`, `next dev`): the place to
// start the embedded engine. Runs that were sleeping, waiting for a hook or half-way
// through a step when the previous server process stopped are taken up again here;
// without this call they stay `running` until something calls resumeRuns().
export async function register() {
  // The engine runs in the Node.js server runtime only (not in the Edge runtime).
  if (process.env.NEXT_RUNTIME !== 'nodejs') return
  // Declare the workflows first: resumeRuns() resumes the runs of declared workflows.
  await import('./workflows/ticker')
  const { resumeRuns } = await import('workflow-native/workflow')
  const resumed = await resumeRuns({
    onError: (error) => console.error('[workflows] could not resume a run:', error),
  })
  console.log(`[workflows] engine started; resumed ${resumed.length} run(s)${resumed.length ? `: ${resumed.join(', ')}` : ''}`)
}
