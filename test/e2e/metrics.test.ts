// Prometheus metrics: the endpoint on its own port, values that move with requests of known
// outcome, bounded label cardinality, and docs/metrics.md in step with the code.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { Metrics } from '../../src/telemetry/metrics.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SECRET = 'metrics-test-secret-that-is-long-enough-for-hs256'
let s3: TestS3
let proxy: TestProxy

/** Sample values by series, e.g. `http_requests_total{bucket="pub",method="GET",status="200"}`. */
async function scrape(): Promise<Map<string, number>> {
  assert.ok(proxy.proxy.metricsUrl !== undefined)
  const text = await (await fetch(proxy.proxy.metricsUrl)).text()
  const series = new Map<string, number>()
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line)
    if (match !== null) series.set(match[1] as string, Number(match[2]))
  }
  return series
}

const value = (series: Map<string, number>, name: string) => series.get(name) ?? 0

before(async () => {
  s3 = await startS3()
  await s3.createBucket('metrics-bucket')
  await s3.put('metrics-bucket', 'a.txt', 'hello')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
metrics:
  enabled: true
  port: 0
cache:
  enabled: true
buckets:
${bucketYaml({ name: 'pub', prefix: '/pub', bucket: 'metrics-bucket', endpoint: s3.endpoint })}
${bucketYaml({
  name: 'priv',
  prefix: '/priv',
  bucket: 'metrics-bucket',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        secret: "${SECRET}"
        claims_verification: [{ claim: role, operator: equals, value: admin }]`,
})}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('metrics', () => {
  it('counts requests, cache outcomes, auth results and backend calls as they happen', async () => {
    const before = await scrape()
    await send(proxy.url, '/pub/a.txt') // miss
    await send(proxy.url, '/pub/a.txt') // hit
    await send(proxy.url, '/pub/missing.txt') // 404 from the backend
    await send(proxy.url, '/priv/a.txt') // 401
    const guest = await new SignJWT({ role: 'guest' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
    await send(proxy.url, '/priv/a.txt', { headers: { authorization: `Bearer ${guest}` } }) // 403
    await send(proxy.url, '/nowhere/a.txt') // 404 route
    await proxy.logged((l) => l.path === '/nowhere/a.txt')
    const after = await scrape()
    const delta = (name: string) => value(after, name) - value(before, name)

    assert.equal(delta('http_requests_total{bucket="pub",method="GET",status="200"}'), 2)
    assert.equal(delta('http_requests_total{bucket="pub",method="GET",status="404"}'), 1)
    assert.equal(delta('http_requests_total{bucket="priv",method="GET",status="401"}'), 1)
    assert.equal(delta('http_requests_total{bucket="priv",method="GET",status="403"}'), 1)
    assert.equal(delta('http_requests_total{bucket="",method="GET",status="404"}'), 1)
    assert.equal(delta('cache_requests_total{bucket="pub",result="hit"}'), 1)
    assert.ok(delta('cache_requests_total{bucket="pub",result="miss"}') >= 2)
    assert.equal(delta('cache_hit_bytes_total{bucket="pub",tier="memory"}'), 5)
    assert.equal(delta('auth_results_total{bucket="priv",result="invalid",reason="missing"}'), 1)
    assert.equal(delta('auth_results_total{bucket="priv",result="denied",reason="claim:role"}'), 1)
    assert.ok(delta('http_requests_by_replica_total{bucket="pub",replica="primary",result="ok"}') >= 1)
    assert.equal(delta('http_requests_by_replica_total{bucket="pub",replica="primary",result="ORIGIN_NOT_FOUND"}'), 1)
    assert.ok(value(after, 'cache_entries{tier="memory"}') >= 1)
    assert.equal(value(after, 'config_generation'), 1)
    assert.ok(value(after, 'http_request_duration_seconds_count{bucket="pub",method="GET",status_class="2xx"}') >= 2)
  })

  it('keeps label cardinality bounded over 1,000 distinct keys', async () => {
    for (let i = 0; i < 1000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => send(proxy.url, `/pub/key-${i + j}.txt`)))
    }
    const series = await scrape()
    const requestSeries = [...series.keys()].filter((k) => k.startsWith('http_requests_total{'))
    assert.ok(requestSeries.length < 20, `${requestSeries.length} series`)
    assert.ok(![...series.keys()].some((k) => k.includes('key-')), 'no key in any label')
  })

  it('documents every metric in docs/metrics.md', async () => {
    const doc = await readFile(join(import.meta.dirname, '../../docs/metrics.md'), 'utf8')
    const documented = [...doc.matchAll(/^\| `([a-z_]+)` \| (counter|gauge|histogram) \|/gm)].map((m) => m[1])
    const declared = (await new Metrics().registry.getMetricsAsJSON())
      .map((m) => m.name)
      .filter((name) => !name.startsWith('process_') && !name.startsWith('nodejs_'))
    assert.deepEqual([...documented].sort(), [...declared].sort())
  })
})
