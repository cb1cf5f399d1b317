// A cold object that goes to the disk tier is read from the origin at the pace the disk takes it,
// not at its first client's, and every request for it (the first included) is answered from the
// file as it grows. Through the running proxy against s3rver behind the SigV4-checking layer,
// which counts the GETs, holds or stalls them, and answers If-Match as S3 does.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http, { type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const MiB = 1024 * 1024

let s3: TestS3
let dir: string
let proxy: TestProxy

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')
const getsOf = (key: string) => s3.getsOf('fills', key)

/** A GET of `path` on a connection of its own, once its headers came (its body not read yet). */
function answerOf(path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  const url = new URL(proxy.url)
  return new Promise((resolve, reject) => {
    http.get({ host: url.hostname, port: url.port, path, headers, agent: false }, resolve).on('error', reject)
  })
}

/** The rest of an answer's body, and whether it ended cleanly or was cut. */
function readOn(res: IncomingMessage): Promise<{ body: Buffer; ended: 'end' | 'cut' }> {
  const chunks: Buffer[] = []
  return new Promise((resolve) => {
    const cut = () => resolve({ body: Buffer.concat(chunks), ended: 'cut' })
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('end', () => resolve({ body: Buffer.concat(chunks), ended: 'end' }))
    res.on('error', cut)
    res.on('aborted', cut)
    res.resume()
  })
}

/** A later answer for `path` once it is a hit from the disk tier (the fill committed). */
function diskHit(path: string) {
  return eventually(async () => {
    const res = await send(proxy.url, path)
    return res.headers['cache-status'] === 'yatagarasu; hit; detail=disk' && res
  }, `${path}: a hit from the disk tier`)
}

before(async () => {
  s3 = await startS3()
  await s3.createBucket('fills')
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-fills-'))
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory, disk]
  ttl_seconds: 300
  max_item_size: 64MB
  memory: { max_size: 8MB }
  disk: { dir: "${join(dir, 'disk')}", max_size: 256MB }
buckets:
${bucketYaml({ name: 'fills', prefix: '/f', bucket: 'fills', endpoint: s3.endpoint, timeout: 30 })}
${bucketYaml({ name: 'quick', prefix: '/q', bucket: 'fills', endpoint: s3.endpoint, timeout: 2 })}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('a disk fill', () => {
  it('goes at the origin’s pace: requests behind a first client that stopped reading get the object at once, from one GET', async () => {
    const bytes = randomBytes(24 * MiB)
    await s3.put('fills', 'paused.bin', bytes)
    const first = await answerOf('/f/paused.bin')
    first.pause()
    // The first client reads nothing until the others are done: before, its fill went at its pace,
    // and they waited 4 s for it to stand still, then fetched the object again.
    const others = await Promise.all(Array.from({ length: 5 }, () => send(proxy.url, '/f/paused.bin')))
    for (const res of others) {
      assert.equal(res.status, 200)
      assert.equal(sha(res.body), sha(bytes))
      assert.equal(res.headers['cache-status'], 'yatagarasu; hit; detail=coalesced')
    }
    assert.equal(getsOf('paused.bin').length, 1, 'one GET for all six')
    const { body, ended } = await readOn(first)
    assert.equal(ended, 'end')
    assert.equal(first.headers['x-cache'], 'MISS')
    assert.equal(sha(body), sha(bytes), 'the first client, reading on, gets every byte')
    const stored = await diskHit('/f/paused.bin')
    assert.equal(sha(stored.body), sha(bytes))
    assert.equal(getsOf('paused.bin').length, 1)
  })

  it('goes on when its first client leaves, and keeps the object', async () => {
    const bytes = randomBytes(8 * MiB)
    await s3.put('fills', 'left.bin', bytes)
    const first = await answerOf('/f/left.bin')
    first.destroy()
    const [get] = getsOf('left.bin')
    assert.equal(await get?.outcome, 'finished', 'the origin’s answer read to its end, not aborted')
    const stored = await diskHit('/f/left.bin')
    assert.equal(sha(stored.body), sha(bytes))
    assert.equal(getsOf('left.bin').length, 1)
  })

  it('answers a conditional request that starts it without waiting for the whole body', async () => {
    const bytes = randomBytes(8 * MiB)
    await s3.put('fills', 'revalidating.bin', bytes)
    const etag = `"${createHash('md5').update(bytes).digest('hex')}"`
    // The origin sends 2 MiB, then holds the rest until released: the 304 is answered meanwhile
    // (before, the whole object was read for the cache first, and the answer waited for the release).
    const held = s3.holdNextGet(2 * MiB)
    const res = await send(proxy.url, '/f/revalidating.bin', { headers: { 'if-none-match': etag } })
    assert.equal(res.status, 304)
    assert.equal(res.headers.etag, etag)
    await held.held
    held.release()
    const whole = await diskHit('/f/revalidating.bin')
    assert.equal(sha(whole.body), sha(bytes))
    assert.equal(getsOf('revalidating.bin').length, 1)
  })

  it('sends the rest from a ranged GET of the same version when the fill’s GET breaks', async () => {
    const bytes = randomBytes(8 * MiB)
    await s3.put('fills', 'broken.bin', bytes)
    // The fill's GET sends 1 MiB and then nothing: after s3.timeout (2 s) it is given up.
    s3.stallNextGet(MiB)
    const res = await send(proxy.url, '/q/broken.bin')
    assert.equal(res.status, 200)
    assert.equal(sha(res.body), sha(bytes), 'every byte, in order')
    const [fill, rest] = getsOf('broken.bin')
    assert.equal(getsOf('broken.bin').length, 2)
    const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(String(rest?.headers.range)) ?? []
    assert.ok(Number(from) > 0 && Number(from) <= (fill?.bytes ?? 0), `the rest starts where the file ends: ${rest?.headers.range}, ${fill?.bytes} bytes came`)
    assert.equal(Number(to), bytes.length - 1)
    assert.equal(rest?.headers['if-match'], res.headers.etag, 'of the same version')
    // The origin's failure is still logged, with the request that started the fill.
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/q/broken.bin' && l.error !== undefined)
    assert.deepEqual([line.error, line.reason, line.status], ['ORIGIN_TIMEOUT', 'body_stalled', 200])
    // And on a line of its own, for when that request's line was out before the fill failed (a
    // 304, a client that left).
    const failed = await proxy.logged((l) => l.msg === 'cache fill failed: its answers went on from ranged GETs' && l.key === 'broken.bin')
    assert.deepEqual([failed.bucket, failed.error, failed.reason], ['quick', 'ORIGIN_TIMEOUT', 'body_stalled'])
  })

  it('stops a revalidation’s fill (joined by nobody) when its client leaves', async () => {
    // Stored already stale (no-cache): every request revalidates it with a conditional GET.
    await s3.put('fills', 'revalidated.bin', randomBytes(8 * MiB), { CacheControl: 'no-cache' })
    await send(proxy.url, '/f/revalidated.bin')
    await eventually(async () => (await send(proxy.url, '/f/revalidated.bin')).headers['cache-status'] === 'yatagarasu; fwd=stale; fwd-status=304', 'stored')
    await s3.put('fills', 'revalidated.bin', randomBytes(8 * MiB), { CacheControl: 'no-cache' })
    // The changed object's GET sends 2 MiB and holds the rest: the client leaves meanwhile.
    const held = s3.holdNextGet(2 * MiB)
    const res = await answerOf('/f/revalidated.bin')
    await held.held
    res.destroy()
    const get = getsOf('revalidated.bin').at(-1)
    assert.equal(await get?.outcome, 'aborted', 'the changed object’s GET stops with its client')
    held.release()
  })

  it('never mixes two versions: when the object changed before the rest was fetched, the answer is cut', async () => {
    s3.atomicOverwrites(true)
    try {
      const old = randomBytes(8 * MiB)
      await s3.put('fills', 'changing.bin', old)
      s3.stallNextGet(MiB)
      const res = await answerOf('/q/changing.bin')
      await s3.put('fills', 'changing.bin', randomBytes(8 * MiB))
      const { body, ended } = await readOn(res)
      assert.equal(ended, 'cut', 'a truncated answer, never a clean end')
      assert.ok(body.length < old.length)
      assert.deepEqual(body, old.subarray(0, body.length), 'only bytes of the version it started with')
      const rest = getsOf('changing.bin')[1]
      assert.equal(rest?.headers['if-match'], res.headers.etag)
      assert.equal(rest?.status, 412)
    } finally {
      s3.atomicOverwrites(false)
    }
  })
})
