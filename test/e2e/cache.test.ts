// The tiered cache through the running proxy, against s3rver (counted at the SigV4 layer) and a
// real redis-server: hit/miss parity, Range and 304 from cache, revalidation, warm restarts,
// corruption, Redis and S3 outages, coalescing, size limits, no-store, purge across instances.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import type { IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'admin-token-that-is-long-enough-0123456789'
const SECRET = 'cache-test-secret-that-is-long-enough-for-hs256'
const BYTES = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256))

let s3: TestS3
let redis: TestRedis
let dir: string
const proxies: TestProxy[] = []

const gets = (key: string) => s3.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/cached/${key}?`))
const config = (opts: { cacheDir?: string; layers?: string; extraBuckets?: string; ttl?: number } = {}) => `
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
cache:
  enabled: true
  layers: ${opts.layers ?? '[memory, disk, redis]'}
  ttl_seconds: ${opts.ttl ?? 300}
  max_item_size: 8KB
  memory: { max_size: 1MB }
  disk: { dir: "${opts.cacheDir ?? join(dir, 'disk')}", max_size: 10MB }
  redis: { url: "${redis.url}", key_prefix: "cache-e2e:", timeout_ms: 100 }
buckets:
${bucketYaml({ name: 'cached', prefix: '/c', bucket: 'cached', endpoint: s3.endpoint })}
${bucketYaml({ name: 'private', prefix: '/p', bucket: 'cached', endpoint: s3.endpoint, extra: `    auth: { enabled: true, jwt: { secret: "${SECRET}" } }` })}
${opts.extraBuckets ?? ''}`

/** Cache fills are written in the background: wait until the disk tier has its file. */
async function entryFile(cacheDir: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const found = (await readdir(cacheDir).catch(() => [])).find((name) => name.endsWith('.entry'))
    if (found !== undefined) return join(cacheDir, found)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error('the disk tier never wrote the entry')
}

async function start(yaml: string): Promise<TestProxy> {
  const proxy = await startTestProxy(yaml)
  proxies.push(proxy)
  return proxy
}

before(async () => {
  s3 = await startS3()
  redis = await startRedis()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-cache-e2e-'))
  await s3.createBucket('cached')
  const common = { ContentType: 'application/x-test', CacheControl: 'public, max-age=600', ContentDisposition: 'inline', Metadata: { owner: 'ops' } }
  for (const key of ['parity.bin', 'range.bin', 'cond.bin', 'restart.bin', 'corrupt.bin', 'coalesce.bin', 'purge.bin', 'stale.bin', 'private.bin', 'redis-down.bin']) {
    await s3.put('cached', key, BYTES, common)
  }
  await s3.put('cached', 'big.bin', Buffer.alloc(20_000, 7))
  await s3.put('cached', 'no-store.bin', 'secret-ish', { CacheControl: 'no-store' })
  await s3.put('cached', 'short.bin', BYTES, { CacheControl: 'max-age=1' })
})

after(async () => {
  for (const proxy of proxies) await proxy.stop()
  await redis?.stop()
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('hits and misses', () => {
  let proxy: TestProxy
  before(async () => {
    proxy = await start(config())
  })

  it('answers a hit with the same status, headers and bytes as the miss', async () => {
    const miss = await send(proxy.url, '/c/parity.bin')
    const hit = await send(proxy.url, '/c/parity.bin')
    assert.equal(miss.headers['x-cache'], 'MISS')
    assert.equal(miss.headers['cache-status'], 'yatagarasu; fwd=miss; stored')
    assert.equal(hit.headers['x-cache'], 'HIT')
    assert.equal(hit.headers['cache-status'], 'yatagarasu; hit; detail=memory')
    assert.match(String(hit.headers.age), /^\d+$/)
    assert.equal(hit.status, miss.status)
    assert.deepEqual(hit.body, BYTES)
    assert.deepEqual(miss.body, BYTES)
    for (const name of ['content-type', 'content-length', 'etag', 'last-modified', 'cache-control', 'content-disposition', 'x-amz-meta-owner', 'accept-ranges']) {
      assert.equal(hit.headers[name], miss.headers[name], name)
    }
    assert.equal(gets('parity.bin').length, 1)
  })

  it('answers Range and conditional requests from the cache', async () => {
    const full = await send(proxy.url, '/c/range.bin')
    const before = s3.requests.length
    const part = await send(proxy.url, '/c/range.bin', { headers: { range: 'bytes=-10' } })
    assert.equal(part.status, 206)
    assert.equal(part.headers['content-range'], `bytes 2990-2999/${BYTES.length}`)
    assert.deepEqual(part.body, BYTES.subarray(2990))
    const notModified = await send(proxy.url, '/c/range.bin', { headers: { 'if-none-match': String(full.headers.etag) } })
    assert.equal(notModified.status, 304)
    assert.equal(notModified.headers['x-cache'], 'HIT')
    const unsatisfiable = await send(proxy.url, '/c/range.bin', { headers: { range: 'bytes=5000-' } })
    assert.equal(unsatisfiable.status, 416)
    assert.equal(unsatisfiable.headers['content-range'], `bytes */${BYTES.length}`)
    const head = await send(proxy.url, '/c/range.bin', { method: 'HEAD' })
    assert.equal(head.headers['x-cache'], 'HIT')
    assert.equal(head.headers['content-length'], String(BYTES.length))
    assert.equal(s3.requests.length, before, 'no request reached the backend')
  })

  it('never stores a HEAD or a partial response as the whole object', async () => {
    await send(proxy.url, '/c/cond.bin', { method: 'HEAD' })
    await send(proxy.url, '/c/cond.bin', { headers: { range: 'bytes=0-9' } })
    const full = await send(proxy.url, '/c/cond.bin')
    assert.equal(full.headers['x-cache'], 'MISS')
    assert.deepEqual(full.body, BYTES)
  })

  it('streams objects over max_item_size without caching them', async () => {
    for (let i = 0; i < 2; i++) {
      const res = await send(proxy.url, '/c/big.bin')
      assert.equal(res.body.length, 20_000)
      assert.equal(res.headers['x-cache'], 'MISS')
      assert.equal(res.headers['cache-status'], 'yatagarasu; fwd=miss')
    }
    assert.equal(gets('big.bin').length, 2)
  })

  it('never stores a no-store object', async () => {
    await send(proxy.url, '/c/no-store.bin')
    const again = await send(proxy.url, '/c/no-store.bin')
    assert.equal(again.headers['x-cache'], 'MISS')
    assert.equal(gets('no-store.bin').length, 2)
  })

  it('marks responses of auth buckets private, hit or miss', async () => {
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
    for (let i = 0; i < 2; i++) {
      const res = await send(proxy.url, '/p/private.bin', { headers: { authorization: `Bearer ${token}` } })
      assert.equal(res.status, 200)
      assert.equal(res.headers['cache-control'], 'private, max-age=600')
    }
    assert.equal((await send(proxy.url, '/p/private.bin')).status, 401, 'a cached private object still needs a token')
  })

  it('sends 100 concurrent misses for one key to the origin once', async () => {
    const results = await Promise.all(Array.from({ length: 100 }, () => send(proxy.url, '/c/coalesce.bin')))
    for (const res of results) assert.deepEqual(res.body, BYTES)
    assert.equal(gets('coalesce.bin').length, 1)
  })
})

describe('a slow leader', () => {
  /** A memory tier that keeps objects up to 64 MB, and the `patient` bucket: the same S3 bucket with s3.timeout 30 s. */
  const bigObjects = () => {
    const patient = bucketYaml({ name: 'patient', prefix: '/patient', bucket: 'cached', endpoint: s3.endpoint, timeout: 30 })
    return start(config({ layers: '[memory]', extraBuckets: patient }).replace('max_item_size: 8KB', 'max_item_size: 64MB').replace('memory: { max_size: 1MB }', 'memory: { max_size: 128MB }'))
  }
  /** A GET of `path` whose answer has begun (its headers came), on a connection of its own. */
  const answerOf = async (proxy: TestProxy, path: string, onAnswer: (res: IncomingMessage) => void = () => {}) => {
    const http = await import('node:http')
    const url = new URL(proxy.url)
    return new Promise<IncomingMessage>((resolve, reject) => {
      http
        .get({ host: url.hostname, port: url.port, path, agent: false }, (res) => {
          onAnswer(res)
          resolve(res)
        })
        .on('error', reject)
    })
  }

  it('does not hold other requests for the same key longer than s3.timeout (when under 4 s)', async () => {
    await s3.put('cached', 'slow-leader.bin', Buffer.alloc(40 * 1024 * 1024, 3))
    const proxy = await bigObjects()
    const leader = await answerOf(proxy, '/c/slow-leader.bin')
    leader.pause()
    const started = Date.now()
    const follower = await send(proxy.url, '/c/slow-leader.bin')
    assert.equal(follower.status, 200)
    assert.equal(follower.body.length, 40 * 1024 * 1024)
    // The leader is paused for good, so a follower that waited for its fill would never finish;
    // the bound only has to separate "fetched on its own" from "never" on a busy machine.
    assert.ok(Date.now() - started < 20_000, 'the follower fetched on its own after the wait')
    leader.destroy()
  })

  it('holds up nobody without a disk tier either: five requests behind a paused first client share its one GET', async () => {
    const size = 24 * 1024 * 1024
    await s3.put('cached', 'slow-herd.bin', Buffer.alloc(size, 5))
    const proxy = await bigObjects()
    const leader = await answerOf(proxy, '/patient/slow-herd.bin')
    leader.pause()
    // The leader is paused for good: the fill goes on at the origin's pace all the same, and the
    // others read what arrived (before, they waited 4 s for it to stand still, then fetched again).
    const followers = await Promise.all(Array.from({ length: 5 }, () => send(proxy.url, '/patient/slow-herd.bin')))
    for (const res of followers) {
      assert.equal(res.status, 200)
      assert.equal(res.body.length, size)
      assert.ok(res.body.every((byte) => byte === 5))
      assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=coalesced')
    }
    assert.equal(gets('slow-herd.bin').length, 1, 'the leader’s GET only')
    leader.destroy()
  })

  it('stops when its client leaves if no tier would keep the object (nothing read for nothing)', async () => {
    await s3.put('cached', 'unkept.bin', Buffer.alloc(8 * 1024 * 1024, 2))
    // Objects up to 64 MB are cached, but the memory tier holds 1 MB: this one is never kept.
    const patient = bucketYaml({ name: 'patient', prefix: '/patient', bucket: 'cached', endpoint: s3.endpoint, timeout: 30 })
    const proxy = await start(config({ layers: '[memory]', extraBuckets: patient }).replace('max_item_size: 8KB', 'max_item_size: 64MB'))
    // S3 sends 2 MiB and holds the rest (for longer than the test: s3.timeout is 30 s here).
    const held = s3.holdNextGet(2 * 1024 * 1024)
    try {
      const first = await answerOf(proxy, '/patient/unkept.bin')
      await held.held
      first.destroy()
      const [get] = gets('unkept.bin')
      // A fill that went on without its client would hold this GET open until the release.
      assert.equal(await get?.outcome, 'aborted', 'the GET stops with its client')
    } finally {
      held.release()
    }
  })

  it('lets the requests behind a fetch still waiting for S3’s headers fetch on their own after 4 s, and keeps the later copy', async () => {
    const size = 4 * 1024 * 1024
    await s3.put('cached', 'two-copies.bin', Buffer.alloc(size, 1))
    const proxy = await bigObjects()
    // The first fetch waits for S3's answer (held); the one that takes over from it after 4 s is
    // answered at once. If the object changed in between, only the latter could be the new version.
    const held = s3.holdNextHeaders()
    const first = send(proxy.url, '/patient/two-copies.bin')
    await held.held
    const joined = Date.now()
    const follower = await send(proxy.url, '/patient/two-copies.bin')
    assert.equal(follower.headers['x-cache'], 'MISS', 'fetched again after the fetch it waited for stood still')
    assert.ok(Date.now() - joined >= 3_500, `after the follower wait: ${Date.now() - joined} ms`)
    // The stalled fetch is answered now, and its fill completes last.
    held.release()
    assert.equal((await first).body.length, size)
    const again = await send(proxy.url, '/patient/two-copies.bin')
    assert.equal(again.headers['x-cache'], 'HIT')
    const age = Number(again.headers.age)
    const sinceJoined = (Date.now() - joined) / 1000
    assert.ok(age <= sinceJoined - 3, `the copy kept is the later one: Age ${age} s, ${sinceJoined.toFixed(1)} s since the stalled fetch started`)
    assert.equal(gets('two-copies.bin').length, 2)
  })
})

describe('freshness and outages', () => {
  let proxy: TestProxy
  before(async () => {
    proxy = await start(config({ layers: '[memory]' }))
  })

  it('revalidates an expired entry with a conditional GET, without refetching the body', async () => {
    await send(proxy.url, '/c/short.bin')
    await new Promise((resolve) => setTimeout(resolve, 1100)) // max-age=1
    const res = await send(proxy.url, '/c/short.bin')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, BYTES)
    assert.equal(res.headers['cache-status'], 'yatagarasu; fwd=stale; fwd-status=304')
    const revalidation = gets('short.bin').at(-1)
    assert.ok(revalidation !== undefined)
    assert.ok(revalidation.headers['if-none-match'] !== undefined, 'a conditional GET')
    assert.equal(await revalidation.outcome, 'finished')
    assert.equal(revalidation.bytes, 0, 'no body was sent')
  })

  it('serves a stale entry marked STALE while the origin is down', async () => {
    await send(proxy.url, '/c/short.bin')
    await new Promise((resolve) => setTimeout(resolve, 1100))
    await s3.pause()
    try {
      const res = await send(proxy.url, '/c/short.bin')
      assert.equal(res.status, 200)
      assert.deepEqual(res.body, BYTES)
      assert.equal(res.headers['x-cache'], 'STALE')
      assert.match(String(res.headers['cache-status']), /fwd=stale; fwd-status=502; detail=stale-if-error/)
    } finally {
      await s3.resume()
    }
  })
})

describe('disk tier', () => {
  it('serves from a warm disk cache after a restart', async () => {
    const cacheDir = join(dir, 'warm')
    const first = await start(config({ cacheDir, layers: '[memory, disk]' }))
    await send(first.url, '/c/restart.bin')
    await entryFile(cacheDir)
    await first.stop()
    const second = await start(config({ cacheDir, layers: '[memory, disk]' }))
    const before = gets('restart.bin').length
    const res = await send(second.url, '/c/restart.bin')
    assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=disk')
    assert.deepEqual(res.body, BYTES)
    assert.equal(gets('restart.bin').length, before)
  })

  it('never serves a corrupted disk entry', async () => {
    const cacheDir = join(dir, 'corrupt')
    const first = await start(config({ cacheDir, layers: '[memory, disk]' }))
    await send(first.url, '/c/corrupt.bin')
    const file = await entryFile(cacheDir)
    await first.stop()
    const bytes = await readFile(file)
    bytes.writeUInt8((bytes.at(-1) ?? 0) ^ 0xff, bytes.length - 1)
    await writeFile(file, bytes)
    const second = await start(config({ cacheDir, layers: '[memory, disk]' }))
    const res = await send(second.url, '/c/corrupt.bin')
    assert.equal(res.headers['x-cache'], 'MISS')
    assert.deepEqual(res.body, BYTES)
  })
})

describe('Redis tier and purges', () => {
  it('keeps serving with bounded latency while Redis is down, and uses it again when it is back', async () => {
    const own = await startRedis()
    const proxy = await start(config({ layers: '[redis]' }).replace(redis.url, own.url))
    try {
      await send(proxy.url, '/c/redis-down.bin')
      assert.equal((await send(proxy.url, '/c/redis-down.bin')).headers['cache-status'], 'yatagarasu; hit; detail=redis')
      await own.kill()
      const started = performance.now()
      for (let i = 0; i < 10; i++) {
        const res = await send(proxy.url, '/c/redis-down.bin')
        assert.equal(res.status, 200)
        assert.deepEqual(res.body, BYTES)
      }
      assert.ok(performance.now() - started < 3000, 'a dead Redis adds no real latency')
      await own.restart()
      let detail: unknown
      for (let i = 0; i < 200 && detail !== 'yatagarasu; hit; detail=redis'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        detail = (await send(proxy.url, '/c/redis-down.bin')).headers['cache-status']
      }
      assert.equal(detail, 'yatagarasu; hit; detail=redis')
    } finally {
      await own.stop()
    }
  })

  it('purges across two instances sharing one Redis', async () => {
    const a = await start(config({ layers: '[memory, redis]' }))
    const b = await start(config({ layers: '[memory, redis]' }))
    await send(a.url, '/c/purge.bin')
    assert.equal((await send(b.url, '/c/purge.bin')).headers['cache-status'], 'yatagarasu; hit; detail=redis')
    assert.equal((await send(b.url, '/c/purge.bin')).headers['cache-status'], 'yatagarasu; hit; detail=memory')
    const purged = await send(a.url, '/admin/cache/purge/cached/purge.bin', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })
    assert.equal(purged.status, 200)
    await b.logged((l) => l.msg === 'cache purge received from another instance')
    const before = gets('purge.bin').length
    assert.equal((await send(b.url, '/c/purge.bin')).headers['x-cache'], 'MISS')
    assert.equal(gets('purge.bin').length, before + 1)
  })

  it('guards the admin API with the admin token and reports stats', async () => {
    const proxy = await start(config({ layers: '[memory]' }))
    assert.equal((await send(proxy.url, '/admin/cache/stats')).status, 401)
    assert.equal((await send(proxy.url, '/admin/cache/stats', { headers: { authorization: 'Bearer wrong-token' } })).status, 401)
    await send(proxy.url, '/c/parity.bin')
    await send(proxy.url, '/c/parity.bin')
    const stats = await send(proxy.url, '/admin/cache/stats', { headers: { authorization: `Bearer ${ADMIN}` } })
    assert.equal(stats.status, 200)
    const body = stats.json<{ tiers: Record<string, { entries: number; hits: number }>; buckets: Record<string, { hits: number; misses: number; hit_ratio: number }> }>()
    assert.ok((body.tiers.memory?.entries ?? 0) >= 1)
    assert.equal(body.buckets.cached?.hits, 1)
    assert.equal(body.buckets.cached?.misses, 1)
    assert.equal(body.buckets.cached?.hit_ratio, 0.5)
    const purgeAll = await send(proxy.url, '/admin/cache/purge', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })
    assert.equal(purgeAll.status, 200)
    assert.equal((await send(proxy.url, '/c/parity.bin')).headers['x-cache'], 'MISS')
  })
})
