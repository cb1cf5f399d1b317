// Replica sets end to end: real s3rver instances as replicas holding the same objects, failover,
// circuit breakers, hedging and /ready, seen from the client side.
import assert from 'node:assert/strict'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { after, afterEach, before, describe, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { send, type RawResponse } from '../support/http.ts'
import { startTestProxy, type TestProxy } from '../support/proxy.ts'
import { SECRET_KEY, startS3, type TestS3 } from '../support/s3.ts'

const BODY = 'replicated object body'
let primary: TestS3
let backup: TestS3
let proxy: TestProxy | undefined

before(async () => {
  ;[primary, backup] = await Promise.all([startS3(), startS3()])
  for (const s3 of [primary, backup]) {
    await s3.createBucket('data')
    await s3.put('data', 'doc.txt', BODY, { ContentType: 'text/plain' })
  }
  await backup.put('data', 'only-on-backup.txt', 'backup only')
})

afterEach(async () => {
  await proxy?.stop()
  proxy = undefined
  primary.failWith(undefined)
  primary.delay(0)
})

after(async () => {
  await Promise.all([primary, backup].map((s3) => s3.stop()))
})

function replicaYaml(name: string, endpoint: string, priority: number, timeout = 2): string {
  return `
        - name: ${name}
          bucket: data
          endpoint: ${endpoint}
          access_key: S3RVER
          secret_key: ${JSON.stringify(SECRET_KEY)}
          priority: ${priority}
          timeout: ${timeout}`
}

/** The usual set: primary-a (priority 1) and backup-b (priority 2). */
const primaryAndBackup = () => replicaYaml('primary-a', primary.endpoint, 1) + replicaYaml('backup-b', backup.endpoint, 2)

function configYaml(options: { replicas: string; breaker?: string; hedgeAfterMs?: number }): string {
  return `
server:
  address: "127.0.0.1:0"
  debug_headers: true
metrics: { enabled: true, port: 0 }
buckets:
  - name: products
    path_prefix: /products
    s3:
      region: us-east-1
      timeout: 5${options.hedgeAfterMs === undefined ? '' : `\n      hedge_after_ms: ${options.hedgeAfterMs}`}
      replicas:${options.replicas}
      circuit_breaker: ${options.breaker ?? '{ failure_threshold: 3, success_threshold: 1, timeout_seconds: 1 }'}
      health_check: { interval_seconds: 0.2 }
`
}

const get = (path = '/products/doc.txt') => send((proxy as TestProxy).url, path)

async function metricValue(line: string): Promise<number> {
  const text = await (await fetch((proxy as TestProxy).proxy.metricsUrl as string)).text()
  const found = text.split('\n').find((l) => l.startsWith(line))
  return found === undefined ? 0 : Number(found.slice(line.length).trim())
}

/** Polls until `check` passes; a timeout shows /ready. */
const until = (check: () => Promise<boolean>, what: string) =>
  eventually(check, what, async () => (await send((proxy as TestProxy).url, '/ready')).text)

describe('replica failover', () => {
  it('serves every request from the backup while the primary is down, then returns to the primary', async () => {
    proxy = await startTestProxy(configYaml({ replicas: primaryAndBackup() }))
    const first = await get()
    assert.equal(first.headers['x-served-by'], 'primary-a')

    await primary.pause()
    const during: RawResponse[] = []
    for (let i = 0; i < 10; i++) during.push(await get())
    assert.deepEqual(during.map((r) => r.status), Array(10).fill(200), 'no client sees an error')
    assert.ok(during.every((r) => r.text === BODY && r.headers['x-served-by'] === 'backup-b'))
    assert.ok((await metricValue('replica_failovers_total{bucket="products",from="primary-a",to="backup-b"}')) >= 1)
    assert.equal(await metricValue('circuit_breaker_state{bucket="products",replica="primary-a"}'), 1)

    await primary.resume()
    await until(async () => (await get()).headers['x-served-by'] === 'primary-a', 'traffic back on the primary')
    assert.equal(await metricValue('circuit_breaker_state{bucket="products",replica="primary-a"}'), 0)
  })

  it('fails over from a primary that accepts connections and never answers, after its timeout', async () => {
    const sockets = new Set<net.Socket>()
    const hanging = net.createServer((socket) => sockets.add(socket)).listen(0, '127.0.0.1')
    await new Promise((resolve) => hanging.once('listening', resolve))
    const hangingUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`
    try {
      proxy = await startTestProxy(configYaml({ replicas: replicaYaml('hung', hangingUrl, 1, 0.5) + replicaYaml('backup-b', backup.endpoint, 2) }))
      const started = performance.now()
      const res = await get()
      const elapsed = performance.now() - started
      assert.equal(res.status, 200)
      assert.equal(res.text, BODY)
      assert.equal(res.headers['x-served-by'], 'backup-b')
      assert.ok(elapsed >= 450, `waited ${elapsed} ms for the hung replica's timeout`)
    } finally {
      for (const socket of sockets) socket.destroy()
      hanging.close()
    }
  })

  it('fails over from a primary answering 500 and stops calling it once its breaker opens', async () => {
    proxy = await startTestProxy(configYaml({ replicas: primaryAndBackup(), breaker: '{ failure_threshold: 3, success_threshold: 1, timeout_seconds: 60 }' }))
    primary.failWith(500)
    const before = primary.requests.length
    for (let i = 0; i < 6; i++) {
      const res = await get()
      assert.equal(res.status, 200)
      assert.equal(res.headers['x-served-by'], 'backup-b')
    }
    const ready = await send(proxy.url, '/ready')
    assert.equal(ready.json<{ backends: { products: { replicas: Record<string, string> } } }>().backends.products.replicas['primary-a'], 'unhealthy')
    // 3 failures open the breaker (probes count too); after that nothing more reaches the primary.
    const reachedPrimary = primary.requests.length - before
    assert.ok(reachedPrimary <= 3, `${reachedPrimary} requests reached the failing primary`)
    for (let i = 0; i < 3; i++) await get()
    assert.equal(primary.requests.length - before, reachedPrimary)
  })

  it('does not fail over on a 404: a missing object is an answer, not an outage', async () => {
    proxy = await startTestProxy(configYaml({ replicas: primaryAndBackup() }))
    const backupBefore = backup.requests.filter((r) => r.method === 'GET').length
    const res = await get('/products/only-on-backup.txt')
    assert.equal(res.status, 404)
    assert.equal(backup.requests.filter((r) => r.method === 'GET').length, backupBefore)
  })

  it('answers 503 with Retry-After when every replica is down', async () => {
    proxy = await startTestProxy(configYaml({ replicas: replicaYaml('primary-a', 'http://127.0.0.1:1', 1) + replicaYaml('backup-b', 'http://127.0.0.1:2', 2) }))
    const res = await get()
    assert.equal(res.status, 503)
    assert.ok(Number(res.headers['retry-after']) >= 1)
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ORIGIN_UNAVAILABLE')
    // Breakers open: answered at once, still 503.
    for (let i = 0; i < 4; i++) await get()
    const fast = await get()
    assert.equal(fast.status, 503)
    assert.ok(Number(fast.headers['retry-after']) >= 1)
  })
})

describe('readiness with replicas', () => {
  it('goes ready -> degraded -> unavailable -> ready as replicas fail and return', async () => {
    proxy = await startTestProxy(configYaml({ replicas: primaryAndBackup() }))
    const ready = () => send((proxy as TestProxy).url, '/ready')
    const statusIs = (status: string, code: number) => async () => {
      const res = await ready()
      return res.status === code && res.json<{ status: string }>().status === status
    }
    assert.deepEqual((await ready()).json(), {
      status: 'ready',
      backends: { products: { status: 'ready', replicas: { 'primary-a': 'healthy', 'backup-b': 'healthy' } } },
    })
    await primary.pause()
    await until(statusIs('degraded', 200), '/ready degraded')
    await backup.pause()
    await until(statusIs('unavailable', 503), '/ready unavailable')
    await primary.resume()
    await backup.resume()
    await until(statusIs('ready', 200), '/ready ready again')
  })
})

describe('hedging', () => {
  it('sends the read to the next replica when the first is slow, answers with the faster, aborts the slower', async () => {
    proxy = await startTestProxy(configYaml({ replicas: primaryAndBackup(), hedgeAfterMs: 100 }))
    primary.delay(1500)
    const before = primary.requests.length
    const started = performance.now()
    const res = await get()
    const elapsed = performance.now() - started
    assert.equal(res.status, 200)
    assert.equal(res.text, BODY)
    assert.equal(res.headers['x-served-by'], 'backup-b')
    assert.ok(elapsed < 1000, `answered in ${elapsed} ms`)
    // The slow primary's request was abandoned: once it is forwarded, it ends aborted. (Only the
    // GET: a background health probe, a HEAD, may reach the primary meanwhile.)
    const primaryGet = () => primary.requests.slice(before).find((r) => r.method === 'GET')
    await until(async () => primaryGet() !== undefined, 'the primary request to be forwarded')
    assert.equal(await primaryGet()?.outcome, 'aborted')
    assert.equal(await metricValue('replica_hedged_requests_total{bucket="products",replica="backup-b"}'), 1)
  })
})
