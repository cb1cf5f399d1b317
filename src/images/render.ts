// Renders one image variant with sharp (libvips, on libuv's thread pool: never the event loop),
// bounded and defensive:
//
//   admission    max_concurrent renders run, max_queue wait in order; past that IMAGE_BUSY (503,
//                Retry-After: 1) at once. A slot is held until libvips has really finished, even
//                after the caller stopped waiting (timeout), so the bound is the real CPU bound.
//   inspection   input bytes <= max_input_bytes; sharp's metadata() reads only the header, so a
//                bomb (a small PNG claiming 50,000 x 50,000) is refused before any pixel is decoded:
//                width x height x frames decoded <= max_input_pixels, frames <= max_frames, and
//                the bytes must be JPEG, PNG, WebP, AVIF, GIF, TIFF, or SVG when the bucket allows
//                it (whatever the Content-Type claimed). Anything undecodable: 422.
//   rendering    limitInputPixels again (defence in depth), sequentialRead, failOn 'error' (a
//                truncated or corrupt body is a 422, not a grey half-image), .rotate() applies EXIF
//                orientation, never withMetadata: EXIF, GPS, XMP and ICC are dropped (pixels are
//                converted to 8-bit sRGB). No enlargement (a 320 px thumb of a 100 px image stays
//                100 px). sharp's own timeout plus a timer of render_timeout_ms: IMAGE_RENDER_TIMEOUT.
//   animation    kept only for WebP output from an animated GIF or WebP (and no overlays); every
//                other output is the first frame. libheif's AVIF encoder writes still images only.
//   SVG          librsvg renders from a buffer with no base location, so it loads no external
//                resource (no http:, no file:, no relative href); see images.test.ts.
import sharp, { type OverlayOptions, type Sharp } from 'sharp'
import type { ImageFormat, ImagesConfig } from '../config/representations-schema.ts'
import { ProxyError } from '../errors.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import { contentTypeOf } from './negotiate.ts'
import type { ImageParams } from './params.ts'

export interface RenderJob {
  params: ImageParams
  format: ImageFormat
  /** Overlays for the output's final size (watermarks); called once the output size is known. */
  overlays?: (width: number, height: number) => Promise<OverlayOptions[]>
  /** For metrics: the preset name, 'custom' or 'original'. */
  label: string
}

export interface Rendered {
  bytes: Buffer
  format: ImageFormat
  contentType: string
  width: number
  height: number
}

/** The decoders libvips may run on a body, by metadata().format. */
const DECODERS: ReadonlySet<string> = new Set(['jpeg', 'png', 'webp', 'heif', 'gif', 'tiff'])
const ANIMATED: ReadonlySet<string> = new Set(['gif', 'webp'])
/** Effort 2 of 9: for a 12 MP JPEG to 640 px, effort 4 (sharp's default) took ~7x longer for ~4% fewer bytes. */
const AVIF_EFFORT = 2
// libvips' operation cache keeps up to 50 MB of decoded images between renders; each variant is
// rendered once and then served from the proxy's own cache, so it would only hold memory.
sharp.cache(false)

type Result = 'ok' | 'busy' | 'timeout' | 'unprocessable' | 'error'

export class ImageRenderer {
  readonly #bucket: string
  readonly #cfg: ImagesConfig
  readonly #metrics: Metrics | undefined
  #running = 0
  readonly #waiting: Array<() => void> = []

  constructor(bucket: string, cfg: ImagesConfig, metrics: Metrics | undefined) {
    this.#bucket = bucket
    this.#cfg = cfg
    this.#metrics = metrics
  }

  get queueDepth(): number {
    return this.#waiting.length
  }

  /**
   * Bounded: max_concurrent renders run, max_queue wait; past that ProxyError IMAGE_BUSY with
   * Retry-After: 1. An abort while waiting leaves the queue; a render already running finishes.
   */
  async render(source: Uint8Array | (() => Promise<Uint8Array>), job: RenderJob, signal?: AbortSignal): Promise<Rendered> {
    if (source instanceof Uint8Array && source.byteLength > this.#cfg.max_input_bytes) {
      this.#count(job, 'unprocessable')
      throw unprocessable(`input_too_large: ${source.byteLength} bytes, over max_input_bytes (${this.#cfg.max_input_bytes})`)
    }
    signal?.throwIfAborted()
    if (this.#running >= this.#cfg.max_concurrent) {
      if (this.#waiting.length >= this.#cfg.max_queue) {
        this.#count(job, 'busy')
        throw new ProxyError('IMAGE_BUSY', { reason: 'queue_full', headers: { 'Retry-After': '1' } })
      }
      await this.#wait(signal)
    } else this.#running++
    // A source given as a function is read in the slot: at most max_concurrent originals are held
    // in memory for rendering, however many requests wait (or are refused) for one.
    let input: Uint8Array
    try {
      input = source instanceof Uint8Array ? source : await source()
    } catch (err) {
      this.#release()
      throw err
    }
    if (input.byteLength > this.#cfg.max_input_bytes) {
      this.#release()
      this.#count(job, 'unprocessable')
      throw unprocessable(`input_too_large: ${input.byteLength} bytes, over max_input_bytes (${this.#cfg.max_input_bytes})`)
    }
    const started = performance.now()
    const work = this.#renderNow(input, job)
    // The slot frees when libvips is done, not when the caller gives up on it.
    void work.then(this.#release, this.#release)

    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ProxyError('IMAGE_RENDER_TIMEOUT', { reason: `over ${this.#cfg.render_timeout_ms} ms` })), this.#cfg.render_timeout_ms)
    })
    try {
      const rendered = await Promise.race([work, deadline])
      this.#metrics?.imageRenderDuration.observe({ bucket: this.#bucket, format: job.format }, (performance.now() - started) / 1000)
      this.#count(job, 'ok')
      return rendered
    } catch (err) {
      this.#count(job, resultOf(err))
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  /** A finished render hands its slot straight to the next in line, so nobody can jump the queue. */
  #release = (): void => {
    const next = this.#waiting.shift()
    if (next === undefined) this.#running--
    else {
      this.#gauge()
      next()
    }
  }

  #wait(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const at = this.#waiting.indexOf(admit)
        if (at !== -1) this.#waiting.splice(at, 1)
        this.#gauge()
        reject(signal?.reason)
      }
      const admit = () => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiting.push(admit)
      this.#gauge()
    })
  }

  async #renderNow(input: Uint8Array, job: RenderJob): Promise<Rendered> {
    const cfg = this.#cfg
    if (input.byteLength === 0) throw unprocessable('undecodable: empty body')
    // Header only, so no pixel limit here: the limits below give the precise reason.
    const meta = await sharp(input, { failOn: 'error', limitInputPixels: false })
      .metadata()
      .catch((err: unknown) => {
        throw unprocessable(`undecodable: ${messageOf(err)}`, err)
      })
    const format = meta.format as string | undefined
    if (format === 'svg' ? !cfg.svg : !DECODERS.has(format ?? '')) throw unprocessable(`unsupported_input: ${format ?? 'unknown'}`)
    const pages = meta.pages ?? 1
    if (pages > cfg.max_frames) throw unprocessable(`too_many_frames: ${pages}, over max_frames (${cfg.max_frames})`)
    const animated = job.format === 'webp' && pages > 1 && ANIMATED.has(format ?? '') && job.overlays === undefined
    const width = meta.width ?? 0
    const height = meta.pageHeight ?? meta.height ?? 0
    const pixels = width * height * (animated ? pages : 1)
    if (width === 0 || height === 0) throw unprocessable('undecodable: no dimensions')
    if (pixels > cfg.max_input_pixels) {
      throw unprocessable(`too_many_pixels: ${width}x${height}${animated ? `x${pages}` : ''}, over max_input_pixels (${cfg.max_input_pixels})`)
    }

    const seconds = Math.max(1, Math.ceil(cfg.render_timeout_ms / 1000))
    let pipeline = sharp(input, {
      limitInputPixels: cfg.max_input_pixels,
      sequentialRead: true,
      failOn: 'error',
      animated,
    })
      .timeout({ seconds })
      .rotate()
    const { width: w, height: h, fit } = job.params
    if (w !== undefined || h !== undefined) pipeline = pipeline.resize({ width: w, height: h, fit, withoutEnlargement: true })
    pipeline = pipeline.toColourspace('srgb')

    if (job.overlays === undefined) {
      const out = await encode(pipeline, job).toBuffer({ resolveWithObject: true }).catch(failed)
      return rendered(out.data, job.format, out.info.width, out.info.pageHeight ?? out.info.height)
    }
    // Overlays need the final size: decode and resize to raw pixels, then composite and encode.
    const raw = await pipeline.raw().toBuffer({ resolveWithObject: true }).catch(failed)
    const overlays = await job.overlays(raw.info.width, raw.info.height)
    const composed = sharp(raw.data, { raw: { width: raw.info.width, height: raw.info.height, channels: raw.info.channels } })
      .timeout({ seconds })
      .composite(overlays)
    const out = await encode(composed, job).toBuffer({ resolveWithObject: true }).catch(failedInternal)
    return rendered(out.data, job.format, out.info.width, out.info.height)
  }

  #count(job: RenderJob, result: Result): void {
    this.#metrics?.imageRenders.inc({ bucket: this.#bucket, preset: job.label, format: job.format, result })
  }

  #gauge(): void {
    this.#metrics?.imageQueueDepth.set({ bucket: this.#bucket }, this.#waiting.length)
  }
}

function encode(pipeline: Sharp, job: RenderJob): Sharp {
  const quality = job.params.quality
  switch (job.format) {
    case 'avif':
      return pipeline.avif({ quality, effort: AVIF_EFFORT })
    case 'webp':
      return pipeline.webp({ quality, effort: 4 })
    case 'jpeg':
      return pipeline.jpeg({ quality, mozjpeg: true })
    case 'png':
      return pipeline.png({ compressionLevel: 6 })
  }
}

function rendered(bytes: Buffer, format: ImageFormat, width: number, height: number): Rendered {
  return { bytes, format, contentType: contentTypeOf(format), width, height }
}

/** A libvips failure while decoding and resizing: the input's fault (422), or the timeout. */
function failed(err: unknown): never {
  if (isTimeout(err)) throw new ProxyError('IMAGE_RENDER_TIMEOUT', { reason: 'libvips timeout', cause: err })
  throw unprocessable(`undecodable: ${messageOf(err)}`, err)
}

/** A failure after the pixels were decoded (composite, encode): ours, not the input's. */
function failedInternal(err: unknown): never {
  if (isTimeout(err)) throw new ProxyError('IMAGE_RENDER_TIMEOUT', { reason: 'libvips timeout', cause: err })
  throw err
}

function isTimeout(err: unknown): boolean {
  return err instanceof Error && /^timeout\b/i.test(err.message)
}

function unprocessable(reason: string, cause?: unknown): ProxyError {
  return new ProxyError('IMAGE_UNPROCESSABLE', cause === undefined ? { reason } : { reason, cause })
}

function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n', 1)[0]?.slice(0, 160) ?? ''
}

function resultOf(err: unknown): Result {
  if (!(err instanceof ProxyError)) return 'error'
  if (err.code === 'IMAGE_RENDER_TIMEOUT') return 'timeout'
  if (err.code === 'IMAGE_UNPROCESSABLE') return 'unprocessable'
  return 'error'
}
