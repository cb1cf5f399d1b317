// Cache-hit throughput: one small object, warmed in setup(), then requested at a fixed arrival rate.
// Needs a proxy with the cache on (`npm run demo` caches in memory).
//   k6 run k6/cache-hit.js                      (against npm run demo)
//
// Env: OBJECT (/public/hello.txt), RATE (200 req/s), DURATION (30s), P95_MS (25), P99_MS (50),
//      TOKEN (sent as bearer when set: for an OBJECT in a private bucket),
//      ALLOW_UNCACHED=1 (run anyway when the proxy sends no X-Cache; the numbers are then origin
//      throughput, not cache throughput), VUS / MAX_VUS (VU pool of the arrival-rate executor).
import http from 'k6/http'
import { check, sleep } from 'k6'
import { BASE_URL, TOKEN, abort, arrivalRate, bearer, env, envNumber, header, scenarioThresholds } from './lib.js'

const OBJECT = env('OBJECT', '/public/hello.txt')
const RATE = envNumber('RATE', 200)
const DURATION = env('DURATION', '30s')
const TARGET = `${BASE_URL}${OBJECT}`

export const options = {
  scenarios: { hits: arrivalRate('hits', { rate: RATE, duration: DURATION }) },
  thresholds: scenarioThresholds('hits', {
    p95: envNumber('P95_MS', 25),
    p99: envNumber('P99_MS', 50),
    rate: RATE,
    duration: DURATION,
  }),
}

export function setup() {
  // The first GET is a miss that fills the tiers in the background, so a HIT may take a moment.
  let xCache
  for (let attempt = 0; attempt < 10; attempt++) {
    const res = http.get(TARGET, { headers: bearer(TOKEN), responseType: 'none' })
    if (res.status !== 200) return abort(`warming ${TARGET}: status ${res.status} (TOKEN needed for a private bucket?)`)
    xCache = header(res, 'X-Cache')
    if (xCache === 'HIT') return { cached: true }
    if (xCache === undefined) break
    sleep(0.2)
  }
  const why =
    xCache === undefined
      ? 'the proxy sends no X-Cache: its cache is off'
      : `X-Cache stays ${xCache}: the object is not cacheable (no-store, private, or over max_item_size)`
  if (env('ALLOW_UNCACHED', '') === '') return abort(`${why}; set ALLOW_UNCACHED=1 to measure origin throughput instead`)
  console.warn(`${why}; measuring origin throughput`)
  return { cached: false }
}

// The body is read off the wire but not kept: at a few hundred req/s, copying it into JS strings
// would make k6, not the proxy, the bottleneck.
const params = { headers: bearer(TOKEN), responseType: 'none' }

export function hits(data) {
  const res = http.get(TARGET, params)
  check(res, {
    'status is 200': (r) => r.status === 200,
    // A MISS here means the entry was evicted or expired under load: the run did not measure hits.
    'X-Cache is HIT': (r) => !data.cached || header(r, 'X-Cache') === 'HIT',
  })
}
