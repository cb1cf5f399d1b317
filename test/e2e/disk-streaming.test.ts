// Large disk hits through the running proxy (s3rver behind SigV4 checks, the disk tier alone):
// streamed block by block at the client's pace, every block checked before it is sent. A damaged
// block cuts the connection after the good ones (or, when it is the first, the origin answers);
// a Range, a HEAD and a 304 read no block they do not send; memory stays flat with many clients.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { access, mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { BLOCK_SIZE } from '../../src/cache/disk-format.ts'
import { eventually } from '../support/eventually.ts'
import { flipBodyByte } from '../support/disk-entry.ts'
import { receive, type Received } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const MiB = 1024 * 1024
const TEN = randomBytes(10 * MiB)
const LONG = randomBytes(32 * MiB)

let s3: TestS3
let dir: string
const proxies: TestProxy[] = []

const ADMIN = 'admin-token-that-is-long-enough-0123456789'

const config = (cacheDir: string) => `
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
cache:
  enabled: true
  layers: [disk]
  ttl_seconds: 300
  max_item_size: 64MB
  disk: { dir: "${cacheDir}", max_size: 512MB }
buckets:
${bucketYaml({ name: 'big', prefix: '/big', bucket: 'big', endpoint: s3.endpoint })}
`

async function start(cacheDir: string): Promise<TestProxy> {
  const proxy = await startTestProxy(config(cacheDir))
  proxies.push(proxy)
  return proxy
}

const originGets = (key: string) => s3.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === `/big/${key}`).length
const fileOf = (cacheDir: string, key: string) => join(cacheDir, `${createHash('sha256').update(`big/${key}`).digest('hex')}.entry`)
const exists = (file: string) => access(file).then(
  () => true,
  () => false
)

/** GETs the object through the proxy (a miss) and waits until the disk tier holds it. */
async function cached(proxy: TestProxy, cacheDir: string, key: string): Promise<string> {
  const res = await fetchBody(proxy.url, `/big/${key}`)
  assert.equal(res.status, 200)
  const file = fileOf(cacheDir, key)
  await eventually(() => exists(file), `the disk entry of ${key}`)
  return file
}


/** Flips one byte of block `block` of the entry's body, in place. */
const damageBlock = (file: string, block: number) => flipBodyByte(file, block * BLOCK_SIZE + 1234)

type Fetched = Received

/** A GET that reports a cut connection instead of failing: what a client really received. */
const fetchBody = (base: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Fetched> => receive(base, path, { headers, method })

before(async () => {
  s3 = await startS3()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-e2e-'))
  await s3.createBucket('big')
  for (const key of ['restart.bin', 'mid.bin', 'first.bin', 'range.bin', 'head.bin', 'many.bin', 'unwritable.bin', 'purged.bin', 'flight.bin']) await s3.put('big', key, TEN)
  await s3.put('big', 'long.bin', LONG)
})

after(async () => {
  for (const proxy of proxies) await proxy.stop()
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('a disk that fails while a miss is written to it', () => {
  it('still serves every byte, keeps the proxy up, and stores nothing', async () => {
    const cacheDirectory = join(dir, 'vanishing')
    const proxy = await start(cacheDirectory)
    // Every write to the tier now fails (its directory is gone): the miss streams on regardless.
    await rm(cacheDirectory, { recursive: true, force: true })
    const sha = createHash('sha256').update(TEN).digest('hex')
    const whole = await fetchBody(proxy.url, '/big/unwritable.bin')
    assert.equal(whole.status, 200)
    assert.ok(whole.complete)
    assert.equal(createHash('sha256').update(whole.body).digest('hex'), sha)
    // A miss for part of the object reads it whole for the cache first: answered by the origin.
    const part = await fetchBody(proxy.url, '/big/unwritable.bin', { range: 'bytes=1000-1999' })
    assert.equal(part.status, 206)
    assert.deepEqual(part.body, TEN.subarray(1000, 2000))
    const again = await fetchBody(proxy.url, '/big/unwritable.bin')
    assert.equal(again.status, 200)
    assert.equal(again.headers['x-cache'], 'MISS', 'nothing was stored')
    assert.equal(createHash('sha256').update(again.body).digest('hex'), sha)
    assert.equal((await fetchBody(proxy.url, '/health')).status, 200)
  })
})

describe('a purge during a large miss', () => {
  it('is not undone when the miss finishes: the client gets its bytes, the cache keeps nothing', async () => {
    const cacheDirectory = join(dir, 'purged')
    const proxy = await start(cacheDirectory)
    // The origin sends about 1 MiB, then holds the rest until the purge is done.
    const { held, release } = s3.holdNextGet(MiB)
    const pending = fetchBody(proxy.url, '/big/purged.bin')
    await Promise.race([held, new Promise((_, reject) => AbortSignal.timeout(30_000).addEventListener("abort", () => reject(new Error("the origin never held the body"))))])
    const purged = await fetchBody(proxy.url, '/admin/cache/purge/big/purged.bin', { authorization: `Bearer ${ADMIN}` }, 'POST')
    assert.equal(purged.status, 200)
    release()
    const first = await pending
    assert.equal(first.status, 200)
    assert.ok(first.complete)
    assert.ok(first.body.equals(TEN))
    // Without the purge it would be installed now (the disk tier indexes it at its end).
    const gets = originGets('purged.bin')
    const second = await fetchBody(proxy.url, '/big/purged.bin')
    assert.equal(second.headers['x-cache'], 'MISS', 'the copy fetched before the purge was not kept')
    assert.ok(second.body.equals(TEN))
    assert.equal(originGets('purged.bin'), gets + 1)
    // Copies fetched after the purge are stored again (the first request to find no flight in
    // progress stores its own).
    await eventually(async () => (await fetchBody(proxy.url, '/big/purged.bin')).headers['x-cache'] === 'HIT', 'a copy fetched after the purge stored')
  })

  it('a request after the purge does not join a fill that began before it', async () => {
    const proxy = await start(join(dir, 'flight'))
    const { held, release } = s3.holdNextGet(MiB)
    const leader = fetchBody(proxy.url, '/big/flight.bin')
    await Promise.race([held, new Promise((_, reject) => AbortSignal.timeout(30_000).addEventListener('abort', () => reject(new Error('the origin never held the body'))))])
    const purged = await fetchBody(proxy.url, '/admin/cache/purge/big/flight.bin', { authorization: `Bearer ${ADMIN}` }, 'POST')
    assert.equal(purged.status, 200)
    // Had it joined the leader's flight, it would wait for the held body and get that copy.
    const after = await Promise.race([fetchBody(proxy.url, '/big/flight.bin'), new Promise<undefined>((resolve) => AbortSignal.timeout(10_000).addEventListener('abort', () => resolve(undefined)))])
    release()
    assert.ok(after !== undefined, 'the request after the purge waited for the fill from before it')
    assert.equal(after.headers['x-cache'], 'MISS')
    assert.ok(after.body.equals(TEN))
    const first = await leader
    assert.equal(first.status, 200)
    assert.ok(first.complete && first.body.equals(TEN))
  })
})

describe('large disk hits', () => {
  let proxy: TestProxy
  const cacheDir = () => join(dir, 'shared')
  before(async () => {
    proxy = await start(cacheDir())
  })

  it('streams a large entry from disk, also after a restart (the index survives)', async () => {
    const cacheDirectory = join(dir, 'restart')
    const first = await start(cacheDirectory)
    await cached(first, cacheDirectory, 'restart.bin')
    const hit = await fetchBody(first.url, '/big/restart.bin')
    assert.equal(hit.headers['cache-status'], 'yatagarasu; hit; detail=disk')
    assert.ok(hit.complete)
    assert.ok(hit.body.equals(TEN))
    await first.stop()
    const second = await start(cacheDirectory)
    const before = originGets('restart.bin')
    const res = await fetchBody(second.url, '/big/restart.bin')
    assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=disk')
    assert.equal(res.headers['content-length'], String(TEN.length))
    assert.ok(res.complete && res.body.equals(TEN))
    assert.equal(originGets('restart.bin'), before, 'no request reached the origin')
  })

  it('cuts the connection after the blocks before a damaged one, drops the entry, and fetches it again', async () => {
    const file = await cached(proxy, cacheDir(), 'mid.bin')
    await damageBlock(file, 5)
    const res = await fetchBody(proxy.url, '/big/mid.bin')
    assert.equal(res.status, 200)
    assert.equal(res.headers['x-cache'], 'HIT')
    assert.equal(res.complete, false, 'the client sees a cut connection, never a clean end')
    assert.equal(res.body.length, 5 * BLOCK_SIZE, 'exactly the blocks before the damaged one')
    assert.ok(res.body.equals(TEN.subarray(0, 5 * BLOCK_SIZE)), 'not one corrupt byte')
    await eventually(async () => !(await exists(file)), 'the damaged entry deleted')
    const line = await proxy.logged((l) => l.path === '/big/mid.bin' && l.error !== undefined)
    assert.equal(line.error, 'INTERNAL_ERROR')
    assert.equal(line.complete, false)
    assert.match(String(line.reason), /block 5 fails its checksum/)
    const before = originGets('mid.bin')
    const again = await fetchBody(proxy.url, '/big/mid.bin')
    assert.equal(again.headers['x-cache'], 'MISS')
    assert.ok(again.complete && again.body.equals(TEN))
    assert.equal(originGets('mid.bin'), before + 1)
  })

  it('answers from the origin when the first block is damaged (nothing was sent yet)', async () => {
    const file = await cached(proxy, cacheDir(), 'first.bin')
    await damageBlock(file, 0)
    const before = originGets('first.bin')
    const res = await fetchBody(proxy.url, '/big/first.bin')
    assert.equal(res.status, 200)
    assert.equal(res.headers['x-cache'], 'MISS')
    assert.ok(res.complete && res.body.equals(TEN))
    assert.equal(originGets('first.bin'), before + 1)
  })

  it('answers a Range from the blocks it covers: damage elsewhere neither shows nor drops the entry', async () => {
    const file = await cached(proxy, cacheDir(), 'range.bin')
    await damageBlock(file, 30)
    for (const [start, end] of [
      [0, 999],
      [10 * BLOCK_SIZE - 5, 10 * BLOCK_SIZE + 4],
      [TEN.length - 100, TEN.length - 1],
    ] as const) {
      const res = await fetchBody(proxy.url, '/big/range.bin', { range: `bytes=${start}-${end}` })
      assert.equal(res.status, 206)
      assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=disk')
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${TEN.length}`)
      assert.ok(res.complete && res.body.equals(TEN.subarray(start, end + 1)), `bytes ${start}-${end}`)
    }
    assert.ok(await exists(file), 'the entry stays: no damaged block was read')
  })

  it('answers HEAD and 304 without reading the body', async () => {
    const file = await cached(proxy, cacheDir(), 'head.bin')
    await damageBlock(file, 0)
    const head = await fetchBody(proxy.url, '/big/head.bin', {}, 'HEAD')
    assert.equal(head.status, 200)
    assert.equal(head.headers['cache-status'], 'yatagarasu; hit; detail=disk')
    assert.equal(head.headers['content-length'], String(TEN.length))
    const notModified = await fetchBody(proxy.url, '/big/head.bin', { 'if-none-match': String(head.headers.etag) })
    assert.equal(notModified.status, 304)
    assert.equal(notModified.headers['x-cache'], 'HIT')
    assert.ok(await exists(file), 'the damaged block was never read')
    // The damage is real: a GET reads block 0, finds it, and the origin answers.
    const get = await fetchBody(proxy.url, '/big/head.bin')
    assert.equal(get.headers['x-cache'], 'MISS')
    assert.ok(get.body.equals(TEN))
  })

  it('serves a 10 MiB disk hit to 16 clients at once without holding the bodies in memory', async (t) => {
    await cached(proxy, cacheDir(), 'many.bin')
    const digest = createHash('sha256').update(TEN).digest('hex')
    /** 16 concurrent GETs; each client hashes what it receives and keeps nothing. */
    const wave = () =>
      Promise.all(
        Array.from(
          { length: 16 },
          () =>
            new Promise<{ hash: string; complete: boolean; cacheStatus: unknown }>((resolve, reject) => {
              const url = new URL(proxy.url)
              http
                .get({ host: url.hostname, port: url.port, path: '/big/many.bin', agent: false }, (res) => {
                  const hash = createHash('sha256')
                  let complete = false
                  res.on('data', (chunk: Buffer) => hash.update(chunk))
                  res.on('end', () => {
                    complete = true
                  })
                  res.on('close', () => resolve({ hash: hash.digest('hex'), complete, cacheStatus: res.headers['cache-status'] }))
                })
                .on('error', reject)
            })
        )
      )
    await wave() // warm-up: code paths compiled, sockets and buffers of this size seen once
    const baseline = process.memoryUsage()
    let peakRss = baseline.rss
    let peakBuffers = baseline.arrayBuffers
    const sampler = setInterval(() => {
      const now = process.memoryUsage()
      peakRss = Math.max(peakRss, now.rss)
      peakBuffers = Math.max(peakBuffers, now.arrayBuffers)
    }, 2)
    try {
      const results = await wave()
      for (const result of results) {
        assert.equal(result.cacheStatus, 'yatagarasu; hit; detail=disk')
        assert.ok(result.complete)
        assert.equal(result.hash, digest)
      }
    } finally {
      clearInterval(sampler)
    }
    const grewMiB = (peakRss - baseline.rss) / MiB
    const buffersMiB = (peakBuffers - baseline.arrayBuffers) / MiB
    t.diagnostic(`peak growth with 16 clients: RSS ${grewMiB.toFixed(1)} MiB, array buffers ${buffersMiB.toFixed(1)} MiB`)
    // Reading each body whole (the format-1 disk tier) grew RSS by ~90 MiB here: 16 x 10 MiB at
    // once, less what GC freed between requests. Array buffers are only reported: they count
    // garbage not yet collected (the clients' socket reads too), whichever way the proxy reads.
    assert.ok(grewMiB < 64, `RSS grew ${grewMiB.toFixed(1)} MiB`)
  })

  it('reads no further ahead than a client that stopped reading', async () => {
    const file = await cached(proxy, cacheDir(), 'long.bin')
    const url = new URL(proxy.url)
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: url.hostname, port: url.port, path: '/big/long.bin', agent: false }, resolve).on('error', reject)
    })
    assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=disk')
    res.pause()
    // The client reads nothing more. Socket buffers hold a few MiB at most; had the proxy read the
    // whole file, the last block would be in memory already and damaging it now would change
    // nothing. It reads it only when the client gets there: then it finds the damage.
    await damageBlock(file, LONG.length / BLOCK_SIZE - 1)
    let received = 0
    const complete = await new Promise<boolean>((resolve) => {
      let ended = false
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
      })
      res.on('end', () => {
        ended = true
      })
      res.on('error', () => {})
      res.on('close', () => resolve(ended))
      res.resume()
    })
    assert.equal(complete, false)
    assert.equal(received, LONG.length - BLOCK_SIZE, 'every block but the damaged last one')
  })
})

