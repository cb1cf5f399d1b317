// Configuration reload under load: a steady arrival rate on one cached object while a second
// scenario calls `POST /admin/reload` every RELOAD_EVERY. A reload swaps generations under
// requests in flight; not one object request may fail, be cut short, or (when the cache is on)
// lose its cache entry, since a reload keeps the cache when the `cache` block did not change.
// Needs a proxy with an `admin` block (`npm run demo` has one and prints its token).
//   k6 run -e ADMIN_TOKEN=... k6/reload-under-load.js   (the demo prints its admin token)
//
// Env: ADMIN_TOKEN (required), OBJECT (/public/hello.txt), RATE (100 req/s), DURATION (60s),
//      RELOAD_EVERY (5s), P95_MS (50), P99_MS (250), TOKEN (sent as bearer when set, for an OBJECT
//      in a private bucket), VUS / MAX_VUS.
import http from 'k6/http'
import { check, sleep } from 'k6'
import { BASE_URL, TOKEN, abort, arrivalRate, bearer, env, envNumber, header, scenarioThresholds, seconds } from './lib.js'

const ADMIN_TOKEN = env('ADMIN_TOKEN', '')
const OBJECT = env('OBJECT', '/public/hello.txt')
const RATE = envNumber('RATE', 100)
const DURATION = env('DURATION', '60s')
const RELOAD_EVERY = env('RELOAD_EVERY', '5s')
const TARGET = `${BASE_URL}${OBJECT}`
const RELOAD = `${BASE_URL}/admin/reload`

// Reloads start once the load is steady and stop before it ends, so every reload has requests
// in flight on both sides of it.
const reloadSeconds = Math.max(1, seconds(DURATION) - 4)
const expectedReloads = Math.max(1, Math.floor(reloadSeconds / seconds(RELOAD_EVERY)))

export const options = {
  scenarios: {
    load: arrivalRate('load', { rate: RATE, duration: DURATION }),
    // One VU: reloads never overlap each other, and it can follow the generation number.
    reload: { ...arrivalRate('reloadLoop', { rate: 1, timeUnit: RELOAD_EVERY, duration: `${reloadSeconds}s`, startTime: '2s' }), preAllocatedVUs: 1, maxVUs: 1 },
  },
  thresholds: {
    ...scenarioThresholds('load', { p95: envNumber('P95_MS', 50), p99: envNumber('P99_MS', 250), rate: RATE, duration: DURATION }),
    // Not a latency target: a reload rebuilds a runtime and may take a while. It must succeed.
    'http_req_failed{scenario:reload}': ['rate==0'],
    'checks{scenario:reload}': ['rate==1'],
    // Reloads that never ran would make the zero-failure result above meaningless.
    'http_reqs{scenario:reload}': [`count>=${expectedReloads}`],
  },
}

function reload() {
  return http.post(RELOAD, null, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, tags: { name: 'POST /admin/reload' } })
}

function generationOf(res) {
  try {
    const generation = JSON.parse(res.body).generation
    return typeof generation === 'number' ? generation : undefined
  } catch (e) {
    return undefined
  }
}

export function setup() {
  if (ADMIN_TOKEN === '') abort('ADMIN_TOKEN is required (the admin.token of the proxy under test)')
  // One reload before the load, so a missing endpoint or a refused token is reported as such
  // instead of as a failed threshold.
  const probe = reload()
  if (probe.status === 404 || probe.status === 405) abort(`POST /admin/reload answered ${probe.status}: no admin block, or a proxy without /admin/reload`)
  if (probe.status !== 200) abort(`POST /admin/reload answered ${probe.status}: ${probe.body}`)
  const generation = generationOf(probe)
  if (generation === undefined) abort(`POST /admin/reload answered 200 without a numeric generation: ${probe.body}`)

  // Warm the object; the body is the reference every response under load must match byte for byte.
  let res
  for (let attempt = 0; attempt < 10; attempt++) {
    res = http.get(TARGET, { headers: bearer(TOKEN) })
    if (res.status !== 200) abort(`warming ${TARGET}: status ${res.status}`)
    if (header(res, 'X-Cache') !== 'MISS') break
    sleep(0.2)
  }
  return { generation, body: res.body, cached: header(res, 'X-Cache') === 'HIT' }
}

const loadParams = { headers: bearer(TOKEN), tags: { name: OBJECT } }

export function load(data) {
  const res = http.get(TARGET, loadParams)
  check(res, {
    'object is 200': (r) => r.status === 200,
    'body is complete and unchanged': (r) => r.body === data.body,
    'still a cache HIT across reloads': (r) => !data.cached || header(r, 'X-Cache') === 'HIT',
  })
}

let lastGeneration // per VU; the reload scenario has exactly one

export function reloadLoop(data) {
  if (lastGeneration === undefined) lastGeneration = data.generation
  const res = reload()
  const generation = generationOf(res)
  check(res, {
    'reload is 200': (r) => r.status === 200,
    'generation goes up': () => generation !== undefined && generation > lastGeneration,
  })
  if (generation !== undefined) lastGeneration = generation
}
