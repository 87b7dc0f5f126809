import { Ticker } from './ticker'

export default function Page() {
  return (
    <main>
      <h1>workflow-native × Next.js</h1>
      <p>
        Starts a durable <code>ticker</code> run in this server process and shows the chunks of its stream as they
        are written.
      </p>
      <Ticker />
    </main>
  )
}
