// Compressed text through the running proxy (s3rver behind SigV4 checks, a memory cache): each
// encoding negotiated from real Accept-Encoding strings and decompressing to the stored bytes,
// Vary on every answer of a compressible object, a strong ETag per encoding with 304s, Range and
// HEAD answered as they should, compress once and serve many, and what is left alone.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { brotliDecompressSync, gunzipSync, zstdDecompressSync } from 'node:zlib'
import { send, type RawResponse } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy

// Text that compresses (repeated words) but is not trivial.
const SCRIPT = Buffer.from(Array.from({ length: 4000 }, (_, i) => `export const value${i} = compute(${i}, "item-${i % 37}");\n`).join(''))
const JSON_DOC = Buffer.from(JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ id: i, name: `entry ${i}`, tags: ['a', 'b', String(i % 7)] }))))
const SMALL = Buffer.from('tiny text under min_size')
const BINARY = randomBytes(64 * 1024)
const PRE = Buffer.from('already gzip-encoded bytes, served as stored')
const VIDEO = randomBytes(3 * 1024 * 1024)

const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> => send(proxy.url, path, { headers, method })

function decode(encoding: string | undefined, body: Buffer): Buffer {
  if (encoding === 'br') return brotliDecompressSync(body)
  if (encoding === 'gzip') return gunzipSync(body)
  if (encoding === 'zstd') return zstdDecompressSync(body)
  return body
}

async function compressions(): Promise<Record<string, number>> {
  const text = await (await fetch(proxy.proxy.metricsUrl as string)).text()
  const counts: Record<string, number> = {}
  for (const match of text.matchAll(/^compressions_total\{encoding="(\w+)"\} (\d+)$/gm)) counts[match[1] as string] = Number(match[2])
  return counts
}

before(async () => {
  s3 = await startS3()
  await s3.createBucket('site')
  await s3.put('site', 'app.js', SCRIPT, { ContentType: 'application/javascript' })
  await s3.put('site', 'data.json', JSON_DOC, { ContentType: 'application/json; charset=utf-8' })
  await s3.put('site', 'page.html', SCRIPT, { ContentType: 'text/html; charset=utf-8' })
  await s3.put('site', 'small.txt', SMALL, { ContentType: 'text/plain' })
  await s3.put('site', 'blob.bin', BINARY, { ContentType: 'application/octet-stream' })
  await s3.put('site', 'pre.txt', PRE, { ContentType: 'text/plain', ContentEncoding: 'gzip' })
  await s3.put('site', 'video.mp4', VIDEO, { ContentType: 'video/mp4' })
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
metrics: { enabled: true, port: 0 }
cache:
  enabled: true
  layers: [memory]
  ttl_seconds: 300
  memory: { max_size: 64MB }
buckets:
${bucketYaml({
  name: 'site',
  prefix: '/site',
  bucket: 'site',
  endpoint: s3.endpoint,
  extra: `    compression:
      enabled: true
      min_size: 1KB
      encodings: [br, zstd, gzip]
`,
})}
${bucketYaml({
  name: 'direct',
  prefix: '/direct',
  bucket: 'site',
  endpoint: s3.endpoint,
  extra: `    cache: { enabled: false }
    compression: { enabled: true }
`,
})}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('compressed text', () => {
  const CASES: Array<[string, string | undefined]> = [
    ['gzip, deflate, br, zstd', 'br'], // Chrome, Firefox: equal q, the configured order
    ['gzip, deflate, br', 'br'], // Safari
    ['deflate, gzip', 'gzip'],
    ['zstd;q=1, br;q=0.5', 'zstd'], // the higher q wins over the configured order
    ['br;q=0, gzip', 'gzip'], // q=0 refuses
    ['*;q=0.5, gzip;q=0', 'br'], // * stands for the encodings not named
    ['identity', undefined],
    ['*;q=0, identity', undefined],
  ]

  for (const [accept, encoding] of CASES) {
    it(`Accept-Encoding "${accept}" gets ${encoding ?? 'identity'}, decompressing to the stored bytes`, async () => {
      const res = await get('/site/app.js', { 'accept-encoding': accept })
      assert.equal(res.status, 200)
      assert.equal(res.headers['content-encoding'], encoding)
      assert.match(String(res.headers.vary), /Accept-Encoding/i)
      assert.equal(res.headers['content-type'], 'application/javascript')
      assert.equal(res.headers['content-length'], String(res.body.length))
      assert.ok(decode(encoding, res.body).equals(SCRIPT), 'the body decompresses to the original')
      if (encoding !== undefined) assert.ok(res.body.length < SCRIPT.length / 3, 'actually compressed')
    })
  }

  it('answers identity without Accept-Encoding, with Vary (curl without --compressed)', async () => {
    const res = await get('/site/data.json')
    assert.equal(res.headers['content-encoding'], undefined)
    assert.match(String(res.headers.vary), /Accept-Encoding/i)
    assert.ok(res.body.equals(JSON_DOC))
  })

  it('gives each encoding its own strong ETag, and a 304 for it', async () => {
    const identity = await get('/site/page.html')
    const br = await get('/site/page.html', { 'accept-encoding': 'br' })
    const gzip = await get('/site/page.html', { 'accept-encoding': 'gzip' })
    const plain = String(identity.headers.etag)
    assert.match(plain, /^"[^"]+"$/)
    assert.equal(br.headers.etag, `${plain.slice(0, -1)}-br"`)
    assert.equal(gzip.headers.etag, `${plain.slice(0, -1)}-gzip"`)
    assert.equal((await proxy.logged((l) => l.msg === 'request' && l.path === '/site/page.html' && l.representation !== undefined)).representation, 'encoding=br')
    const notModified = await get('/site/page.html', { 'accept-encoding': 'br', 'if-none-match': String(br.headers.etag) })
    assert.equal(notModified.status, 304)
    assert.equal(notModified.headers.etag, br.headers.etag)
    assert.match(String(notModified.headers.vary), /Accept-Encoding/i)
    const identity304 = await get('/site/page.html', { 'if-none-match': plain })
    assert.equal(identity304.status, 304)
    assert.match(String(identity304.headers.vary), /Accept-Encoding/i, 'Vary on the identity 304 too')
    // The identity ETag does not validate the br body.
    const changed = await get('/site/page.html', { 'accept-encoding': 'br', 'if-none-match': plain })
    assert.equal(changed.status, 200)
    assert.equal(changed.headers['content-encoding'], 'br')
  })

  it('answers a Range from the identity bytes, and HEAD like GET', async () => {
    const res = await get('/site/app.js', { 'accept-encoding': 'br, gzip', range: 'bytes=100-199' })
    assert.equal(res.status, 206)
    assert.equal(res.headers['content-encoding'], undefined)
    assert.ok(res.body.equals(SCRIPT.subarray(100, 200)))
    assert.match(String(res.headers.vary), /Accept-Encoding/i)
    const full = await get('/site/app.js', { 'accept-encoding': 'gzip' })
    const head = await get('/site/app.js', { 'accept-encoding': 'gzip' }, 'HEAD')
    assert.equal(head.status, 200)
    assert.equal(head.headers['content-length'], full.headers['content-length'])
    assert.equal(head.headers.etag, full.headers.etag)
    assert.equal(head.body.length, 0)
  })

  it('compresses once per object version and encoding, then serves from the cache', async () => {
    const before = await compressions()
    const first = await get('/site/data.json', { 'accept-encoding': 'gzip' })
    const originGets = s3.getsOf('site', 'data.json').length
    const results = await Promise.all(Array.from({ length: 20 }, () => get('/site/data.json', { 'accept-encoding': 'gzip' })))
    for (const res of results) {
      assert.equal(res.headers['x-cache'], 'HIT')
      assert.ok(res.body.equals(first.body))
    }
    const afterCounts = await compressions()
    assert.equal((afterCounts.gzip ?? 0) - (before.gzip ?? 0), first.headers['x-cache'] === 'HIT' ? 0 : 1)
    assert.equal(s3.getsOf('site', 'data.json').length, originGets, 'no origin request for cached compressed bodies')
  })

  it('compresses a changed object anew (the variant is keyed by the ETag)', async () => {
    await s3.put('site', 'change.txt', Buffer.concat([SCRIPT, Buffer.from('v1')]), { ContentType: 'text/plain', CacheControl: 'max-age=0' })
    const v1 = await get('/site/change.txt', { 'accept-encoding': 'br' })
    assert.ok(decode('br', v1.body).toString().endsWith('v1'))
    await s3.put('site', 'change.txt', Buffer.concat([SCRIPT, Buffer.from('v2')]), { ContentType: 'text/plain', CacheControl: 'max-age=0' })
    const v2 = await get('/site/change.txt', { 'accept-encoding': 'br' })
    assert.ok(decode('br', v2.body).toString().endsWith('v2'), 'the new version, not the old compressed body')
    assert.notEqual(v2.headers.etag, v1.headers.etag)
  })

  it('offers no ranges on an encoded answer (a Range gets the identity bytes)', async () => {
    const res = await get('/site/app.js', { 'accept-encoding': 'br' })
    assert.equal(res.headers['content-encoding'], 'br')
    assert.equal(res.headers['accept-ranges'], 'none')
    assert.equal((await get('/site/app.js')).headers['accept-ranges'], 'bytes')
  })

  it('without a cache: compresses per request, and streams what it does not compress without reading it first', async () => {
    const js = await get('/direct/app.js', { 'accept-encoding': 'gzip' })
    assert.equal(js.headers['content-encoding'], 'gzip')
    assert.ok(decode('gzip', js.body).equals(SCRIPT))
    const before = s3.getsOf('site', 'video.mp4').length
    const video = await get('/direct/video.mp4', { 'accept-encoding': 'gzip, br' })
    assert.equal(video.status, 200)
    assert.ok(video.body.equals(VIDEO))
    assert.equal(s3.getsOf('site', 'video.mp4').length - before, 1, 'one origin GET: the object was not read whole to be judged')
    const notModified = await get('/direct/app.js', { 'if-none-match': String((await get('/direct/app.js')).headers.etag) })
    assert.equal(notModified.status, 304)
    assert.match(String(notModified.headers.vary), /Accept-Encoding/i)
  })

  it('sends an object marked no-transform as stored', async () => {
    await s3.put('site', 'exact.js', SCRIPT, { ContentType: 'application/javascript', CacheControl: 'public, max-age=60, no-transform' })
    const res = await get('/site/exact.js', { 'accept-encoding': 'br, gzip' })
    assert.equal(res.headers['content-encoding'], undefined)
    assert.ok(res.body.equals(SCRIPT))
  })

  it('leaves small bodies, other types and already-encoded objects alone (no Vary)', async () => {
    for (const [path, body, encoding] of [
      ['/site/small.txt', SMALL, undefined],
      ['/site/blob.bin', BINARY, undefined],
      ['/site/pre.txt', PRE, 'gzip'],
    ] as const) {
      const res = await get(path, { 'accept-encoding': 'br, gzip, zstd' })
      assert.equal(res.status, 200, path)
      assert.equal(res.headers['content-encoding'], encoding, path)
      assert.ok(res.body.equals(body), path)
      assert.doesNotMatch(String(res.headers.vary ?? ''), /Accept-Encoding/i, path)
    }
  })
})
