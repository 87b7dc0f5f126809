'use client'
// Starts a run, reads its stream live (newline-delimited JSON from the stream route) and
// shows each chunk as it arrives. If the connection drops, it reconnects with
// ?startIndex=<chunks received so far>. When the stream ends (the run ended), it shows the
// run's final status.
import { useState } from 'react'

type Tick = { n: number; of: number; text: string; at: string }

export function Ticker() {
  const [runId, setRunId] = useState<string | null>(null)
  const [status, setStatus] = useState<string>('idle')
  const [ticks, setTicks] = useState<Tick[]>([])
  const [stepByStep, setStepByStep] = useState(true)
  const [error, setError] = useState<string | null>(null)

  async function follow(id: string) {
    let received = 0
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const res = await fetch(`/api/runs/${id}/stream?startIndex=${received}`)
        if (!res.ok || !res.body) throw new Error(`stream: HTTP ${res.status}`)
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffered = ''
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          buffered += value
          let nl: number
          while ((nl = buffered.indexOf('\n')) >= 0) {
            const tick = JSON.parse(buffered.slice(0, nl)) as Tick
            buffered = buffered.slice(nl + 1)
            received++
            setTicks((t) => [...t, tick])
          }
        }
        break // the stream ended: the run ended
      } catch (e) {
        setError(`reconnecting after ${received} chunk(s): ${(e as Error).message}`)
      }
    }
    const res = await fetch(`/api/runs/${id}`)
    const info = (await res.json()) as { status: string }
    setStatus(info.status)
  }

  async function startRun() {
    setTicks([])
    setError(null)
    setStatus('starting')
    const res = await fetch('/api/runs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ticks: 3, pause: '1s', stepByStep }),
    })
    const { runId: id } = (await res.json()) as { runId: string }
    setRunId(id)
    setStatus('running')
    void follow(id)
  }

  async function resume() {
    if (!runId) return
    await fetch(`/api/hooks/continue-${runId}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ note: 'clicked' }),
    })
  }

  const running = status === 'running'
  return (
    <section>
      <label>
        <input type="checkbox" checked={stepByStep} onChange={(e) => setStepByStep(e.target.checked)} /> step by step
        (wait for “Continue” between ticks instead of sleeping 1 s)
      </label>
      <p>
        <button onClick={startRun} disabled={running}>
          Start a run
        </button>{' '}
        {stepByStep && running && (
          <button onClick={resume} disabled={ticks.length === 0}>
            Continue
          </button>
        )}
      </p>
      <p>
        run: <code data-testid="run-id">{runId ?? '—'}</code> · status: <strong data-testid="status">{status}</strong>
      </p>
      {error && <p style={{ color: 'darkorange' }}>{error}</p>}
      <ol data-testid="ticks">
        {ticks.map((t) => (
          <li key={t.n} data-n={t.n}>
            {t.text} <small>({t.at})</small>
          </li>
        ))}
      </ol>
    </section>
  )
}
