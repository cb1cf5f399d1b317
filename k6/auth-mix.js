// Authentication under a realistic mix: every request is one of the cases below, picked by weight,
// and must get exactly its status (and, for a refusal, its error code and WWW-Authenticate).
// Refusals are cheap to send and must stay cheap to answer; a bad signature is re-verified every
// time (only verified tokens are cached), so this also shows what a token-spraying client costs.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e TOKEN=eyJ... k6/auth-mix.js
//
//   case       weight  request                                          expects
//   public       20    PUBLIC_OBJECT, no token                          200
//   bearer       30    PRIVATE_OBJECT, Authorization: Bearer TOKEN      200
//   query        15    PRIVATE_OBJECT?token=TOKEN                       200
//   missing      15    PRIVATE_OBJECT, no token                         401 AUTH_TOKEN_MISSING
//   tampered     10    TOKEN with one signature character changed       401 AUTH_TOKEN_INVALID
//   alg-none      5    TOKEN's claims re-sent as an unsigned alg=none   401 AUTH_TOKEN_INVALID
//   malformed     5    Authorization: Bearer not-a-jwt                  401 AUTH_TOKEN_INVALID
//
// Env: TOKEN (required: a valid token for PRIVATE_OBJECT; the demo prints one), PUBLIC_OBJECT
//      (/public/hello.txt), PRIVATE_OBJECT (/private/report.txt), RATE (100 req/s), DURATION (30s),
//      P95_MS (50), P99_MS (100), VUS / MAX_VUS. The query case needs a `query` token source named
//      `token` on the private bucket (the demo has one).
import http from 'k6/http'
import { check } from 'k6'
import encoding from 'k6/encoding'
import { BASE_URL, TOKEN, abort, arrivalRate, env, envNumber, errorCode, header, scenarioThresholds } from './lib.js'

const PUBLIC = `${BASE_URL}${env('PUBLIC_OBJECT', '/public/hello.txt')}`
const PRIVATE = `${BASE_URL}${env('PRIVATE_OBJECT', '/private/report.txt')}`
const RATE = envNumber('RATE', 100)
const DURATION = env('DURATION', '30s')

const CASES = [
  { name: 'public', weight: 20, status: 200 },
  { name: 'bearer', weight: 30, status: 200 },
  { name: 'query', weight: 15, status: 200 },
  { name: 'missing', weight: 15, status: 401, code: 'AUTH_TOKEN_MISSING' },
  { name: 'tampered', weight: 10, status: 401, code: 'AUTH_TOKEN_INVALID' },
  { name: 'alg-none', weight: 5, status: 401, code: 'AUTH_TOKEN_INVALID' },
  { name: 'malformed', weight: 5, status: 401, code: 'AUTH_TOKEN_INVALID' },
]
const TOTAL_WEIGHT = CASES.reduce((sum, c) => sum + c.weight, 0)

const thresholds = scenarioThresholds('mix', { p95: envNumber('P95_MS', 50), p99: envNumber('P99_MS', 100), rate: RATE, duration: DURATION })
// Per case as well: 1% of a rare case failing would hide in the overall check rate.
for (const c of CASES) thresholds[`checks{case:${c.name}}`] = ['rate==1']

export const options = { scenarios: { mix: arrivalRate('mix', { rate: RATE, duration: DURATION }) }, thresholds }

function forgedTokens(token) {
  const [head, payload, signature] = token.split('.')
  // The first signature character, not the last: the last one of a base64url HMAC also carries
  // padding bits, and changing only those can decode to the very same signature.
  const tampered = `${head}.${payload}.${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`
  const none = encoding.b64encode(JSON.stringify({ alg: 'none', typ: 'JWT' }), 'rawurl')
  return { tampered, algNone: `${none}.${payload}.` }
}

export function setup() {
  if (TOKEN.split('.').length !== 3) abort('TOKEN must be a JWT (header.payload.signature); npm run demo prints one')
  // Fail early and clearly if the token itself is refused: every 200 case would fail otherwise.
  const probe = http.get(PRIVATE, { headers: { Authorization: `Bearer ${TOKEN}` }, responseType: 'none' })
  if (probe.status !== 200) abort(`TOKEN is refused on ${PRIVATE}: status ${probe.status} (expired, or another demo run?)`)
  return forgedTokens(TOKEN)
}

function request(name, forged) {
  const bearerOf = (token) => ({ headers: { Authorization: `Bearer ${token}` } })
  switch (name) {
    case 'public':
      return [PUBLIC, {}]
    case 'bearer':
      return [PRIVATE, bearerOf(TOKEN)]
    case 'query':
      return [`${PRIVATE}?token=${encodeURIComponent(TOKEN)}`, {}]
    case 'missing':
      return [PRIVATE, {}]
    case 'tampered':
      return [PRIVATE, bearerOf(forged.tampered)]
    case 'alg-none':
      return [PRIVATE, bearerOf(forged.algNone)]
    default:
      return [PRIVATE, bearerOf('not-a-jwt')]
  }
}

function pick() {
  let roll = Math.random() * TOTAL_WEIGHT
  for (const c of CASES) {
    roll -= c.weight
    if (roll < 0) return c
  }
  return CASES[CASES.length - 1]
}

const expected = { 200: http.expectedStatuses(200), 401: http.expectedStatuses(401) }

export function mix(forged) {
  const c = pick()
  const [url, params] = request(c.name, forged)
  // One `name` per case, so the query case (a token in the URL) does not make its own series.
  const tags = { case: c.name, name: c.name }
  const res = http.get(url, { ...params, tags, responseCallback: expected[c.status] })
  const checks = { [`${c.name}: status ${c.status}`]: (r) => r.status === c.status }
  if (c.code !== undefined) {
    checks[`${c.name}: ${c.code}`] = (r) => errorCode(r) === c.code
    checks[`${c.name}: WWW-Authenticate: Bearer`] = (r) => /^Bearer\b/.test(header(r, 'WWW-Authenticate') || '')
  }
  check(res, checks, { case: c.name })
}
