'use strict'
// What a run's runtime version can read (@workflow/core capabilities of 4.8.9):
// length-framed byte streams from 4.6.0 (and 5.0.0-beta.15 on the 5.x line).

function parse(v) {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?/.exec(String(v || '').trim())
  if (!m) return null
  return { major: +m[1], minor: +m[2], patch: +m[3], pre: m[4] ? m[4].split('.') : [] }
}

function cmp(a, b) {
  for (const k of ['major', 'minor', 'patch']) if (a[k] !== b[k]) return a[k] < b[k] ? -1 : 1
  if (a.pre.length === 0 || b.pre.length === 0) return a.pre.length === b.pre.length ? 0 : a.pre.length === 0 ? 1 : -1
  for (let i = 0; i < Math.max(a.pre.length, b.pre.length); i++) {
    const x = a.pre[i]
    const y = b.pre[i]
    if (x === undefined) return -1
    if (y === undefined) return 1
    const nx = /^\d+$/.test(x)
    const ny = /^\d+$/.test(y)
    if (nx && ny && +x !== +y) return +x < +y ? -1 : 1
    if (nx !== ny) return nx ? -1 : 1
    if (x !== y) return x < y ? -1 : 1
  }
  return 0
}

function framedByteStreams(version) {
  const v = parse(version)
  if (!v) return false
  const ge = (s) => cmp(v, parse(s)) >= 0
  const lt = (s) => cmp(v, parse(s)) < 0
  return (ge('4.6.0') && lt('5.0.0-0')) || ge('5.0.0-beta.15')
}

module.exports = { framedByteStreams }
