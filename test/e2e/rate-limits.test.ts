// Rate limits end to end, with two proxy instances sharing a real redis-server: each scope (global,
// per IP, per user, per bucket) counts requests across both instances, answers 429 with
// Retry-After and RateLimit-* headers, and a Redis outage falls back to per-process counting,
// never to errors. Rates are tiny (one request per 10-20 s) so no window can roll over mid-test.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send, type RawResponse } from '../support/http.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const execFileAsync = promisify(execFile)
const SECRET = 'rate-limit-test-secret-of-at-least-32-bytes'
let s3: TestS3
let redis: TestRedis
const proxies: TestProxy[] = []

/** burst 2 at 0.1/s: windows of 20 s admitting 2 requests. */
const config = (redisUrl: string, keyPrefix: string, limits: string) => `
server:
  address: "127.0.0.1:0"
  trusted_proxies: [127.0.0.1]
  rate_limit:
${limits}
cache:
  redis: { url: "${redisUrl}", key_prefix: "${keyPrefix}" }
buckets:
${bucketYaml({ name: 'open', prefix: '/open', bucket: 'rate-limits', endpoint: s3.endpoint, extra: '    rate_limit: { requests_per_second: 0.1, burst: 2 }' })}
${bucketYaml({ name: 'other', prefix: '/other', bucket: 'rate-limits', endpoint: s3.endpoint })}
${bucketYaml({ name: 'private', prefix: '/private', bucket: 'rate-limits', endpoint: s3.endpoint, extra: `    auth: { enabled: true, jwt: { secret: "${SECRET}" } }` })}`

async function pair(keyPrefix: string, limits: string): Promise<[TestProxy, TestProxy]> {
  const a = await startTestProxy(config(redis.url, keyPrefix, limits))
  const b = await startTestProxy(config(redis.url, keyPrefix, limits))
  proxies.push(a, b)
  return [a, b]
}

const get = (proxy: TestProxy, path: string, headers: Record<string, string> = {}) => send(proxy.url, path, { headers })
const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))

function assertLimited(res: RawResponse, limit: number, window: number): void {
  assert.equal(res.status, 429)
  assert.equal(res.json<{ error: { code: string } }>().error.code, 'GUARD_RATE_LIMITED')
  const retryAfter = Number(res.headers['retry-after'])
  assert.ok(retryAfter >= 1 && retryAfter <= window, `Retry-After ${retryAfter}`)
  assert.equal(res.headers['ratelimit-limit'], String(limit))
  assert.equal(res.headers['ratelimit-remaining'], '0')
  assert.equal(res.headers['ratelimit-reset'], String(retryAfter))
  assert.equal(res.headers['ratelimit-policy'], `${limit};w=${window}`)
}

before(async () => {
  ;[s3, redis] = await Promise.all([startS3(), startRedis()])
  await s3.createBucket('rate-limits')
  await s3.put('rate-limits', 'a.txt', 'ok')
})

after(async () => {
  await Promise.all(proxies.map((p) => p.stop()))
  await Promise.all([s3?.stop(), redis?.stop()])
})

describe('rate limits shared through Redis by two instances', () => {
  it('global: one budget for every client, across instances', async () => {
    const [a, b] = await pair('rl-global:', '    global: { requests_per_second: 0.1, burst: 3 }')
    assert.equal((await get(a, '/other/a.txt', { 'x-forwarded-for': '192.0.2.1' })).status, 200)
    assert.equal((await get(b, '/other/a.txt', { 'x-forwarded-for': '192.0.2.2' })).status, 200)
    assert.equal((await get(a, '/other/a.txt', { 'x-forwarded-for': '192.0.2.3' })).status, 200)
    assertLimited(await get(b, '/other/a.txt', { 'x-forwarded-for': '192.0.2.4' }), 3, 30)
    // The proxy's own endpoints are never limited (load balancer probes).
    assert.equal((await get(b, '/health')).status, 200)
  })

  it('per_ip: each client address has its own budget, across instances', async () => {
    const [a, b] = await pair('rl-ip:', '    per_ip: { requests_per_second: 0.1, burst: 2 }')
    const alice = { 'x-forwarded-for': '203.0.113.1' }
    assert.equal((await get(a, '/other/a.txt', alice)).status, 200)
    assert.equal((await get(b, '/other/a.txt', alice)).status, 200)
    assertLimited(await get(a, '/other/a.txt', alice), 2, 20)
    assert.equal((await get(b, '/other/a.txt', { 'x-forwarded-for': '2001:db8::1' })).status, 200)
    const line = await a.logged((l) => l.msg === 'request' && l.status === 429)
    assert.equal(line.reason, 'rate_limit_per_ip')
  })

  it('per_user: keyed by the token subject, whatever address it comes from', async () => {
    const [a, b] = await pair('rl-user:', '    per_user: { requests_per_second: 0.1, burst: 2 }')
    const alice = { authorization: `Bearer ${await token('alice')}` }
    assert.equal((await get(a, '/private/a.txt', { ...alice, 'x-forwarded-for': '192.0.2.1' })).status, 200)
    assert.equal((await get(b, '/private/a.txt', { ...alice, 'x-forwarded-for': '192.0.2.2' })).status, 200)
    assertLimited(await get(a, '/private/a.txt', { ...alice, 'x-forwarded-for': '192.0.2.3' }), 2, 20)
    assert.equal((await get(b, '/private/a.txt', { authorization: `Bearer ${await token('bob')}` })).status, 200)
    // Anonymous requests to a public bucket are not counted per user.
    for (let i = 0; i < 3; i++) assert.equal((await get(a, '/other/a.txt')).status, 200)
  })

  it('bucket: one budget for the whole bucket, other buckets unaffected', async () => {
    const [a, b] = await pair('rl-bucket:', '    enabled: true')
    assert.equal((await get(a, '/open/a.txt', { 'x-forwarded-for': '192.0.2.1' })).status, 200)
    assert.equal((await get(b, '/open/a.txt', { 'x-forwarded-for': '192.0.2.2' })).status, 200)
    assertLimited(await get(a, '/open/a.txt', { 'x-forwarded-for': '192.0.2.3' }), 2, 20)
    assert.equal((await get(b, '/other/a.txt')).status, 200)
  })
})

it('falls back to counting in the process while Redis is down: limits hold, no errors', async () => {
  const own = await startRedis()
  const proxy = await startTestProxy(config(own.url, 'rl-down:', '    per_ip: { requests_per_second: 0.1, burst: 2 }'))
  proxies.push(proxy)
  await own.kill()
  const client = { 'x-forwarded-for': '198.51.100.1' }
  assert.equal((await get(proxy, '/other/a.txt', client)).status, 200)
  assert.equal((await get(proxy, '/other/a.txt', client)).status, 200)
  assertLimited(await get(proxy, '/other/a.txt', client), 2, 20)
  assert.equal((await get(proxy, '/other/a.txt', { 'x-forwarded-for': '198.51.100.2' })).status, 200)
  await own.stop()
})

it('stops waiting on a hung Redis after a few timeouts: limits count in the process, then in Redis again', async () => {
  const own = await startRedis()
  // Three limits on every request (per IP, global, the bucket), Redis commands time out after 100 ms.
  const proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  trusted_proxies: [127.0.0.1]
  rate_limit:
    per_ip: { requests_per_second: 0.1, burst: 12 }
    global: { requests_per_second: 1000, burst: 1000 }
cache:
  enabled: true
  layers: [memory]
  redis: { url: "${own.url}", key_prefix: "rl-hang:", timeout_ms: 100 }
buckets:
${bucketYaml({ name: 'hung', prefix: '/hung', bucket: 'rate-limits', endpoint: s3.endpoint, extra: '    rate_limit: { requests_per_second: 1000, burst: 1000 }' })}`)
  proxies.push(proxy)
  const client = { 'x-forwarded-for': '198.51.100.9' }
  const timed = async () => {
    const started = performance.now()
    const res = await get(proxy, '/hung/a.txt', client)
    return { status: res.status, ms: performance.now() - started }
  }
  const countInRedis = async () => {
    const { stdout } = await execFileAsync('redis-cli', ['-p', String(own.port), 'GET', 'rl-hang:rl:per_ip:12/120:198.51.100.9'])
    return Number(stdout.trim())
  }
  try {
    assert.equal((await timed()).status, 200)
    assert.equal((await timed()).status, 200)
    assert.equal(await countInRedis(), 2)

    own.pause()
    // The first request pays one timeout per limit (three failures open the breaker) ...
    const first = await timed()
    assert.equal(first.status, 200)
    // ... the next ones none, and the per-IP limit still holds (12 per window, in this process).
    const next: number[] = []
    for (let i = 0; i < 11; i++) {
      const { status, ms } = await timed()
      assert.equal(status, 200)
      next.push(Math.round(ms))
    }
    // Without the breaker each of these pays three 100 ms timeouts (300+ ms). The bounds leave room
    // for a busy machine's scheduling stalls, never for a timeout per request.
    const total = next.reduce((a, b) => a + b, 0)
    assert.ok(total < 550 && Math.max(...next) < 250, `requests after the breaker opened took ${next.join(', ')} ms`)
    const refused = await timed()
    assert.equal(refused.status, 429)
    assert.ok(refused.ms < 250, `a refusal took ${Math.round(refused.ms)} ms`)

    // Redis answers again: once the breaker lets its probe through, Redis counts again (its count
    // is far below 12, where the process's own count is spent).
    own.resume()
    const deadline = Date.now() + 30_000
    let back = await timed()
    while (back.status === 429 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      back = await timed()
    }
    assert.equal(back.status, 200)
    const counted = await countInRedis()
    assert.ok(counted >= 3 && counted < 12, `Redis count ${counted}`)
    assert.equal((await timed()).status, 200)
    assert.equal(await countInRedis(), counted + 1)
  } finally {
    await own.stop()
  }
})
