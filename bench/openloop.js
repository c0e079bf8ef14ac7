// Open-loop, fixed-rate HTTP load: request i is due at start + i/rate whatever happened to the
// requests before it, and its latency counts from when it was DUE (no coordinated omission).
//
// Why not autocannon --overallRate alone: autocannon paces per connection per second (each
// connection sends its quota for the second back to back, then waits for the next second), so
// at "1000 req/s" the server gets a burst at the start of every second, not a fixed rate.
// bench/ingest.py runs it beside this generator as a cross-check when asked (--autocannon).
//
//   node bench/openloop.js CONFIG.json   ->  one JSON line of results on stdout
//
// CONFIG: {url, path, headers, template (a JSON body; "__ID__" is replaced by a unique id per
// request), rate, seconds, warmup (seconds, not counted), sockets}
'use strict'

const fs = require('fs')
const http = require('http')
const hdr = require('hdr-histogram-js')

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const target = new URL(config.url)
// Idle keep-alive sockets are closed after 4 s, before uvicorn's 5 s keep-alive timeout closes
// them from its side: a request sent on a socket the server is closing at that very moment
// fails with ECONNRESET, a loss the server never saw (uvicorn sends no Keep-Alive hint).
const agent = new http.Agent({
  keepAlive: true,
  maxSockets: config.sockets || 256,
  timeout: config.idle_ms || 4000
})
const rate = config.rate
const warmupCount = Math.round(rate * (config.warmup || 0))
const total = warmupCount + Math.round(rate * config.seconds)
const run = Date.now().toString(36)
const parts = config.template.split('__ID__')

// microseconds, 1 µs .. 120 s, 3 significant digits
const fromDue = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120e6, numberOfSignificantValueDigits: 3 })
const fromSend = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120e6, numberOfSignificantValueDigits: 3 })
const statuses = {}
let errors = 0
const errorCodes = {}
let answered = 0
let sent = 0
let maxSendLag = 0
let lastAnswer = 0

function body (i) {
  return parts.join(`${run}-${i}`)
}

function send (i, due) {
  const payload = body(i)
  const sentAt = performance.now()
  maxSendLag = Math.max(maxSendLag, sentAt - due)
  sent++
  const req = http.request({
    host: target.hostname,
    port: target.port,
    path: config.path,
    method: 'POST',
    agent,
    headers: { ...config.headers, 'content-length': Buffer.byteLength(payload) },
    timeout: 60000
  }, (res) => {
    res.on('data', () => {})
    res.on('end', () => {
      const now = performance.now()
      statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1
      if (i >= warmupCount) {
        fromDue.recordValue(Math.max(1, Math.round((now - due) * 1000)))
        fromSend.recordValue(Math.max(1, Math.round((now - sentAt) * 1000)))
      }
      finish()
    })
  })
  req.on('error', (err) => {
    errors++
    const code = err.code || err.message
    errorCodes[code] = (errorCodes[code] || 0) + 1
    finish()
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.end(payload)
}

let i = 0
const start = performance.now() + 100
let measuredStart = 0

function tick () {
  const now = performance.now()
  while (i < total) {
    const due = start + (i * 1000) / rate
    if (due > now) break
    if (i === warmupCount) measuredStart = due
    send(i, due)
    i++
  }
  if (i < total) setTimeout(tick, 1)
}

function finish () {
  answered++
  lastAnswer = performance.now()
  if (answered < total) return
  const ms = (h, q) => h.getValueAtPercentile(q) / 1000
  const measured = total - warmupCount
  const out = {
    rate,
    seconds: config.seconds,
    sent,
    statuses,
    errors,
    error_codes: errorCodes,
    achieved_rate: measured / ((lastAnswer - measuredStart) / 1000),
    max_send_lag_ms: maxSendLag,
    latency_ms: {
      p50: ms(fromDue, 50), p90: ms(fromDue, 90), p99: ms(fromDue, 99), p999: ms(fromDue, 99.9), max: fromDue.maxValue / 1000
    },
    service_ms: {
      p50: ms(fromSend, 50), p90: ms(fromSend, 90), p99: ms(fromSend, 99), p999: ms(fromSend, 99.9), max: fromSend.maxValue / 1000
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
  agent.destroy()
}

setTimeout(tick, 100)
