// A miss without caching goes from the S3 socket straight into the client's response: empty, small
// (all of it arrived with the headers) and multi-chunk bodies, and ranges, come out byte-exact,
// and the access log counts the bytes sent. Downloads at once, to clients reading at their own
// pace, each get their own bytes (the S3 socket's read buffers are reused once a write is done).
// A miss filling a memory cache is read at the origin's pace into one buffer, and its answers read
// what arrived: misses and hits byte-exact, at once too, and a fill whose client leaves goes on.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SMALL = randomBytes(1024)
const LARGE = randomBytes(3 * 1024 * 1024 + 17)
// Larger than loopback's socket buffers, so that writes to the slow clients wait in the proxy.
const LEFT = randomBytes(12 * 1024 * 1024)
const MIXED = Array.from({ length: 4 }, (_, i) => randomBytes(12 * 1024 * 1024 + 4096 * i + i))
let s3: TestS3
let proxy: TestProxy
let cached: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('pipe')
  await s3.put('pipe', 'empty.bin', Buffer.alloc(0))
  await s3.put('pipe', 'small.bin', SMALL)
  await s3.put('pipe', 'large.bin', LARGE)
  for (const [i, body] of MIXED.entries()) await s3.put('pipe', `mixed-${i}.bin`, body)
  await s3.put('pipe', 'left.bin', LEFT)
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'pipe', prefix: '/pipe', bucket: 'pipe', endpoint: s3.endpoint })}
`)
  cached = await startTestProxy(`
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory]
  max_item_size: 16MB
  memory: { max_size: 128MB }
buckets:
${bucketYaml({ name: 'pipe', prefix: '/pipe', bucket: 'pipe', endpoint: s3.endpoint })}
`)
})

after(async () => {
  await cached?.stop()
  await proxy?.stop()
  await s3?.stop()
})

async function get(
  path: string,
  id: string,
  headers: Record<string, string> = {},
  through = proxy
): Promise<{ status: number; length: string | null; cache: string | null; body: Buffer }> {
  const res = await fetch(`${through.url}${path}`, { headers: { 'x-request-id': id, ...headers } })
  return { status: res.status, length: res.headers.get('content-length'), cache: res.headers.get('x-cache'), body: Buffer.from(await res.arrayBuffer()) }
}

/** Downloads `path`; the client stops for `pause` milliseconds after each chunk. */
function download(url: string, pause: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    http.get(url, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        if (pause === 0) return
        res.pause()
        setTimeout(() => res.resume(), pause)
      })
      res.on('end', () => resolve(Buffer.concat(chunks)))
      res.on('error', reject)
    }).on('error', reject)
  })
}

describe('a miss piped from the origin', () => {
  it('serves an empty object as an empty 200', async () => {
    const res = await get('/pipe/empty.bin', 'pipe-empty')
    assert.equal(res.status, 200)
    assert.equal(res.length, '0')
    assert.equal(res.body.length, 0)
    assert.equal((await proxy.logged((l) => l.request_id === 'pipe-empty'))?.bytes, 0)
  })

  it('serves a small object byte-exact and logs its length', async () => {
    const res = await get('/pipe/small.bin', 'pipe-small')
    assert.equal(res.status, 200)
    assert.equal(res.length, String(SMALL.length))
    assert.ok(res.body.equals(SMALL))
    const line = await proxy.logged((l) => l.request_id === 'pipe-small')
    assert.equal(line?.bytes, SMALL.length)
    assert.equal(line?.complete, true)
  })

  it('serves an object of many socket reads byte-exact and logs its length', async () => {
    const res = await get('/pipe/large.bin', 'pipe-large')
    assert.equal(res.status, 200)
    assert.ok(res.body.equals(LARGE))
    assert.equal((await proxy.logged((l) => l.request_id === 'pipe-large'))?.bytes, LARGE.length)
  })

  it('serves a range of a large object byte-exact', async () => {
    const res = await get('/pipe/large.bin', 'pipe-range', { range: 'bytes=1000000-2500000' })
    assert.equal(res.status, 206)
    assert.ok(res.body.equals(LARGE.subarray(1000000, 2500001)))
    assert.equal((await proxy.logged((l) => l.request_id === 'pipe-range'))?.bytes, 1500001)
  })

  it('serves downloads at once, to clients reading at different paces, each byte-exact', async () => {
    // Client i stops for i milliseconds after each chunk: the proxy's writes to the slow ones wait
    // while the fast ones' S3 reads go on.
    const bodies = await Promise.all(MIXED.map((_, i) => download(`${proxy.url}/pipe/mixed-${i}.bin`, i)))
    for (const [i, body] of bodies.entries()) {
      assert.equal(body.length, MIXED[i]?.length, `mixed-${i}.bin: length`)
      assert.ok(body.equals(MIXED[i] as Buffer), `mixed-${i}.bin: bytes`)
    }
  })

  it('sends every object through the signature-checking S3 layer once', () => {
    assert.equal(s3.getsOf('pipe', 'small.bin').length, 1)
    assert.equal(s3.getsOf('pipe', 'large.bin').length, 2)
  })
})

describe('a miss piped from the origin into a memory cache', () => {
  it('stores an object of many socket reads as it passes, and the hit has the same bytes', async () => {
    const miss = await get('/pipe/large.bin', 'fill-large', {}, cached)
    assert.equal(miss.cache, 'MISS')
    assert.ok(miss.body.equals(LARGE))
    assert.equal((await cached.logged((l) => l.request_id === 'fill-large'))?.bytes, LARGE.length)
    const hit = await get('/pipe/large.bin', 'fill-large-hit', {}, cached)
    assert.equal(hit.cache, 'HIT')
    assert.ok(hit.body.equals(LARGE))
  })

  it('fills at once for clients reading at different paces: each miss and each hit byte-exact', async () => {
    const misses = await Promise.all(MIXED.map((_, i) => download(`${cached.url}/pipe/mixed-${i}.bin`, i)))
    const hits = await Promise.all(MIXED.map((_, i) => get(`/pipe/mixed-${i}.bin`, `fill-mixed-hit-${i}`, {}, cached)))
    for (const [i, body] of MIXED.entries()) {
      assert.ok(misses[i]?.equals(body), `mixed-${i}.bin: miss bytes`)
      assert.equal(hits[i]?.cache, 'HIT', `mixed-${i}.bin: stored`)
      assert.ok(hits[i]?.body.equals(body), `mixed-${i}.bin: hit bytes`)
    }
  })

  it('goes on when the client leaves mid-body, and keeps the object', async () => {
    const before = s3.getsOf('pipe', 'left.bin').length
    await new Promise<void>((resolve, reject) => {
      http.get(`${cached.url}/pipe/left.bin`, { headers: { 'x-request-id': 'fill-left' } }, (res) => {
        res.once('data', () => {
          res.destroy()
          resolve()
        })
      }).on('error', reject)
    })
    // The proxy saw the client go (it logs the request as incomplete).
    assert.equal((await cached.logged((l) => l.request_id === 'fill-left'))?.complete, false)
    // The fill read on at the origin's pace: the origin's answer ends, and the next request is a
    // hit (of the fill, or of the memory tier once it is stored), byte-exact, without a GET.
    assert.equal(await s3.getsOf('pipe', 'left.bin').at(-1)?.outcome, 'finished')
    const again = await get('/pipe/left.bin', 'fill-left-again', {}, cached)
    assert.equal(again.cache, 'HIT')
    assert.ok(again.body.equals(LEFT))
    assert.equal(s3.getsOf('pipe', 'left.bin').length - before, 1)
  })
})
