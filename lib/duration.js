'use strict'
// Durations as WDK reads them (sleep(), RetryableError.retryAfter): `ms`-library strings
// ("1s", "5m", "1h", "2 days"), milliseconds, or an absolute Date.

const ms = require('ms')

/** The instant `param` designates, counted from `now` (ms since epoch). */
function durationToDate(param, now = Date.now()) {
  if (typeof param === 'string') {
    const d = ms(param)
    if (typeof d !== 'number' || !(d >= 0)) {
      throw new Error(`Invalid duration: "${param}". Expected a valid duration string like "1s", "1m", "1h", etc.`)
    }
    return new Date(now + d)
  }
  if (typeof param === 'number') {
    if (param < 0 || !Number.isFinite(param)) {
      throw new Error(`Invalid duration: ${param}. Expected a non-negative finite number of milliseconds.`)
    }
    return new Date(now + param)
  }
  if (param instanceof Date) return param
  if (param && typeof param === 'object' && typeof param.getTime === 'function') return new Date(param.getTime())
  throw new Error('Invalid duration parameter. Expected a duration string, number (milliseconds), or Date object.')
}

module.exports = { durationToDate }
