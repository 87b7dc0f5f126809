// GET /api/runs/:runId/stream?startIndex=N → the run's stream as newline-delimited JSON,
// live. A client that lost the connection after k chunks resumes with ?startIndex=k.
// The response ends when the run has ended and every chunk was sent (workflow-native's
// reader ends then, closed stream or not), so the request never hangs.
import { getRun } from 'workflow-native/api'

export const runtime = 'nodejs'
export const dynamic = 'force-dynamic'

export async function GET(request: Request, { params }: { params: Promise<{ runId: string }> }) {
  const { runId } = await params
  const raw = new URL(request.url).searchParams.get('startIndex')
  const startIndex = raw === null ? 0 : Number(raw)
  if (!Number.isInteger(startIndex)) return Response.json({ error: 'startIndex must be an integer' }, { status: 400 })
  if (!(await getRun(runId).exists)) return Response.json({ error: 'run not found' }, { status: 404 })

  const encoder = new TextEncoder()
  const body = getRun(runId)
    .getReadable({ startIndex })
    .pipeThrough(
      new TransformStream<unknown, Uint8Array>({
        transform(chunk, controller) {
          controller.enqueue(encoder.encode(`${JSON.stringify(chunk)}\n`))
        },
      }),
    )
  return new Response(body, {
    headers: { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store' },
  })
}
