// Smoke test against a running proxy (for example `npm run demo`):
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e TOKEN=<jwt printed by the demo> k6/smoke.js
import http from 'k6/http'
import { check } from 'k6'

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080'
const TOKEN = __ENV.TOKEN || ''

export const options = {
  vus: 2,
  iterations: 20,
  thresholds: { checks: ['rate==1'], http_req_failed: ['rate<0.01'] },
}

export default function () {
  const pub = http.get(`${BASE_URL}/public/hello.txt`)
  check(pub, { 'public object is 200': (r) => r.status === 200 })

  // big.bin is random bytes: read as text, k6 would decode them as UTF-8 and miscount the length.
  const range = http.get(`${BASE_URL}/public/big.bin`, { headers: { Range: 'bytes=0-1023' }, responseType: 'binary' })
  check(range, { 'range is 206': (r) => r.status === 206, 'range is 1 KiB': (r) => r.body.byteLength === 1024 })

  const denied = http.get(`${BASE_URL}/private/report.txt`, { responseCallback: http.expectedStatuses(401) })
  check(denied, { 'private without token is 401': (r) => r.status === 401 })

  if (TOKEN) {
    const allowed = http.get(`${BASE_URL}/private/report.txt`, { headers: { Authorization: `Bearer ${TOKEN}` } })
    check(allowed, { 'private with token is 200': (r) => r.status === 200 })
  }

  check(http.get(`${BASE_URL}/health`), { 'health is 200': (r) => r.status === 200 })
}
