// Shared by the k6 scenarios in this directory: environment, arrival-rate scenarios, thresholds,
// and the few response helpers that must behave the same in every script.
import http from 'k6/http'
import exec from 'k6/execution'

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '')
export const TOKEN = __ENV.TOKEN || ''

export function env(name, fallback) {
  const value = __ENV[name]
  return value === undefined || value === '' ? fallback : value
}

export function envNumber(name, fallback) {
  const value = env(name, undefined)
  if (value === undefined) return fallback
  const n = Number(value)
  // A typo in RATE or P95_MS must stop the run, not silently fall back to a default.
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got "${value}"`)
  return n
}

/** Authorization header for `token`, or none, so public paths run without a TOKEN. */
export function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

/**
 * One response header, whatever the case (k6 canonicalizes names: `x-cache` becomes `X-Cache`) and
 * whatever the k6 version (newer ones may give an array of values). Undefined when absent.
 */
export function header(res, name) {
  const wanted = name.toLowerCase()
  for (const key of Object.keys(res.headers || {})) {
    if (key.toLowerCase() !== wanted) continue
    const value = res.headers[key]
    return Array.isArray(value) ? value.join(', ') : value
  }
  return undefined
}

/** The `error.code` of the proxy's JSON error body (docs/errors.md), or undefined. */
export function errorCode(res) {
  try {
    return JSON.parse(res.body).error.code
  } catch (e) {
    return undefined
  }
}

/** '30s', '2m', '1m30s', '500ms' -> seconds, to size thresholds from DURATION. */
export function seconds(duration) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 }
  let total = 0
  const rest = String(duration).replace(/(\d+(?:\.\d+)?)(ms|s|m|h)/g, (_, n, unit) => {
    total += Number(n) * units[unit]
    return ''
  })
  if (rest !== '' || total <= 0) throw new Error(`not a k6 duration: "${duration}"`)
  return total
}

/**
 * An open-model scenario: iterations start at `rate` per `timeUnit` whatever the response times,
 * so a slow proxy shows up as latency and dropped iterations instead of quietly lowering the load
 * (which is what a sleep-bounded VU loop does). Enough VUs are pre-allocated for ~100 ms responses
 * at full rate, because VUs started mid-test cost iterations.
 */
export function arrivalRate(execName, { rate, duration, timeUnit = '1s', startTime, tags }) {
  return {
    executor: 'constant-arrival-rate',
    exec: execName,
    rate,
    timeUnit,
    duration,
    preAllocatedVUs: envNumber('VUS', Math.max(2, Math.ceil(rate / 10))),
    maxVUs: envNumber('MAX_VUS', Math.max(20, rate)),
    ...(startTime === undefined ? {} : { startTime }),
    ...(tags === undefined ? {} : { tags }),
  }
}

/**
 * Thresholds for one scenario (metrics carry the `scenario` tag, so setup() requests are excluded):
 * failed requests at most `maxFailed` (0 by default: any 5xx, timeout or unexpected status fails
 * the run), every check passing, latency under p95/p99, and at most 1% of the planned iterations
 * dropped (more means the proxy could not sustain the rate, so the latency figures are not for it).
 */
export function scenarioThresholds(scenario, { p95, p99, maxFailed = 0, rate, duration, timeUnit = '1s' }) {
  const thresholds = {
    [`http_req_failed{scenario:${scenario}}`]: [maxFailed === 0 ? 'rate==0' : `rate<=${maxFailed}`],
    [`checks{scenario:${scenario}}`]: [maxFailed === 0 ? 'rate==1' : `rate>=${1 - maxFailed}`],
    [`http_req_duration{scenario:${scenario}}`]: [`p(95)<${p95}`, `p(99)<${p99}`],
  }
  if (rate !== undefined) {
    const planned = (rate * seconds(duration)) / seconds(timeUnit)
    thresholds[`dropped_iterations{scenario:${scenario}}`] = [`count<=${Math.floor(planned * 0.01)}`]
  }
  return thresholds
}

/**
 * Size of the object at `url`: HEAD's Content-Length, or the total of `Content-Range` from a
 * two-byte Range GET when HEAD does not say (not `bytes=0-0`: s3rver answers it with the whole
 * object, which the proxy refuses with 502). Aborts the test when neither works.
 */
export function objectSize(url, headers) {
  const head = http.head(url, { headers, tags: { name: 'setup-head' } })
  const length = Number(header(head, 'Content-Length'))
  if (head.status === 200 && Number.isInteger(length) && length > 0) return length
  const probe = http.get(url, { headers: { ...headers, Range: 'bytes=0-1' }, responseType: 'none', tags: { name: 'setup-probe' } })
  const total = /\/(\d+)$/.exec(header(probe, 'Content-Range') || '')
  if (probe.status === 206 && total) return Number(total[1])
  return abort(`cannot learn the size of ${url}: HEAD ${head.status}, Range GET ${probe.status}`)
}

/** Stops the whole test with a reason (a setup problem, not a measurement). */
export function abort(reason) {
  console.error(reason)
  exec.test.abort(reason)
}
