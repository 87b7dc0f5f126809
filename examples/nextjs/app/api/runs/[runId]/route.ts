// GET /api/runs/:runId → { runId, status, workflowName, createdAt, completedAt, result? }
import { getRun } from 'workflow-native/api'
import { WorkflowRunNotFoundError } from 'workflow-native/errors'

export const runtime = 'nodejs'
export const dynamic = 'force-dynamic'

export async function GET(_request: Request, { params }: { params: Promise<{ runId: string }> }) {
  const { runId } = await params
  const run = getRun(runId)
  try {
    const status = await run.status
    return Response.json({
      runId,
      status,
      workflowName: await run.workflowName,
      createdAt: await run.createdAt,
      completedAt: (await run.completedAt) ?? null,
      result: status === 'completed' ? await run.returnValue : undefined,
    })
  } catch (error) {
    if (WorkflowRunNotFoundError.is(error)) return Response.json({ error: 'run not found' }, { status: 404 })
    throw error
  }
}
