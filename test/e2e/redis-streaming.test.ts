// Large Redis hits through the running proxy (s3rver behind SigV4 checks, a real redis-server, the
// Redis tier alone): the body is read from Redis by range as it is sent, each block checked, so a
// Range reads only its blocks; a damaged block cuts the connection after the good ones and the
// entry goes; a value replaced while it streams is read on from S3 under If-Match (cut when S3 has
// another version too), never mixing two versions.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { decodeEntry, encodeEntry, REDIS_BLOCK_SIZE } from '../../src/cache/codec.ts'
import { eventually } from '../support/eventually.ts'
import { receive } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const MiB = 1024 * 1024
const TEN = randomBytes(10 * MiB)
const LONG = randomBytes(32 * MiB)
const OTHER = randomBytes(LONG.length)

let s3: TestS3
let redis: TestRedis
let client: Redis
let proxy: TestProxy
/** The same Redis with the default 50 ms lookup timeout. */
let quick: TestProxy

const redisKey = (key: string) => `yatagarasu:big/${key}`
const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex')
const originGets = (key: string) => s3.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === `/big/${key}`).length

/** Bytes Redis has sent to its clients so far (INFO stats). */
async function redisBytesOut(): Promise<number> {
  const info = await client.info('stats')
  return Number(/total_net_output_bytes:(\d+)/.exec(info)?.[1])
}

/** A GET through `through` (the proxy by default) that reports a cut connection; see receive. */
const fetchBody = (path: string, headers: Record<string, string> = {}, onFirst?: () => Promise<void>, through = proxy) => receive(through.url, path, { headers, onFirst })

/** Another instance stores a newer version of the object (same size, OTHER's bytes) in Redis. */
async function storeAnotherVersion(key: string): Promise<void> {
  const stored = decodeEntry(`big/${key}`, (await client.getBuffer(redisKey(key))) as Buffer)
  assert.ok(stored !== undefined)
  await client.set(redisKey(key), encodeEntry(`big/${key}`, { ...stored, meta: { ...stored.meta, etag: '"second-version"' }, body: OTHER }), 'PX', 300_000)
}

/** A proxy with the Redis tier alone; `timeout` sets cache.redis.timeout_ms (default 50 ms). */
const proxyYaml = (timeout: string) => `
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [redis]
  ttl_seconds: 300
  max_item_size: 64MB
  redis: { ${timeout}url: "${redis.url}" }
buckets:
${bucketYaml({ name: 'big', prefix: '/big', bucket: 'big', endpoint: s3.endpoint })}
`

/** GETs the object through the proxy (a miss) and waits until Redis holds it. */
async function cached(key: string, bytes: Buffer): Promise<void> {
  const res = await fetchBody(`/big/${key}`)
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-cache'], 'MISS')
  await eventually(async () => (await client.strlen(redisKey(key))) > bytes.length, `the Redis entry of ${key}`)
}

before(async () => {
  s3 = await startS3()
  redis = await startRedis()
  client = new Redis(redis.url)
  await s3.createBucket('big')
  for (const key of ['range.bin', 'damaged.bin', 'stall.bin']) await s3.put('big', key, TEN)
  for (let i = 0; i < 3; i++) await s3.put('big', `small-${i}.txt`, 'small')
  for (const key of ['replaced.bin', 'changed.bin']) await s3.put('big', key, LONG)
  proxy = await startTestProxy(proxyYaml('timeout_ms: 2000, '))
  quick = await startTestProxy(proxyYaml(''))
})

after(async () => {
  await quick?.stop()
  await proxy?.stop()
  client?.disconnect()
  await redis?.stop()
  await s3?.stop()
})

describe('large Redis hits', () => {
  it('stream the whole object, and a Range reads only the blocks it sends', async () => {
    await cached('range.bin', TEN)
    const whole = await fetchBody('/big/range.bin')
    assert.equal(whole.headers['cache-status'], 'yatagarasu; hit; detail=redis')
    assert.ok(whole.complete)
    assert.equal(sha(whole.body), sha(TEN))

    const before = await redisBytesOut()
    const start = 5 * MiB + 77
    const part = await fetchBody('/big/range.bin', { range: `bytes=${start}-${start + 999}` })
    const sent = (await redisBytesOut()) - before
    assert.equal(part.status, 206)
    assert.equal(part.headers['x-cache'], 'HIT')
    assert.deepEqual(part.body, TEN.subarray(start, start + 1000))
    // The lookup's read (the header) and the one block the range is in, not 10 MiB.
    assert.ok(sent < 256 * 1024 + 2 * REDIS_BLOCK_SIZE, `Redis sent ${sent} bytes for a 1000-byte range`)
    assert.equal(originGets('range.bin'), 1)
  })

  it('cut the connection after the good blocks when one is damaged, drop the entry, and the next request is a miss', async () => {
    await cached('damaged.bin', TEN)
    const key = redisKey('damaged.bin')
    const bodyAt = (await client.getrangeBuffer(key, 12, 15)).readUInt32BE(0)
    // One byte of block 3 flipped where it is stored.
    const at = bodyAt + 3 * REDIS_BLOCK_SIZE + 1234
    const byte = (await client.getrangeBuffer(key, at, at))[0] as number
    await client.setrange(key, at, Buffer.from([byte ^ 0xff]))

    const cut = await fetchBody('/big/damaged.bin')
    assert.equal(cut.status, 200)
    assert.equal(cut.headers['x-cache'], 'HIT')
    assert.equal(cut.complete, false, 'the connection is cut, not ended cleanly')
    assert.equal(cut.body.length, 3 * REDIS_BLOCK_SIZE, 'the blocks before the damaged one, and nothing of it')
    assert.ok(cut.body.equals(TEN.subarray(0, cut.body.length)))
    await eventually(async () => (await client.exists(key)) === 0, 'the damaged entry deleted')

    const next = await fetchBody('/big/damaged.bin')
    assert.equal(next.headers['x-cache'], 'MISS')
    assert.ok(next.complete)
    assert.equal(sha(next.body), sha(TEN))
  })

  it('read the rest of an answer from S3 under If-Match when its value is replaced while it streams: never two versions', async () => {
    await cached('replaced.bin', LONG)
    const gets = originGets('replaced.bin')
    const answer = await fetchBody('/big/replaced.bin', {}, () => storeAnotherVersion('replaced.bin'))
    assert.equal(answer.status, 200)
    assert.equal(answer.headers['x-cache'], 'HIT')
    assert.ok(answer.complete, `cut after ${answer.body.length} of ${LONG.length} bytes`)
    assert.equal(sha(answer.body), sha(LONG), 'every byte is of the version the answer began with')
    const rest = s3.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === '/big/replaced.bin').slice(gets)
    assert.equal(rest.length, 1)
    assert.match(String(rest[0]?.headers.range), /^bytes=[1-9]\d*-33554431$/)
    assert.equal(rest[0]?.headers['if-match'], answer.headers.etag)

    // The next answer is the version stored now, whole.
    const next = await fetchBody('/big/replaced.bin')
    assert.equal(next.headers.etag, '"second-version"')
    assert.ok(next.complete)
    assert.equal(sha(next.body), sha(OTHER))
  })

  it('cut the answer when S3 too has another version by then (412): never two versions', async () => {
    await cached('changed.bin', LONG)
    const answer = await fetchBody('/big/changed.bin', {}, async () => {
      await s3.put('big', 'changed.bin', OTHER)
      await storeAnotherVersion('changed.bin')
    })
    assert.equal(answer.headers['x-cache'], 'HIT')
    assert.equal(answer.complete, false, 'cut: S3 has no more of the first version')
    assert.ok(answer.body.length < LONG.length)
    assert.ok(answer.body.equals(LONG.subarray(0, answer.body.length)), 'every byte sent is of the first version')
    assert.ok(s3.requests.some((r) => r.url.split('?')[0] === '/big/changed.bin' && r.status === 412))
  })

  it('read on from Redis through a Redis stall that opens the lookups\' breaker', async () => {
    await cached('stall.bin', TEN)
    const gets = originGets('stall.bin')
    const answer = await fetchBody(
      '/big/stall.bin',
      {},
      async () => {
        redis.pause()
        // Other requests meanwhile: their lookups time out (50 ms), the breaker opens, S3 answers them.
        for (let i = 0; i < 3; i++) assert.equal((await fetchBody(`/big/small-${i}.txt`, {}, undefined, quick)).status, 200)
        redis.resume()
        await client.ping()
      },
      quick
    )
    assert.equal(answer.headers['x-cache'], 'HIT')
    assert.ok(answer.complete, `cut after ${answer.body.length} of ${TEN.length} bytes though Redis answered again within the body deadline`)
    assert.equal(sha(answer.body), sha(TEN))
    assert.equal(originGets('stall.bin'), gets, 'every byte from Redis: none of the rest from S3')
  })
})
