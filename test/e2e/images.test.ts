// Image variants and watermarks through the running proxy (s3rver behind SigV4 checks, a memory
// cache), with real images made by sharp: outputs decoded and checked (format, size, no EXIF),
// Accept negotiation with Vary, presets-only refusals, signed URLs, 304/HEAD/Range on variants,
// one render for 50 concurrent requests, cache hits after, a changed original rendered anew, the
// bomb refused before decoding, 503 when the queue is full, and watermarks on every response of a
// marked key (the original included) that no request form can bypass.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { crc32, deflateSync } from 'node:zlib'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import sharp from 'sharp'
import { signImagePath } from '../../src/images/params.ts'
import { send, type RawResponse } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy

const SIGNING_KEY = 'image-signing-key-0123456789abcdef'
const S3_READER = { id: 'IMAGEREADER00001', secret: 'image-reader-secret-0123456789-abcdefghijklm' }
const OLD_KEY = 'retired-signing-key-0123456789abcd'

const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> => send(proxy.url, path, { headers, method })

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(proxy.proxy.metricsUrl as string)).text()
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(' ').pop())
  }
  return total
}

/** A PNG whose header claims width x height, with almost no pixel data (a decompression bomb). */
function bombPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8)
    head.writeUInt32BE(data.length, 0)
    head.write(type, 4, 'ascii')
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'ascii'), data])) >>> 0, 0)
    return Buffer.concat([head, data, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(64 * 1024))),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

let photo: Buffer // 1200x800 JPEG stored with EXIF orientation 6 (displayed 800x1200) and GPS
let alpha: Buffer
let animated: Buffer
let tiff16: Buffer
let grey: Buffer
let big: Buffer

before(async () => {
  photo = await sharp({ create: { width: 1200, height: 800, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .jpeg()
    .withExif({ IFD0: { Make: 'TestCam' }, IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '35/1 40/1 0/1' } })
    .withMetadata({ orientation: 6 })
    .toBuffer()
  alpha = await sharp({ create: { width: 640, height: 480, channels: 4, background: { r: 0, g: 128, b: 255, alpha: 0.5 } } }).png().toBuffer()
  const frames = await Promise.all(
    [0, 1, 2].map((i) => sharp({ create: { width: 200, height: 100, channels: 4, background: { r: 80 * i, g: 50, b: 50, alpha: 1 } } }).raw().toBuffer())
  )
  animated = await sharp(Buffer.concat(frames), { raw: { width: 200, height: 300, channels: 4, pageHeight: 100 } }).gif().toBuffer()
  tiff16 = await sharp({ create: { width: 300, height: 200, channels: 3, background: { r: 10, g: 200, b: 90 } } }).toColourspace('rgb16').tiff().toBuffer()
  grey = await sharp({ create: { width: 800, height: 600, channels: 3, background: { r: 128, g: 128, b: 128 } } }).jpeg({ quality: 95 }).toBuffer()
  big = await sharp({ create: { width: 5000, height: 4000, channels: 3, background: '#000000', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).jpeg().toBuffer()

  s3 = await startS3()
  for (const bucket of ['img', 'signed', 'marked', 'busy']) await s3.createBucket(bucket)
  await s3.put('img', 'photo.jpg', photo, { ContentType: 'image/jpeg' })
  await s3.put('img', 'alpha.png', alpha, { ContentType: 'image/png' })
  await s3.put('img', 'anim.gif', animated, { ContentType: 'image/gif' })
  await s3.put('img', 'deep.tiff', tiff16, { ContentType: 'image/tiff' })
  await s3.put('img', 'bomb.png', bombPng(50_000, 50_000), { ContentType: 'image/png' })
  await s3.put('img', 'corrupt.jpg', Buffer.from('this is not a jpeg at all, only text behind an image type'), { ContentType: 'image/jpeg' })
  await s3.put('img', 'notes.txt', 'plain text', { ContentType: 'text/plain' })
  await s3.put('signed', 'photo.jpg', photo, { ContentType: 'image/jpeg' })
  await s3.put('marked', 'grey.jpg', grey, { ContentType: 'image/jpeg' })
  await s3.put('marked', 'docs/readme.txt', 'not an image', { ContentType: 'text/plain' })
  await s3.put('busy', 'big.jpg', big, { ContentType: 'image/jpeg' })
  await s3.put('marked', 'user/u.jpg', grey, { ContentType: 'image/jpeg' })
  await s3.put('marked', 'raw/octet.bin', grey, { ContentType: 'application/octet-stream' })
  await s3.put('marked', 'raw/pic.bmp', Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)]), { ContentType: 'image/bmp' })
  await s3.put('marked', 'raw/notes.bin', Buffer.from('plain bytes, not an image at all'), { ContentType: 'application/octet-stream' })

  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
metrics: { enabled: true, port: 0 }
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - access_key_id: ${S3_READER.id}
      secret_access_key: "${S3_READER.secret}"
      buckets: [marked]
image_optimization: { enabled: true, max_width: 2000, max_height: 2000, default_quality: 80 }
cache:
  enabled: true
  layers: [memory]
  ttl_seconds: 300
  max_item_size: 32MB
  memory: { max_size: 256MB }
buckets:
${bucketYaml({
  name: 'img',
  prefix: '/img',
  bucket: 'img',
  endpoint: s3.endpoint,
  extra: `    images:
      allow_arbitrary: true
      presets:
        thumb: { width: 320, height: 320, fit: cover, format: auto, quality: 75 }
        hero: { width: 1200, format: webp }
`,
})}
${bucketYaml({
  name: 'signed',
  prefix: '/signed',
  bucket: 'signed',
  endpoint: s3.endpoint,
  extra: `    images:
      presets:
        thumb: { width: 320, height: 320, fit: cover }
      signing: { keys: ["${SIGNING_KEY}", "${OLD_KEY}"] }
`,
})}
${bucketYaml({
  name: 'marked',
  prefix: '/marked',
  bucket: 'marked',
  endpoint: s3.endpoint,
  extra: `    images:
      allow_arbitrary: true
    watermark:
      enabled: true
      rules:
        - pattern: "*.jpg"
          watermarks:
            - { type: text, text: "SAMPLE", font_size: 96, color: "#ff0000", opacity: 1, position: center }
        - pattern: "personal/**"
          watermarks:
            - { type: text, text: "{{ip}}", font_size: 48, color: "#00ff00", opacity: 1, position: center }
        - pattern: "user/**"
          watermarks:
            - { type: text, text: "{{header.x-user}}", font_size: 96, color: "#ff0000", opacity: 1, position: center }
        - pattern: "raw/**"
          watermarks:
            - { type: text, text: "SAMPLE", font_size: 96, color: "#ff0000", opacity: 1, position: center }
`,
})}
${bucketYaml({
  name: 'queue',
  prefix: '/queue',
  bucket: 'busy',
  endpoint: s3.endpoint,
  extra: `    images:
      allow_arbitrary: true
      max_concurrent: 1
      max_queue: 4
`,
})}
${bucketYaml({
  name: 'uncached',
  prefix: '/uncached',
  bucket: 'busy',
  endpoint: s3.endpoint,
  extra: `    cache: { enabled: false }
    images:
      allow_arbitrary: true
      max_concurrent: 1
      max_queue: 0
`,
})}
${bucketYaml({
  name: 'busy',
  prefix: '/busy',
  bucket: 'busy',
  endpoint: s3.endpoint,
  extra: `    images:
      allow_arbitrary: true
      max_concurrent: 1
      max_queue: 0
`,
})}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('image variants', () => {
  it('resizes and re-encodes: format and size decoded, EXIF orientation applied, EXIF and GPS stripped', async () => {
    for (const fmt of ['avif', 'webp', 'jpeg', 'png'] as const) {
      const res = await get(`/img/photo.jpg?w=400&fmt=${fmt}`)
      assert.equal(res.status, 200, fmt)
      assert.equal(res.headers['content-type'], `image/${fmt}`)
      assert.equal(res.headers['content-length'], String(res.body.length))
      const meta = await sharp(res.body).metadata()
      assert.equal(meta.format === 'heif' ? 'avif' : meta.format, fmt)
      // Stored 1200x800 with orientation 6: displayed 800x1200, so 400 wide is 600 high.
      assert.equal(meta.width, 400, fmt)
      assert.equal(meta.height, 600, fmt)
      assert.equal(meta.exif, undefined, `${fmt}: no EXIF`)
      assert.equal(meta.orientation, undefined, `${fmt}: orientation applied, not carried`)
    }
  })

  it('renders PNG with alpha, an animated GIF and a 16-bit TIFF', async () => {
    const png = await get('/img/alpha.png?w=320&fmt=png')
    const pngMeta = await sharp(png.body).metadata()
    assert.deepEqual([pngMeta.format, pngMeta.width, pngMeta.height, pngMeta.hasAlpha], ['png', 320, 240, true])
    const gif = await get('/img/anim.gif?w=100&fmt=webp')
    assert.equal(gif.status, 200)
    const gifMeta = await sharp(gif.body).metadata()
    assert.deepEqual([gifMeta.format, gifMeta.width], ['webp', 100])
    const tiff = await get('/img/deep.tiff?w=150&fmt=jpeg')
    const tiffMeta = await sharp(tiff.body).metadata()
    assert.deepEqual([tiffMeta.format, tiffMeta.width, tiffMeta.height], ['jpeg', 150, 100])
  })

  it('negotiates fmt=auto from Accept (AVIF, then WebP, then the source), with Vary: Accept', async () => {
    const cases: Array<[string | undefined, string]> = [
      ['image/avif,image/webp,image/apng,*/*;q=0.8', 'image/avif'],
      ['image/webp,*/*', 'image/webp'],
      ['image/avif;q=0,image/webp', 'image/webp'],
      ['image/jpeg', 'image/jpeg'],
      [undefined, 'image/jpeg'],
    ]
    for (const [accept, type] of cases) {
      const res = await get('/img/photo.jpg?preset=thumb', accept === undefined ? {} : { accept })
      assert.equal(res.status, 200, accept)
      assert.equal(res.headers['content-type'], type, accept)
      assert.match(String(res.headers.vary), /Accept/, accept)
      const meta = await sharp(res.body).metadata()
      assert.deepEqual([meta.width, meta.height], [320, 320], `${accept}: cover crop`)
    }
    // The access log names the preset answered.
    const line = await proxy.logged((l) => l.msg === 'request' && l.representation === 'preset=thumb')
    assert.equal(line.path, '/img/photo.jpg')
  })

  it('answers 304, HEAD and Range on a variant by its own strong ETag', async () => {
    const full = await get('/img/photo.jpg?w=300&fmt=webp')
    const etag = String(full.headers.etag)
    assert.match(etag, /^"[^"]+"$/)
    assert.notEqual(etag, (await get('/img/photo.jpg', {}, 'HEAD')).headers.etag, 'not the original ETag')
    assert.equal((await get('/img/photo.jpg?w=300&fmt=webp', { 'if-none-match': etag })).status, 304)
    const head = await get('/img/photo.jpg?w=300&fmt=webp', {}, 'HEAD')
    assert.deepEqual([head.status, head.headers['content-length'], head.headers.etag], [200, String(full.body.length), etag])
    const part = await get('/img/photo.jpg?w=300&fmt=webp', { range: 'bytes=10-49' })
    assert.equal(part.status, 206)
    assert.ok(part.body.equals(full.body.subarray(10, 50)))
  })

  it('renders a new variant once for 50 concurrent requests, then serves it from the cache', async () => {
    const labels = { bucket: 'img', preset: 'custom', format: 'webp', result: 'ok' }
    const before = await metric('image_renders_total', labels)
    const results = await Promise.all(Array.from({ length: 50 }, () => get('/img/photo.jpg?w=222&fmt=webp')))
    for (const res of results) {
      assert.equal(res.status, 200)
      assert.ok(res.body.equals((results[0] as RawResponse).body))
    }
    assert.equal((await metric('image_renders_total', labels)) - before, 1, 'one render')
    const again = await get('/img/photo.jpg?w=222&fmt=webp')
    assert.equal(again.headers['x-cache'], 'HIT')
    assert.equal((await metric('image_renders_total', labels)) - before, 1, 'still one render')
  })

  it('renders a changed original anew', async () => {
    const red = await sharp({ create: { width: 100, height: 100, channels: 3, background: '#ff0000' } }).png().toBuffer()
    const blue = await sharp({ create: { width: 100, height: 100, channels: 3, background: '#0000ff' } }).png().toBuffer()
    await s3.put('img', 'swap.png', red, { ContentType: 'image/png', CacheControl: 'max-age=0' })
    const first = await get('/img/swap.png?w=50&fmt=png')
    const { data: a } = await sharp(first.body).raw().toBuffer({ resolveWithObject: true })
    assert.ok((a[0] as number) > 200 && (a[2] as number) < 50, 'red')
    await s3.put('img', 'swap.png', blue, { ContentType: 'image/png', CacheControl: 'max-age=0' })
    const second = await get('/img/swap.png?w=50&fmt=png')
    const { data: b } = await sharp(second.body).raw().toBuffer({ resolveWithObject: true })
    assert.ok((b[2] as number) > 200 && (b[0] as number) < 50, 'blue: the new original')
    assert.notEqual(second.headers.etag, first.headers.etag)
  })

  it('refuses bad parameters (400), non-images (415), a bomb and corrupt bytes (422), as JSON', async () => {
    for (const query of ['w=0', 'w=99999', 'q=500', 'fmt=bmp', 'fit=stretch', 'dpr=9', 'preset=nope', 'w=10&w=20']) {
      const res = await get(`/img/photo.jpg?${query}`)
      assert.equal(res.status, 400, query)
      assert.equal(JSON.parse(res.body.toString()).error.code, 'IMAGE_BAD_PARAMS', query)
    }
    assert.equal((await get('/img/notes.txt?w=100')).status, 415)
    const rssBefore = process.memoryUsage().rss
    const bomb = await get('/img/bomb.png?w=100')
    assert.equal(bomb.status, 422)
    assert.equal(JSON.parse(bomb.body.toString()).error.code, 'IMAGE_UNPROCESSABLE')
    assert.ok(process.memoryUsage().rss - rssBefore < 200 * 1024 * 1024, 'the bomb was not decoded')
    const corrupt = await get('/img/corrupt.jpg?w=100')
    assert.equal(corrupt.status, 422)
    // Other query parameters are cache busters: ignored; no image parameters: the original as stored.
    const original = await get('/img/photo.jpg?v=123')
    assert.ok(original.body.equals(photo))
  })

  it('answers 503 with Retry-After when the render queue is full', async () => {
    const results = await Promise.all([1000, 1100, 1200].map((w) => get(`/busy/big.jpg?w=${w}&fmt=avif`)))
    const statuses = results.map((r) => r.status).sort()
    assert.ok(statuses.includes(200), `one render ran: ${statuses}`)
    const busy = results.filter((r) => r.status === 503)
    assert.ok(busy.length >= 1, `the others were refused: ${statuses}`)
    for (const res of busy) {
      assert.equal(JSON.parse(res.body.toString()).error.code, 'IMAGE_BUSY')
      assert.equal(res.headers['retry-after'], '1')
    }
  })
})

describe('render slots and shared renders', () => {
  it('refuses renders over the queue before reading their originals (a bucket without a cache)', async () => {
    const before = s3.getsOf('busy', 'big.jpg').length
    const results = await Promise.all([700, 710, 720, 730, 740, 750].map((w) => get(`/uncached/big.jpg?w=${w}&fmt=webp`)))
    const ok = results.filter((r) => r.status === 200).length
    const busy = results.filter((r) => r.status === 503).length
    assert.equal(ok + busy, 6, results.map((r) => r.status).join(','))
    assert.ok(ok >= 1 && busy >= 1, results.map((r) => r.status).join(','))
    assert.equal(s3.getsOf('busy', 'big.jpg').length - before, ok, 'one origin read per render that ran, none for refused ones')
  })

  it('keeps rendering for the others when the first requester of a variant leaves', async () => {
    const depth = async () => metric('image_render_queue_depth', { bucket: 'queue' })
    // One render holds the only slot; the variant under test waits in the queue behind it.
    const holder = get('/queue/big.jpg?w=900&fmt=avif')
    const url = new URL(proxy.url)
    const leaver = http.request({ host: url.hostname, port: url.port, path: '/queue/big.jpg?w=640&fmt=webp', agent: false })
    leaver.on('error', () => {})
    leaver.end()
    for (let i = 0; (await depth()) < 1; i++) {
      assert.ok(i < 600, 'the variant never queued')
      await new Promise((resolve) => setImmediate(resolve))
    }
    const follower = get('/queue/big.jpg?w=640&fmt=webp')
    // Three object requests in flight: the follower has arrived and joined the queued render
    // (answered from memory in a few microtasks); then the render's first requester hangs up.
    for (let i = 0; (await metric('http_requests_in_flight', {})) < 3; i++) {
      assert.ok(i < 600, 'the follower never arrived')
      await new Promise((resolve) => setImmediate(resolve))
    }
    leaver.destroy()
    const [held, followed] = await Promise.all([holder, follower])
    assert.equal(held.status, 200)
    assert.equal(followed.status, 200, followed.body.toString())
    assert.equal((await sharp(followed.body).metadata()).width, 640)
  })
})

describe('presets only, signed URLs', () => {
  const sign = (path: string, params: Record<string, string>, key = SIGNING_KEY) => signImagePath(path, params, key)

  it('serves a preset with a valid signature, from either configured key', async () => {
    for (const key of [SIGNING_KEY, OLD_KEY]) {
      const sig = sign('/signed/photo.jpg', { preset: 'thumb' }, key)
      const res = await get(`/signed/photo.jpg?preset=thumb&sig=${sig}`)
      assert.equal(res.status, 200)
      const meta = await sharp(res.body).metadata()
      assert.deepEqual([meta.width, meta.height], [320, 320])
    }
  })

  it('refuses a missing, wrong or tampered signature (403), and arbitrary parameters (400)', async () => {
    assert.equal((await get('/signed/photo.jpg?preset=thumb')).status, 403)
    const other = sign('/signed/photo.jpg', { preset: 'thumb' }, 'some-other-key-0123456789abcdef')
    assert.equal((await get(`/signed/photo.jpg?preset=thumb&sig=${other}`)).status, 403)
    const sig = sign('/signed/photo.jpg', { preset: 'thumb' })
    assert.equal((await get(`/signed/other.jpg?preset=thumb&sig=${sig}`)).status, 403, 'a signature is for one path')
    const arbitrary = sign('/signed/photo.jpg', { w: '100' })
    const refused = await get(`/signed/photo.jpg?w=100&sig=${arbitrary}`)
    assert.equal(refused.status, 400)
    assert.equal(JSON.parse(refused.body.toString()).error.code, 'IMAGE_BAD_PARAMS')
  })
})

describe('watermarks', () => {
  /** Mean red and green of the centre 40x40 of a decoded image, and of its top-left corner. */
  async function sample(body: Buffer): Promise<{ centre: [number, number]; corner: [number, number]; width: number }> {
    const image = sharp(body)
    const { width = 0, height = 0 } = await image.metadata()
    const mean = async (left: number, top: number): Promise<[number, number]> => {
      const { data } = await sharp(body).extract({ left, top, width: 40, height: 40 }).removeAlpha().raw().toBuffer({ resolveWithObject: true })
      let r = 0
      let g = 0
      for (let i = 0; i < data.length; i += 3) {
        r += data[i] as number
        g += data[i + 1] as number
      }
      return [r / (data.length / 3), g / (data.length / 3)]
    }
    return { centre: await mean(Math.floor(width / 2) - 20, Math.floor(height / 2) - 20), corner: await mean(0, 0), width }
  }

  it('marks the original, every variant, HEAD/GET pairs and Ranges alike; clean bytes are never sent', async () => {
    const original = await get('/marked/grey.jpg')
    assert.equal(original.status, 200)
    assert.ok(!original.body.equals(grey), 'not the clean original')
    for (const body of [original.body, (await get('/marked/grey.jpg?w=400&fmt=png')).body, (await get('/marked/grey.jpg?w=600&fmt=webp')).body]) {
      const { centre, corner } = await sample(body)
      assert.ok(centre[0] - centre[1] > 40, `red mark in the centre: ${centre}`)
      assert.ok(Math.abs(corner[0] - corner[1]) < 15, `corner untouched: ${corner}`)
    }
    const head = await get('/marked/grey.jpg', {}, 'HEAD')
    assert.equal(head.headers['content-length'], String(original.body.length))
    assert.equal(head.headers.etag, original.headers.etag)
    const part = await get('/marked/grey.jpg', { range: 'bytes=0-99' })
    assert.equal(part.status, 206)
    assert.ok(part.body.equals(original.body.subarray(0, 100)), 'a Range is of the marked bytes')
    assert.equal((await get('/marked/grey.jpg', { 'if-none-match': String(original.headers.etag) })).status, 304)
    assert.equal((await get('/marked/grey.jpg?v=1')).body.equals(original.body), true, 'a cache buster gets the marked original')
  })

  it('marks the original on the S3 API too (GetObject gets the marked bytes)', async () => {
    const client = new S3Client({
      endpoint: proxy.proxy.s3Url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: S3_READER.id, secretAccessKey: S3_READER.secret },
    })
    try {
      const viaHttp = await get('/marked/grey.jpg')
      const object = await client.send(new GetObjectCommand({ Bucket: 'marked', Key: 'grey.jpg' }))
      const bytes = Buffer.from(await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray())
      assert.ok(!bytes.equals(grey), 'not the clean original')
      assert.ok(bytes.equals(viaHttp.body), 'the same marked bytes as the HTTP path')
      assert.equal(object.ETag, viaHttp.headers.etag)
    } finally {
      client.destroy()
    }
  })

  it('never serves a marked key clean: no text for the mark is a 403, an untyped image is marked, an image it cannot mark is a 415', async () => {
    const missing = await get('/marked/user/u.jpg')
    assert.equal(missing.status, 403)
    assert.equal(JSON.parse(missing.body.toString()).error.code, 'IMAGE_WATERMARK_EMPTY')
    const named = await get('/marked/user/u.jpg', { 'x-user': 'alice' })
    assert.equal(named.status, 200)
    assert.ok((await sample(named.body)).centre[0] > 150, 'marked with the header value')
    const untyped = await get('/marked/raw/octet.bin')
    assert.equal(untyped.status, 200)
    assert.ok(!untyped.body.equals(grey), 'not the clean bytes')
    const { centre } = await sample(untyped.body)
    assert.ok(centre[0] - centre[1] > 40, `an image under a generic type is marked: ${centre}`)
    const bmp = await get('/marked/raw/pic.bmp')
    assert.equal(bmp.status, 415)
    assert.equal((await get('/marked/raw/notes.bin')).body.toString(), 'plain bytes, not an image at all')
  })

  it('serves objects no rule marks, and non-images, as they are', async () => {
    const text = await get('/marked/docs/readme.txt')
    assert.equal(text.body.toString(), 'not an image')
  })

  it('makes a mark that names the requester private', async () => {
    await s3.put('marked', 'personal/p.png', alpha, { ContentType: 'image/png' })
    const res = await get('/marked/personal/p.png')
    assert.equal(res.status, 200)
    assert.equal(res.headers['cache-control'], 'private', JSON.stringify(res.headers))
    const { centre } = await sample(res.body)
    assert.ok(centre[1] > 150, `green mark: ${centre}`)
  })
})
