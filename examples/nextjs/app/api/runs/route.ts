// POST /api/runs { ticks?, pause?, stepByStep? } → 201 { runId }
// Starts a run of the `ticker` workflow; the engine runs it in this server process.
import { start } from 'workflow-native/api'
import { ticker, type TickerInput } from '@/workflows/ticker'

export const runtime = 'nodejs'

export async function POST(request: Request) {
  const body = (await request.json().catch(() => ({}))) as Partial<TickerInput>
  const ticks = Number.isInteger(body.ticks) && body.ticks! > 0 && body.ticks! <= 100 ? body.ticks! : 5
  const pause = typeof body.pause === 'string' ? body.pause : '1s'
  const run = await start(ticker, [{ ticks, pause, stepByStep: body.stepByStep === true }])
  return Response.json({ runId: run.runId }, { status: 201 })
}
