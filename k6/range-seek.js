// Video-style seeking over one large object: the size comes from a HEAD in setup(), then each
// iteration asks for one Range, as a player does when it starts, jumps, or reads the index:
//   70%  bytes=a-b          a chunk at a random offset (a seek)
//   10%  bytes=0-b          the first chunk (playback start)
//   10%  bytes=-n           the last n bytes (an MP4 whose moov index sits at the end)
//    5%  bytes=a-           an open range from near the end (small, so the run stays bounded)
//    5%  bytes=size-        past the end: 416 with `Content-Range: bytes */size`
// Every 206 is checked for the exact Content-Range and a body of exactly the promised length.
// Time to first byte (http_req_waiting) gets its own threshold: it is what a viewer waits on a seek.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 k6/range-seek.js
//
// Env: OBJECT (/public/big.bin), CHUNK (262144 bytes), RATE (20 req/s), DURATION (30s),
//      P95_MS (500), P99_MS (1000), TTFB_P95_MS (200), TOKEN (sent as bearer when set), VUS / MAX_VUS.
import http from 'k6/http'
import { check } from 'k6'
import { BASE_URL, TOKEN, abort, arrivalRate, bearer, env, envNumber, header, objectSize, scenarioThresholds } from './lib.js'

const OBJECT = env('OBJECT', '/public/big.bin')
const CHUNK = envNumber('CHUNK', 256 * 1024)
const RATE = envNumber('RATE', 20)
const DURATION = env('DURATION', '30s')
const TARGET = `${BASE_URL}${OBJECT}`

export const options = {
  scenarios: { seek: arrivalRate('seek', { rate: RATE, duration: DURATION }) },
  thresholds: {
    ...scenarioThresholds('seek', { p95: envNumber('P95_MS', 500), p99: envNumber('P99_MS', 1000), rate: RATE, duration: DURATION }),
    'http_req_waiting{scenario:seek}': [`p(95)<${envNumber('TTFB_P95_MS', 200)}`],
  },
}

export function setup() {
  const size = objectSize(TARGET, bearer(TOKEN))
  // Below two chunks the "random offset" and "near the end" cases overlap and prove little.
  if (size < 2 * CHUNK) abort(`${OBJECT} is ${size} bytes; range-seek wants at least 2 x CHUNK (${2 * CHUNK})`)
  return { size }
}

const randomInt = (max) => Math.floor(Math.random() * max) // 0 <= n < max

/** One request as a player would make it: the Range header and the bytes it must get back. */
function pickRange(size) {
  const roll = Math.random()
  if (roll < 0.7) {
    const a = randomInt(size - CHUNK + 1)
    return { kind: 'seek', range: `bytes=${a}-${a + CHUNK - 1}`, first: a, last: a + CHUNK - 1 }
  }
  if (roll < 0.8) return { kind: 'start', range: `bytes=0-${CHUNK - 1}`, first: 0, last: CHUNK - 1 }
  if (roll < 0.9) return { kind: 'suffix', range: `bytes=-${CHUNK}`, first: size - CHUNK, last: size - 1 }
  if (roll < 0.95) {
    const a = size - 1 - randomInt(CHUNK)
    return { kind: 'open', range: `bytes=${a}-`, first: a, last: size - 1 }
  }
  return { kind: 'past-end', range: `bytes=${size}-` }
}

const partialOrUnsatisfiable = http.expectedStatuses(206, 416)

export function seek(data) {
  const { size } = data
  const want = pickRange(size)
  const res = http.get(TARGET, {
    headers: { ...bearer(TOKEN), Range: want.range },
    responseType: 'binary', // random bytes: as text, k6 would decode them as UTF-8 and miscount
    responseCallback: partialOrUnsatisfiable,
    tags: { kind: want.kind },
  })
  if (want.kind === 'past-end') {
    check(res, {
      'past the end is 416': (r) => r.status === 416,
      '416 names the size': (r) => header(r, 'Content-Range') === `bytes */${size}`,
    }, { kind: want.kind })
    return
  }
  const length = want.last - want.first + 1
  check(res, {
    'range is 206': (r) => r.status === 206,
    'Content-Range is exact': (r) => header(r, 'Content-Range') === `bytes ${want.first}-${want.last}/${size}`,
    'Content-Length is the range length': (r) => Number(header(r, 'Content-Length')) === length,
    'body is the range length': (r) => r.body !== null && r.body.byteLength === length,
  }, { kind: want.kind })
}
