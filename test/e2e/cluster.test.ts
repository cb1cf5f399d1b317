// Cluster mode, as a user runs it: `yatagarasu` with server.workers: 2. Both workers serve, /metrics
// on the primary is the sum over them, a purge on one worker empties every worker's cache, SIGHUP
// (or POST /admin/reload to either worker) reloads both, a killed worker is replaced without the
// service dropping, and SIGTERM drains and exits 0. Without Redis, a rate limit is one budget for
// both workers (counted by the primary), and a stopped primary loosens it to per-worker, never to
// errors.
// Which worker answered a request is read from its access line (test/support/cluster.ts).
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { PRIMARY_TIMEOUT_MS } from '../../src/security/rate-limit.ts'
import { START_MS, startCluster, type RunningCluster } from '../support/cluster.ts'
import { eventually } from '../support/eventually.ts'
import { send, type RawResponse } from '../support/http.ts'
import { bucketYaml } from '../support/proxy.ts'
import { startRedis } from '../support/redis.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'cluster-admin-token-0123456789abcdef'
/** Both workers building a new runtime (SIGHUP, POST /admin/reload). */
const RELOAD_MS = 30_000

let s3: TestS3

const authorized = { authorization: `Bearer ${ADMIN}` }

before(async () => {
  s3 = await startS3()
  await s3.createBucket('cluster')
  await s3.put('cluster', 'a.txt', 'from a worker')
  await s3.put('cluster', 'cached.txt', 'cached in every worker')
})

after(async () => {
  await s3?.stop()
})

describe('a cluster of two workers', () => {
  let c: RunningCluster
  const config = (port: number, metricsPort: number, extraBuckets = '') => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
metrics: { enabled: true, port: ${metricsPort} }
admin: { token: "${ADMIN}" }
cache: { enabled: true, layers: [memory] }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'cluster', endpoint: s3.endpoint })}
${extraBuckets}`
  const url = () => `http://127.0.0.1:${c.port}`
  const health = async () => (await send(url(), '/health')).json<{ worker: number; config_generation: number }>()

  /** Worker ids seen answering /health over fresh connections, with their config generation. */
  async function workersSeen(tries = 20): Promise<Map<number, number>> {
    const seen = new Map<number, number>()
    for (let i = 0; i < tries; i++) {
      const h = await health()
      seen.set(h.worker, h.config_generation)
    }
    return seen
  }

  before(async () => {
    c = await startCluster((port, metricsPort) => config(port, metricsPort))
  })

  after(async () => {
    await c?.stop()
  })

  it('serves from both workers and reports metrics summed over them', async () => {
    assert.deepEqual([...(await workersSeen()).keys()].sort(), [1, 2])
    for (let i = 0; i < 10; i++) assert.equal((await send(url(), '/files/a.txt')).text, 'from a worker')
    const metrics = (await send(`http://127.0.0.1:${c.metricsPort}`, '/metrics')).text
    const total = /^http_requests_total\{bucket="files",method="GET",status="200"\} (\d+)$/m.exec(metrics)
    assert.equal(total?.[1], '10', 'the ten object requests, whichever worker answered them')
    assert.match(metrics, /^config_generation 1$/m)
  })

  it('purges every worker: after a purge on one, the next request on each worker is a miss', async () => {
    /** X-Cache of each answer by worker, in order. */
    const byWorker = async (count: number) => {
      const responses: RawResponse[] = []
      for (let i = 0; i < count; i++) responses.push(await send(url(), '/files/cached.txt'))
      for (const res of responses) assert.equal(res.text, 'cached in every worker')
      const workers = await c.workersOf(responses)
      const seen = new Map<number, string[]>()
      responses.forEach((res, i) => seen.set(workers[i]!, [...(seen.get(workers[i]!) ?? []), String(res.headers['x-cache'])]))
      return seen
    }
    const warm = await byWorker(6)
    assert.deepEqual([...warm.keys()].sort(), [1, 2], 'both workers answered')
    for (const [worker, answers] of warm) assert.equal(answers.at(-1), 'HIT', `worker ${worker} serves from its cache: ${answers}`)

    const purge = await send(url(), '/admin/cache/purge/files/cached.txt', { method: 'POST', headers: authorized })
    assert.equal(purge.status, 200)
    assert.deepEqual(purge.json(), { purged: 1, broadcast: 'workers', target: { exact: 'files/cached.txt' } })
    const [purgedBy] = await c.workersOf([purge])

    const after = await byWorker(6)
    assert.deepEqual([...after.keys()].sort(), [1, 2], 'both workers answered')
    for (const [worker, answers] of after) {
      assert.equal(answers[0], 'MISS', `worker ${worker}'s first answer after the purge: ${answers}`)
      assert.equal(answers.at(-1), 'HIT', `worker ${worker} caches it again: ${answers}`)
    }
    const received = await c.logged((l) => l.msg === 'cache purge received from another worker')
    assert.notEqual(received.worker, purgedBy, 'the other worker heard of it through the primary')
    assert.deepEqual(received.purge, { exact: 'files/cached.txt' })
  })

  it('reloads every worker on SIGHUP', async () => {
    await s3.createBucket('cluster-new')
    await s3.put('cluster-new', 'b.txt', 'new bucket')
    const added = bucketYaml({ name: 'added', prefix: '/added', bucket: 'cluster-new', endpoint: s3.endpoint })
    await writeFile(c.configFile, config(c.port, c.metricsPort, added))
    c.child.kill('SIGHUP')
    await eventually(
      async () => {
        const seen = await workersSeen(6)
        return seen.size === 2 && [...seen.values()].every((generation) => generation === 2)
      },
      'both workers on generation 2',
      { withinMs: RELOAD_MS }
    )
    for (let i = 0; i < 4; i++) assert.equal((await send(url(), '/added/b.txt')).text, 'new bucket')
  })

  it('reloads every worker when one of them is asked through POST /admin/reload', async () => {
    const res = await send(url(), '/admin/reload', { method: 'POST', headers: authorized })
    assert.equal(res.status, 200)
    assert.equal(res.json<{ generation: number }>().generation, 3)
    await eventually(
      async () => {
        const seen = await workersSeen(6)
        return seen.size === 2 && [...seen.values()].every((generation) => generation === 3)
      },
      'both workers on generation 3',
      { withinMs: RELOAD_MS }
    )
  })

  it('replaces a killed worker while the other keeps serving', async () => {
    const victim = c.lines.find((l) => l.msg === 'worker started' && l.worker === 1)
    assert.ok(victim !== undefined)
    process.kill(Number(victim.pid), 'SIGKILL')
    await c.logged((l) => l.msg === 'worker died; starting a new one' && l.worker === 1)
    for (let i = 0; i < 10; i++) assert.equal((await send(url(), '/files/a.txt')).status, 200)
    await c.logged((l) => l.msg === 'worker started' && l.worker === 3, START_MS)
    // The new worker reads the file as it is now: generation 1 of its own, with the added bucket.
    await eventually(async () => (await workersSeen(6)).has(3), 'the new worker answering', { withinMs: START_MS })
    for (let i = 0; i < 4; i++) assert.equal((await send(url(), '/added/b.txt')).status, 200)
  })

  it('drains and exits 0 on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => c.child.once('exit', resolve))
    c.child.kill('SIGTERM')
    assert.equal(await exited, 0)
    assert.ok(c.lines.some((l) => l.msg === 'shutdown complete'))
  })
})

describe('rate limits shared by the workers through the primary (no Redis)', () => {
  let c: RunningCluster
  /** per_ip burst 4 at 0.1/s: windows of 40 s admitting 4 requests, so none rolls over mid-test. */
  const LIMIT = 4

  before(async () => {
    c = await startCluster(
      (port) => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
  trusted_proxies: [127.0.0.1]
  rate_limit:
    per_ip: { requests_per_second: 0.1, burst: ${LIMIT} }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'cluster', endpoint: s3.endpoint })}`
    )
  })

  after(async () => {
    await c?.stop()
  })

  const from = (ip: string) => ({ headers: { 'x-forwarded-for': ip } })

  it('admits exactly the limit across both workers, then answers 429', async () => {
    const responses: RawResponse[] = []
    for (let i = 0; i < LIMIT + 4; i++) responses.push(await send(`http://127.0.0.1:${c.port}`, '/files/a.txt', from('203.0.113.7')))
    const workers = await c.workersOf(responses)
    assert.deepEqual([...new Set(workers)].sort(), [1, 2], `both workers answered: ${workers}`)
    assert.deepEqual(
      responses.map((r) => r.status),
      [...Array<number>(LIMIT).fill(200), ...Array<number>(4).fill(429)],
      `answered by workers ${workers}`
    )
    const refused = responses.at(-1)!
    assert.equal(refused.headers['ratelimit-limit'], String(LIMIT))
    assert.equal(refused.headers['ratelimit-policy'], `${LIMIT};w=40`)
    const retryAfter = Number(refused.headers['retry-after'])
    assert.ok(retryAfter >= 1 && retryAfter <= 40, `Retry-After ${retryAfter}`)
    // Another client has its own budget; the proxy's own endpoints are never limited.
    assert.equal((await send(`http://127.0.0.1:${c.port}`, '/files/a.txt', from('203.0.113.8'))).status, 200)
    assert.equal((await send(`http://127.0.0.1:${c.port}`, '/health', from('203.0.113.7'))).status, 200)
  })

  it('counts in the worker while the primary does not answer: the limit holds per worker, no errors', async () => {
    // One kept-alive connection: it reaches its worker without the primary, which is stopped below.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const get = (path: string) =>
      new Promise<{ status: number; ms: number }>((resolve, reject) => {
        const started = performance.now()
        const req = http.get({ host: '127.0.0.1', port: c.port, path, agent, headers: { 'x-forwarded-for': '198.51.100.9' } }, (res) => {
          res.resume()
          res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }))
        })
        req.on('error', reject)
      })
    try {
      assert.equal((await get('/health')).status, 200)
      c.child.kill('SIGSTOP')
      const first = await get('/files/a.txt')
      assert.equal(first.status, 200)
      assert.ok(first.ms >= PRIMARY_TIMEOUT_MS, `the first request waited for the primary (${first.ms} ms)`)
      const rest = []
      for (let i = 0; i < LIMIT; i++) rest.push((await get('/files/a.txt')).status)
      assert.deepEqual(rest, [...Array<number>(LIMIT - 1).fill(200), 429])
    } finally {
      c.child.kill('SIGCONT')
      agent.destroy()
    }
  })
})

describe('a cluster of two workers sharing a Redis cache tier', () => {
  it('relays a purge through the primary when Redis is down, and says other instances were not reached', async () => {
    const redis = await startRedis()
    await s3.put('cluster', 'changing.txt', 'OLD')
    const c = await startCluster(
      (port) => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
admin: { token: "${ADMIN}" }
cache:
  enabled: true
  layers: [memory, redis]
  redis: { url: "${redis.url}", key_prefix: "purge-down:", timeout_ms: 100 }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'cluster', endpoint: s3.endpoint })}`
    )
    const url = `http://127.0.0.1:${c.port}`
    /** Body and X-Cache of each answer by worker, in order. */
    const byWorker = async (count: number) => {
      const responses: RawResponse[] = []
      for (let i = 0; i < count; i++) responses.push(await send(url, '/files/changing.txt'))
      const workers = await c.workersOf(responses)
      const seen = new Map<number, string[]>()
      responses.forEach((res, i) => seen.set(workers[i]!, [...(seen.get(workers[i]!) ?? []), `${res.text} ${res.headers['x-cache']}`]))
      return seen
    }
    const purge = () => send(url, '/admin/cache/purge/files/changing.txt', { method: 'POST', headers: authorized })
    try {
      // Redis up: the purge goes through its pub/sub.
      assert.equal((await purge()).json<{ broadcast: string }>().broadcast, 'redis')
      const warm = await byWorker(6)
      assert.deepEqual([...warm.keys()].sort(), [1, 2], 'both workers answered')
      for (const [worker, answers] of warm) assert.equal(answers.at(-1), 'OLD HIT', `worker ${worker}: ${answers}`)

      await redis.kill()
      await s3.put('cluster', 'changing.txt', 'NEW')
      const answer = await purge()
      assert.equal(answer.status, 200)
      assert.deepEqual(answer.json(), { purged: 1, broadcast: 'workers', target: { exact: 'files/changing.txt' } })
      const after = await byWorker(6)
      assert.deepEqual([...after.keys()].sort(), [1, 2], 'both workers answered')
      for (const [worker, answers] of after) assert.equal(answers[0], 'NEW MISS', `worker ${worker} after the purge: ${answers}`)
      const warned = await c.logged((l) => l.msg === 'cache purge: Redis did not take the broadcast, other instances were not reached')
      assert.deepEqual(warned.purge, { exact: 'files/changing.txt' })
      assert.ok((await c.logged((l) => l.msg === 'cache purge received from another worker')).worker !== warned.worker)
    } finally {
      await c.stop()
      await redis.stop()
    }
  })
})
