// The renderer against real images made by sharp (and two crafted by hand: a 16-bit TIFF, which
// sharp's TIFF writer would cast to 8 bits, and a PNG bomb): each output is decoded and checked.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { crc32, deflateSync } from 'node:zlib'
import sharp from 'sharp'
import type { ImageFormat, ImagesConfig } from '../config/representations-schema.ts'
import { ProxyError } from '../errors.ts'
import { Metrics } from '../telemetry/metrics.ts'
import type { ImageParams } from './params.ts'
import { ImageRenderer, type RenderJob } from './render.ts'

function config(overrides: Partial<ImagesConfig> = {}): ImagesConfig {
  return {
    presets: {},
    allow_arbitrary: true,
    max_width: 4096,
    max_height: 4096,
    default_quality: 80,
    max_input_pixels: 50_000_000,
    max_input_bytes: 50 * 1024 * 1024,
    max_frames: 100,
    formats: ['avif', 'webp', 'jpeg', 'png'],
    signing_keys: null,
    max_concurrent: 2,
    max_queue: 8,
    render_timeout_ms: 30_000,
    svg: false,
    ...overrides,
  }
}

function job(format: ImageFormat, params: Partial<ImageParams> = {}, extra: Partial<RenderJob> = {}): RenderJob {
  return {
    params: { width: undefined, height: undefined, fit: 'cover', format, quality: 80, preset: undefined, ...params },
    format,
    label: 'custom',
    ...extra,
  }
}

async function refused(promise: Promise<unknown>, code: string, reason?: RegExp): Promise<ProxyError> {
  const err = await promise.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e
  )
  assert.ok(err instanceof ProxyError, String(err))
  assert.equal(err.code, code, err.reason)
  if (reason !== undefined) assert.match(err.reason ?? '', reason)
  return err
}

async function pixel(bytes: Buffer, x: number, y: number): Promise<number[]> {
  const { data, info } = await sharp(bytes).ensureAlpha().raw().toBuffer({ resolveWithObject: true })
  const i = (y * info.width + x) * 4
  return [...data.subarray(i, i + 4)]
}

const near = (actual: number[], expected: number[], tolerance = 12) =>
  assert.ok(
    actual.every((v, i) => Math.abs(v - (expected[i] as number)) <= tolerance),
    `${actual} is not near ${expected}`
  )

/** 200 x 100, red left half and blue right half, EXIF orientation 6 (rotate 90° clockwise to view), a camera name and GPS. */
async function orientedJpeg(): Promise<Buffer> {
  const raw = Buffer.alloc(200 * 100 * 3)
  for (let y = 0; y < 100; y++) {
    for (let x = 0; x < 200; x++) raw.set(x < 100 ? [255, 0, 0] : [0, 0, 255], (y * 200 + x) * 3)
  }
  return sharp(raw, { raw: { width: 200, height: 100, channels: 3 } })
    .jpeg({ quality: 95 })
    .withExif({ IFD0: { Make: 'SecretCam' }, IFD3: { GPSLatitudeRef: 'N', GPSLongitudeRef: 'E' } })
    .withMetadata({ orientation: 6 })
    .toBuffer()
}

/** An uncompressed RGB TIFF with 16 bits per sample, every pixel (65535, 0, 32768). */
function tiff16(width: number, height: number): Buffer {
  const entries: Array<[tag: number, type: number, count: number, value: number]> = []
  const dataOffset = 8 + 2 + 10 * 12 + 4 + 6
  entries.push([256, 3, 1, width], [257, 3, 1, height], [258, 3, 3, 8 + 2 + 10 * 12 + 4], [259, 3, 1, 1], [262, 3, 1, 2])
  entries.push([273, 4, 1, dataOffset], [277, 3, 1, 3], [278, 3, 1, height], [279, 4, 1, width * height * 6], [284, 3, 1, 1])
  const out = Buffer.alloc(dataOffset + width * height * 6)
  out.write('II', 0, 'latin1')
  out.writeUInt16LE(42, 2)
  out.writeUInt32LE(8, 4)
  out.writeUInt16LE(entries.length, 8)
  entries.forEach(([tag, type, count, value], i) => {
    const at = 10 + i * 12
    out.writeUInt16LE(tag, at)
    out.writeUInt16LE(type, at + 2)
    out.writeUInt32LE(count, at + 4)
    if (type === 3 && count === 1) out.writeUInt16LE(value, at + 8)
    else out.writeUInt32LE(value, at + 8)
  })
  const bits = 8 + 2 + 10 * 12 + 4
  for (let i = 0; i < 3; i++) out.writeUInt16LE(16, bits + i * 2)
  for (let p = 0; p < width * height; p++) {
    out.writeUInt16LE(65535, dataOffset + p * 6)
    out.writeUInt16LE(0, dataOffset + p * 6 + 2)
    out.writeUInt16LE(32768, dataOffset + p * 6 + 4)
  }
  return out
}

/** A PNG of ~16 kB that claims 50,000 x 50,000 RGB pixels (7.5 GB decoded): its IDAT holds deflated zero rows. */
function pngBomb(): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8)
    head.writeUInt32BE(data.length, 0)
    head.write(type, 4, 'latin1')
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0)
    return Buffer.concat([head, data, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(50_000, 0)
  ihdr.writeUInt32BE(50_000, 4)
  ihdr.set([8, 2, 0, 0, 0], 8)
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(16 << 20), { level: 9 })), chunk('IEND', Buffer.alloc(0))])
}

/** A 12 MP JPEG with fine detail, so that encoders have real work (about 0.1-1 s per render). */
async function bigJpeg(): Promise<Buffer> {
  const W = 4000
  const H = 3000
  const raw = Buffer.alloc(W * H * 3)
  let s = 1
  for (let i = 0; i < raw.length; i += 3) {
    s = (s * 1103515245 + 12345) & 0x7fffffff
    const n = (s >> 16) & 63
    raw[i] = ((i / 3) % W) % 256 ^ n
    raw[i + 1] = Math.floor(i / 3 / W) % 256 ^ n
    raw[i + 2] = n * 4
  }
  return sharp(raw, { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 92 }).toBuffer()
}

let photo: Buffer
let alphaPng: Buffer
let gif: Buffer
let big: Buffer
before(async () => {
  photo = await orientedJpeg()
  alphaPng = await sharp({ create: { width: 300, height: 200, channels: 4, background: { r: 0, g: 128, b: 0, alpha: 0.5 } } })
    .png()
    .toBuffer()
  const frames = await Promise.all(
    ['#ff0000', '#00ff00', '#0000ff'].map((c) => sharp({ create: { width: 40, height: 30, channels: 3, background: c } }).png().toBuffer())
  )
  gif = await sharp(frames, { join: { animated: true } }).gif({ delay: 100, loop: 0 }).toBuffer()
  big = await bigJpeg()
})

describe('ImageRenderer outputs', () => {
  const renderer = new ImageRenderer('media', config(), undefined)

  it('renders every output format at the asked size, decodable as that format', async () => {
    const decoded: Record<ImageFormat, string> = { avif: 'heif', webp: 'webp', jpeg: 'jpeg', png: 'png' }
    const contentTypes: Record<ImageFormat, string> = { avif: 'image/avif', webp: 'image/webp', jpeg: 'image/jpeg', png: 'image/png' }
    for (const format of ['avif', 'webp', 'jpeg', 'png'] as const) {
      const out = await renderer.render(alphaPng, job(format, { width: 150 }))
      const meta = await sharp(out.bytes).metadata()
      assert.equal(meta.format, decoded[format], format)
      assert.deepEqual([meta.width, meta.height, out.width, out.height], [150, 100, 150, 100], format)
      assert.equal(out.contentType, contentTypes[format])
      assert.equal(out.format, format)
    }
  })
  it('crops to both dimensions with cover and fits inside with inside', async () => {
    const cover = await renderer.render(alphaPng, job('png', { width: 100, height: 100, fit: 'cover' }))
    assert.deepEqual([cover.width, cover.height], [100, 100])
    const inside = await renderer.render(alphaPng, job('png', { width: 100, height: 100, fit: 'inside' }))
    assert.deepEqual([inside.width, inside.height], [100, 67])
  })
  it('applies the EXIF orientation and strips EXIF and GPS', async () => {
    const source = await sharp(photo).metadata()
    assert.equal(source.orientation, 6)
    assert.ok(photo.includes('SecretCam'))
    for (const format of ['jpeg', 'webp', 'avif', 'png'] as const) {
      const out = await renderer.render(photo, job(format))
      assert.deepEqual([out.width, out.height], [100, 200], format)
      const meta = await sharp(out.bytes).metadata()
      assert.equal(meta.exif, undefined, format)
      assert.equal(meta.orientation, undefined, format)
      assert.equal(meta.icc, undefined, format)
      assert.ok(!out.bytes.includes('SecretCam') && !out.bytes.includes('Exif'), format)
      // Turned clockwise: the red left half is now on top.
      near((await pixel(out.bytes, 50, 20)).slice(0, 3), [255, 0, 0], 40)
      near((await pixel(out.bytes, 50, 180)).slice(0, 3), [0, 0, 255], 40)
    }
    const thumb = await renderer.render(photo, job('jpeg', { width: 50 }))
    assert.deepEqual([thumb.width, thumb.height], [50, 100])
  })
  it('keeps alpha in png, webp and avif', async () => {
    for (const format of ['png', 'webp', 'avif'] as const) {
      const out = await renderer.render(alphaPng, job(format, { width: 30 }))
      assert.equal((await sharp(out.bytes).metadata()).hasAlpha, true, format)
      near(await pixel(out.bytes, 10, 10), [0, 128, 0, 128], 12)
    }
  })
  it('never enlarges: a 320 px render of a 300 px image stays 300 px', async () => {
    const out = await renderer.render(alphaPng, job('webp', { width: 320 }))
    assert.deepEqual([out.width, out.height], [300, 200])
  })
  it('keeps the animation of a GIF in WebP and answers the first frame otherwise', async () => {
    assert.equal((await sharp(gif).metadata()).pages, 3)
    const webp = await renderer.render(gif, job('webp', { width: 20 }))
    const webpMeta = await sharp(webp.bytes, { animated: true }).metadata()
    assert.deepEqual([webpMeta.pages, webpMeta.width, webpMeta.pageHeight, webp.height], [3, 20, 15, 15])
    for (const format of ['png', 'jpeg', 'avif'] as const) {
      const out = await renderer.render(gif, job(format, { width: 20 }))
      const meta = await sharp(out.bytes).metadata()
      assert.deepEqual([meta.pages ?? 1, meta.width, meta.height], [1, 20, 15], format)
      near((await pixel(out.bytes, 10, 7)).slice(0, 3), [255, 0, 0], 40)
    }
  })
  it('renders a 16-bit TIFF to 8-bit web formats with the right colours', async () => {
    const source = tiff16(64, 48)
    assert.deepEqual([(await sharp(source).metadata()).depth, (await sharp(source).metadata()).format], ['ushort', 'tiff'])
    for (const format of ['png', 'jpeg', 'webp'] as const) {
      const out = await renderer.render(source, job(format, { width: 32 }))
      const meta = await sharp(out.bytes).metadata()
      assert.deepEqual([meta.depth, meta.width, meta.height], ['uchar', 32, 24], format)
      near((await pixel(out.bytes, 5, 5)).slice(0, 3), [255, 0, 128], format === 'png' ? 1 : 12)
    }
  })
  it('asks for overlays at the final size and composites them', async () => {
    const sizes: Array<[number, number]> = []
    const out = await renderer.render(
      photo,
      job('png', { width: 50 }, {
        overlays: async (width, height) => {
          sizes.push([width, height])
          const mark = await sharp({ create: { width: 10, height: 10, channels: 4, background: '#ffffff' } }).png().toBuffer()
          return [{ input: mark, top: height - 10, left: width - 10 }]
        },
      })
    )
    assert.deepEqual(sizes, [[50, 100]])
    assert.deepEqual([out.width, out.height], [50, 100])
    near((await pixel(out.bytes, 45, 95)).slice(0, 3), [255, 255, 255], 2)
    near((await pixel(out.bytes, 25, 80)).slice(0, 3), [0, 0, 255], 40)
  })
})

describe('ImageRenderer refusals', () => {
  it('refuses a decompression bomb with 422 before decoding, without growing the process', async () => {
    const bomb = pngBomb()
    assert.ok(bomb.length < 100_000, `${bomb.length} bytes`)
    const meta = await sharp(bomb, { limitInputPixels: false }).metadata()
    assert.deepEqual([meta.width, meta.height], [50_000, 50_000])
    const renderer = new ImageRenderer('media', config(), undefined)
    const rss = process.memoryUsage().rss
    const started = performance.now()
    for (const format of ['png', 'webp', 'avif', 'jpeg'] as const) {
      await refused(renderer.render(bomb, job(format, { width: 100 })), 'IMAGE_UNPROCESSABLE', /^too_many_pixels: 50000x50000, over max_input_pixels \(50000000\)/)
    }
    assert.ok(performance.now() - started < 2000, 'refused from the header, not by decoding')
    const grown = process.memoryUsage().rss - rss
    assert.ok(grown < 200 * 1024 * 1024, `RSS grew by ${Math.round(grown / 1024 / 1024)} MB`)
  })
  it('refuses more pixels than max_input_pixels, counting every frame it would decode', async () => {
    const renderer = new ImageRenderer('media', config({ max_input_pixels: 40 * 30 * 2 }), undefined)
    await refused(renderer.render(gif, job('webp')), 'IMAGE_UNPROCESSABLE', /^too_many_pixels: 40x30x3/)
    // The first frame alone is within the limit.
    assert.equal((await renderer.render(gif, job('png'))).width, 40)
  })
  it('refuses more frames than max_frames', async () => {
    const renderer = new ImageRenderer('media', config({ max_frames: 2 }), undefined)
    await refused(renderer.render(gif, job('png')), 'IMAGE_UNPROCESSABLE', /^too_many_frames: 3, over max_frames \(2\)/)
  })
  it('refuses an input over max_input_bytes', async () => {
    const renderer = new ImageRenderer('media', config({ max_input_bytes: 1000 }), undefined)
    await refused(renderer.render(photo, job('png')), 'IMAGE_UNPROCESSABLE', /^input_too_large: \d+ bytes, over max_input_bytes \(1000\)/)
  })
  it('answers 422 for bytes that are not an image, and for a truncated JPEG', async () => {
    const renderer = new ImageRenderer('media', config(), undefined)
    await refused(renderer.render(Buffer.from('<html>not an image</html>'), job('png')), 'IMAGE_UNPROCESSABLE', /^undecodable/)
    await refused(renderer.render(Buffer.alloc(0), job('png')), 'IMAGE_UNPROCESSABLE', /^undecodable/)
    const noise = Buffer.alloc(4096)
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919) % 251
    await refused(renderer.render(noise, job('webp')), 'IMAGE_UNPROCESSABLE', /^undecodable/)
    const truncated = big.subarray(0, Math.floor(big.length / 2))
    await refused(renderer.render(truncated, job('webp', { width: 100 })), 'IMAGE_UNPROCESSABLE', /^undecodable/)
  })
  it('refuses SVG bytes unless the bucket allows SVG, whatever the Content-Type said', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20" fill="#f00"/></svg>')
    await refused(new ImageRenderer('media', config(), undefined).render(svg, job('png')), 'IMAGE_UNPROCESSABLE', /^unsupported_input: svg/)
    const out = await new ImageRenderer('media', config({ svg: true }), undefined).render(svg, job('png', { width: 80 }))
    // No enlargement applies to vector input too: it renders at its own size.
    assert.deepEqual([out.width, out.height], [40, 20])
    near((await pixel(out.bytes, 20, 10)).slice(0, 3), [255, 0, 0], 2)
  })
})

describe('SVG input fetches nothing', () => {
  let hits = 0
  const server = createServer((_req, res) => {
    hits++
    res.writeHead(200, { 'content-type': 'image/png' }).end()
  })
  let dir: string
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    dir = await mkdtemp(join(tmpdir(), 'svg-'))
  })
  after(async () => {
    server.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('loads no http, file or relative image, stylesheet, use or xinclude', async () => {
    const { port } = server.address() as AddressInfo
    const green = join(dir, 'green.png')
    await writeFile(green, await sharp({ create: { width: 100, height: 100, channels: 3, background: '#00ff00' } }).png().toBuffer())
    await writeFile(join(dir, 'secret.txt'), 'SECRET TEXT SECRET TEXT')
    const svg = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
  xmlns:xi="http://www.w3.org/2001/XInclude" width="100" height="100">
  <rect width="100" height="100" fill="#000000"/>
  <image x="0" y="0" width="50" height="50" href="http://127.0.0.1:${port}/a.png"/>
  <image x="50" y="0" width="50" height="50" xlink:href="file://${green}"/>
  <image x="0" y="50" width="50" height="50" xlink:href="green.png"/>
  <use x="50" y="50" xlink:href="http://127.0.0.1:${port}/shapes.svg#square"/>
  <text x="0" y="100" font-size="40" fill="#ffffff"><xi:include href="file://${dir}/secret.txt" parse="text"/></text>
  <style>@import url("http://127.0.0.1:${port}/style.css");</style>
</svg>`)
    const renderer = new ImageRenderer('media', config({ svg: true }), undefined)
    const out = await renderer.render(svg, job('png'))
    assert.equal(hits, 0)
    // Every quadrant is still the black background: nothing was drawn from outside.
    const { data } = await sharp(out.bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true })
    assert.ok(data.every((v) => v === 0), 'only black pixels')
    // Control: the same text written inline is drawn, so an included file would have shown.
    const inline = Buffer.from(svg.toString().replace(/<xi:include[^>]*>/, 'SECRET TEXT'))
    const drawn = await sharp((await renderer.render(inline, job('png'))).bytes).removeAlpha().raw().toBuffer()
    assert.ok(drawn.some((v) => v !== 0), 'inline text is drawn')
  })
  it('refuses external entities: the document does not parse (422), nothing is fetched', async () => {
    const { port } = server.address() as AddressInfo
    const svg = Buffer.from(`<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY remote SYSTEM "http://127.0.0.1:${port}/entity"><!ENTITY local SYSTEM "file://${dir}/secret.txt">]>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><text x="10" y="50">&remote;&local;</text></svg>`)
    const renderer = new ImageRenderer('media', config({ svg: true }), undefined)
    await refused(renderer.render(svg, job('png')), 'IMAGE_UNPROCESSABLE', /^undecodable: .*Entity/)
    assert.equal(hits, 0)
  })
})

describe('ImageRenderer bounds', () => {
  it('answers 503 IMAGE_BUSY with Retry-After when the queue is full, and counts it', async () => {
    const metrics = new Metrics()
    const renderer = new ImageRenderer('media', config({ max_concurrent: 1, max_queue: 1 }), metrics)
    const first = renderer.render(big, job('avif', { width: 640 }))
    const second = renderer.render(big, job('avif', { width: 640 }))
    assert.equal(renderer.queueDepth, 1)
    const busy = await refused(renderer.render(big, job('avif', { width: 640 })), 'IMAGE_BUSY', /queue_full/)
    assert.deepEqual(busy.headers, { 'Retry-After': '1' })
    assert.equal(busy.status, 503)
    const [a, b] = await Promise.all([first, second])
    assert.deepEqual([a.width, b.width], [640, 640])
    assert.equal(renderer.queueDepth, 0)
    const counts = Object.fromEntries((await metrics.imageRenders.get()).values.map((v) => [v.labels.result, v.value]))
    assert.deepEqual(counts, { ok: 2, busy: 1 })
    const depth = (await metrics.imageQueueDepth.get()).values
    assert.deepEqual(depth.map((v) => [v.labels.bucket, v.value]), [['media', 0]])
    const duration = (await metrics.imageRenderDuration.get()).values.find((v) => v.metricName === 'image_render_duration_seconds_count')
    assert.equal(duration?.value, 2)
  })
  it('leaves the queue when the waiting request is aborted', async () => {
    const renderer = new ImageRenderer('media', config({ max_concurrent: 1, max_queue: 1 }), undefined)
    const first = renderer.render(big, job('webp', { width: 640 }))
    const abort = new AbortController()
    const waiting = renderer.render(big, job('webp', { width: 640 }), abort.signal)
    assert.equal(renderer.queueDepth, 1)
    abort.abort(new Error('client gone'))
    await assert.rejects(waiting, /client gone/)
    assert.equal(renderer.queueDepth, 0)
    // The freed place in the queue is usable at once.
    const third = renderer.render(big, job('webp', { width: 64 }))
    assert.equal(renderer.queueDepth, 1)
    assert.deepEqual([(await first).width, (await third).width], [640, 64])
  })
  it('answers IMAGE_RENDER_TIMEOUT past render_timeout_ms and holds the slot until libvips is done', async () => {
    const metrics = new Metrics()
    const renderer = new ImageRenderer('media', config({ max_concurrent: 1, max_queue: 0, render_timeout_ms: 30 }), metrics)
    await refused(renderer.render(big, job('avif', { width: 2000 })), 'IMAGE_RENDER_TIMEOUT')
    // The abandoned render still occupies its slot: the next one finds no room.
    await refused(renderer.render(big, job('png', { width: 10 })), 'IMAGE_BUSY')
    const counts = Object.fromEntries((await metrics.imageRenders.get()).values.map((v) => [v.labels.result, v.value]))
    assert.deepEqual(counts, { timeout: 1, busy: 1 })
  })
})
