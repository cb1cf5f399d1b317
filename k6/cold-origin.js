// Origin-bound load: requests the proxy's cache cannot answer, so each one costs an S3 round-trip.
// It measures the proxy's miss path (route, sign, call S3, stream) together with the backend:
// against `npm run demo` that is s3rver on the same machine, which usually dominates, so read the
// numbers as "proxy + this origin", not as the proxy alone. Cache on or off, the same requests
// reach S3; without a cache every request does, so this is also the plain demo's baseline.
//
// Scenarios, each at its own arrival rate (a rate of 0 switches one off):
//   missing  GET of a new, nonexistent key per request. The proxy caches no 404, so each one
//            reaches S3; the check wants ORIGIN_NOT_FOUND (S3 said no), not ROUTE_NOT_FOUND
//            (the request never left the proxy).
//   range    Range GET at a random offset of a large object. A Range on a miss goes straight to S3
//            and is never stored, and the demo's big.bin (50 MiB) is over the default 10 MiB
//            max_item_size, so it is never cached whole either. When the proxy sends X-Cache the
//            check wants MISS, so a setup where the object did get cached fails the run instead
//            of passing cache speed off as origin speed.
//   keys     Only with KEYS_FILE: real objects, one URL path per line, requested in order. Each is
//            a miss the first time only, so a list shorter than the run fails the X-Cache check.
// Not used: query strings. The cache key is `<bucket>/<key>`; the query reaches neither the key
// nor S3, so `?v=123` busts nothing.
//
// Env: MISSING_PREFIX (/public/k6-cold-origin/), MISSING_RATE (50 req/s), RANGE_OBJECT
//      (/public/big.bin), RANGE_RATE (20), CHUNK (65536 bytes), KEYS_FILE (unset; a path relative
//      to this script), KEYS_RATE (20), DURATION (30s), P95_MS (300), P99_MS (600), MAX_FAILED (0:
//      the fraction of failed requests tolerated), TOKEN (sent as bearer when set), VUS / MAX_VUS.
import http from 'k6/http'
import { check } from 'k6'
import exec from 'k6/execution'
import { SharedArray } from 'k6/data'
import { BASE_URL, TOKEN, abort, arrivalRate, bearer, env, envNumber, errorCode, header, objectSize, scenarioThresholds } from './lib.js'

const DURATION = env('DURATION', '30s')
const MISSING_PREFIX = env('MISSING_PREFIX', '/public/k6-cold-origin/')
const RANGE_OBJECT = env('RANGE_OBJECT', '/public/big.bin')
const CHUNK = envNumber('CHUNK', 64 * 1024)
const KEYS_FILE = env('KEYS_FILE', '')
// open() works only in the init context; a SharedArray holds one copy for every VU.
const KEYS =
  KEYS_FILE === ''
    ? []
    : new SharedArray('keys', () =>
        open(KEYS_FILE)
          .split('\n')
          .map((line) => line.trim())
          .filter((line) => line !== '' && !line.startsWith('#'))
          .map((line) => (line.startsWith('/') ? line : `/${line}`))
      )

const rates = {
  missing: envNumber('MISSING_RATE', 50),
  range: envNumber('RANGE_RATE', 20),
  keys: KEYS.length > 0 ? envNumber('KEYS_RATE', 20) : 0,
}
const limits = { p95: envNumber('P95_MS', 300), p99: envNumber('P99_MS', 600), maxFailed: envNumber('MAX_FAILED', 0), duration: DURATION }

const scenarios = {}
const thresholds = {}
for (const name of Object.keys(rates)) {
  if (rates[name] <= 0) continue
  scenarios[name] = arrivalRate(name, { rate: rates[name], duration: DURATION })
  Object.assign(thresholds, scenarioThresholds(name, { ...limits, rate: rates[name] }))
}
export const options = { scenarios, thresholds }

export function setup() {
  const size = rates.range > 0 ? objectSize(`${BASE_URL}${RANGE_OBJECT}`, bearer(TOKEN)) : 0
  if (rates.range > 0 && size < CHUNK) abort(`${RANGE_OBJECT} is ${size} bytes, smaller than CHUNK=${CHUNK}`)
  // A per-run prefix: two runs never share a "missing" key, whatever the cache does with them.
  return { size, run: Date.now().toString(36) }
}

const headers = bearer(TOKEN)
const notFound = http.expectedStatuses(404)
const servedByOrigin = (r) => {
  const xCache = header(r, 'X-Cache')
  return xCache === undefined || xCache === 'MISS'
}

export function missing(data) {
  const path = `${MISSING_PREFIX}${data.run}-${exec.scenario.iterationInTest}`
  // One `name` for every key: a metric series per URL would grow without bound.
  const res = http.get(`${BASE_URL}${path}`, { headers, responseCallback: notFound, tags: { name: `${MISSING_PREFIX}*` } })
  check(res, {
    'missing key is 404': (r) => r.status === 404,
    'the 404 is ORIGIN_NOT_FOUND': (r) => errorCode(r) === 'ORIGIN_NOT_FOUND',
  })
}

export function range(data) {
  const start = Math.floor(Math.random() * (data.size - CHUNK + 1))
  const end = start + CHUNK - 1
  const res = http.get(`${BASE_URL}${RANGE_OBJECT}`, {
    headers: { ...headers, Range: `bytes=${start}-${end}` },
    responseType: 'binary', // random bytes: as text, k6 would decode them as UTF-8 and miscount
    tags: { name: `${RANGE_OBJECT} (range)` },
  })
  check(res, {
    'range is 206': (r) => r.status === 206,
    'Content-Range is the requested range': (r) => header(r, 'Content-Range') === `bytes ${start}-${end}/${data.size}`,
    'body is CHUNK bytes': (r) => r.body !== null && r.body.byteLength === CHUNK,
    'served by the origin (X-Cache absent or MISS)': servedByOrigin,
  })
}

export function keys() {
  const path = KEYS[exec.scenario.iterationInTest % KEYS.length]
  const res = http.get(`${BASE_URL}${path}`, { headers, responseType: 'none', tags: { name: 'KEYS_FILE' } })
  check(res, {
    'key is 200': (r) => r.status === 200,
    'served by the origin (X-Cache absent or MISS)': servedByOrigin,
  })
}
