// POST /api/hooks/:token { ...payload } → resumes the hook (the workflow waiting on
// `createHook({ token })` receives the payload). 404 when no hook has this token.
import { resumeHook } from 'workflow-native/api'
import { HookNotFoundError } from 'workflow-native/errors'

export const runtime = 'nodejs'

export async function POST(request: Request, { params }: { params: Promise<{ token: string }> }) {
  const { token } = await params
  const payload = await request.json().catch(() => ({}))
  try {
    const hook = await resumeHook(token, payload)
    return Response.json({ runId: hook.runId, token: hook.token })
  } catch (error) {
    if (HookNotFoundError.is(error)) return Response.json({ error: 'hook not found' }, { status: 404 })
    throw error
  }
}
