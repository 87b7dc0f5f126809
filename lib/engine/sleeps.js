'use strict'
// Durable sleeps: `wait_created` (on disk before the run counts as sleeping, so a
// wakeUp() finds it), a timer on the engine's clock, then `wait_completed` — unless a
// wakeUp() completed the wait first, which arrives as another writer's event.

const { binding } = require('../native.js')
const { durationToDate } = require('../duration.js')
const { HALT } = require('./values.js')

async function sleep(exec, param) {
  const inv = exec.claim('wait', undefined, 'sleep()')
  if (inv === HALT) return exec.halt()
  let corr
  let resumeAt
  if (inv) {
    corr = inv.corr
    resumeAt = Date.parse(inv.event.eventData && inv.event.eventData.resumeAt)
  } else {
    resumeAt = durationToDate(param, exec.engine.clock.now()).getTime()
    corr = `wait_${binding.newUlid()}`
    const res = await exec.record('wait_created', corr, { resumeAt: new Date(resumeAt).toISOString() }, true)
    if (res === HALT) return exec.halt()
  }
  if (exec.log.events(corr).some((e) => e.eventType === 'wait_completed')) {
    await exec.log.outcome(corr, () => exec.stopped)
    if (exec.stopped) return exec.halt()
    return
  }
  let wake
  const woken = new Promise((r) => (wake = r))
  const t = exec.timer(resumeAt)
  exec.handlers.set(corr, {
    onEvent: (ev) => {
      if (ev.eventType === 'wait_completed') wake()
    },
  })
  exec.sleeping++
  exec.engine.noteSleeping(exec.runId)
  exec.engine.clock.poke()
  const how = await Promise.race([t.promise.then(() => 'timer'), woken.then(() => 'event')])
  exec.sleeping--
  t.cancel()
  exec.handlers.delete(corr)
  if (how === 'timer' && !exec.stopped) {
    try {
      await exec.journal.write('wait_completed', corr, { resumeAt: new Date(resumeAt).toISOString() })
    } catch (e) {
      // completed meanwhile by wakeUp(): fine; anything else ends the run here
      if (!(e && e.name === 'EntityConflictError')) {
        const r = await exec.settleRefusal(e)
        if (r === HALT) return exec.halt()
      }
    }
  }
  if (exec.stopped) return exec.halt()
}

module.exports = { sleep }
