// represent: the representations the proxy makes of an object, image variants (resized,
// re-encoded, watermarked) and compressed text, cached like objects under keys derived from the
// object's key, its ETag and the normalized parameters, so a changed original never serves an old
// representation. Runs in serve's place; a bucket with none of images, watermark or compression
// goes straight to serve.
//
//   image parameters, or a        the object's current version (fresh cache entry, else a HEAD)
//   watermark rule on the key     decides: not an image -> 415 (parameters) or the object as it is
//                                 (a rule alone); a cached variant is answered like an object (Range,
//                                 304, HEAD by its own strong ETag); else the original is read whole
//                                 (through the cache), rendered once per variant at a time, stored,
//                                 answered. With `apply: all` the original itself is a variant: the
//                                 clean bytes are never sent for a key a rule marks.
//   compression                   a Range, an Accept-Encoding that allows none of the encodings,
//                                 and objects that do not qualify get serve's answer (Vary added
//                                 when the object qualifies); otherwise the compressed variant.
//
// Variants live in the memory and disk tiers (as slices do): deleting or purging the object's key
// deletes them with it. They are fresh exactly while their original is: each request checks the
// original's version first, and the variant's key carries its ETag.
import { createHash } from 'node:crypto'
import { DERIVED_MARK } from '../cache/derived-keys.ts'
import { chooseEncoding, compressible } from '../compression/negotiate.ts'
import { compress } from '../compression/compress.ts'
import { ProxyError } from '../errors.ts'
import { sourceFormatOf, outputFormat } from '../images/negotiate.ts'
import { canonicalParams, readImageParams, type ImageParams } from '../images/params.ts'
import type { WatermarkContext, WatermarkPlan } from '../images/watermark.ts'
import type { ImageFormat } from '../config/representations-schema.ts'
import type { CachedObject } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { Answer, ObjectMeta, Representations } from '../types.ts'
import type { Exchange } from './exchange.ts'
import { answerEntry, currentVersion, wholeObject, type RepresentationOutcome, type WholeObject } from './serve.ts'

type Serve = (x: Exchange) => Answer | Promise<Answer>

export interface RepresentOptions {
  debugHeaders: boolean
  metrics: Metrics | undefined
  /**
   * The S3 API answers objects as stored: only watermarks apply there (a mark must not be
   * bypassed by another listener); image parameters and compression are the HTTP path's.
   */
  watermarksOnly: boolean
}

/** Renders and compressions in flight, by variant key: concurrent requests for one variant wait for one. */
const making = new Map<string, Promise<CachedObject>>()

export function represent(serveObject: Serve, options: RepresentOptions): Serve {
  return function represent(x) {
    const reps = x.matched.bucket.representations
    if (reps === null) return serveObject(x)
    const images = options.watermarksOnly ? null : reps.images
    const params = images === null ? undefined : readImageParams(x.target, images)
    const watermark = reps.watermark
    const plan = watermark === null ? undefined : watermark.marks.watermarkPlan(watermark.config, x.matched.key, watermarkContextOf(x))
    const marked = plan !== undefined && (params !== undefined || watermark?.config.apply === 'all')
    if (params !== undefined || marked) return imageAnswer(x, reps, params, marked ? plan : undefined, serveObject, options)
    if (reps.compression !== null && !options.watermarksOnly) return compressedAnswer(x, reps, serveObject, options)
    return serveObject(x)
  }
}

// ---------------------------------------------------------------------------------------------
// Images

async function imageAnswer(
  x: Exchange,
  reps: Representations,
  params: ImageParams | undefined,
  plan: WatermarkPlan | undefined,
  serveObject: Serve,
  options: RepresentOptions
): Promise<Answer> {
  const images = reps.images
  const renderer = reps.renderer
  // config/load.ts refuses a watermark without images: nothing else reaches here without them.
  if (images === null || renderer === null) return serveObject(x)
  const { bucket, key } = x.matched
  const tooLarge = () => new ProxyError('IMAGE_UNPROCESSABLE', { reason: `the original is over images.max_input_bytes (${images.max_input_bytes})` })
  let whole: WholeObject | undefined
  const version = (await currentVersion(x, key)) ?? (whole = await wholeObject(x, key, images.max_input_bytes, tooLarge))
  const source = sourceFormatOf(version.meta.contentType, images.svg)
  if (source === undefined) {
    if (params !== undefined) throw new ProxyError('IMAGE_NOT_AN_IMAGE', { reason: `content type ${version.meta.contentType ?? 'none'}` })
    // A watermark rule matched an object that is not an image: it is served as it is.
    return serveObject(x)
  }
  // A watermarked original keeps its own format (a browser asked for this file, not a conversion).
  const chosen = params === undefined ? { format: originalFormat(source), vary: false } : outputFormat(params.format, x.header('accept'), source, images.formats)
  const job: ImageParams = params ?? { width: undefined, height: undefined, fit: 'inside', format: chosen.format, quality: images.default_quality, preset: undefined }
  const label = params === undefined ? 'original' : (params.preset ?? 'custom')
  // Image marks are objects of the bucket too: their versions are part of the variant's identity.
  const markSources = new Map<string, WholeObject>()
  for (const markKey of plan?.sources ?? []) markSources.set(markKey, await wholeObject(x, markKey, images.max_input_bytes, tooLarge))
  const markVersions = [...markSources.values()].map((source) => source.meta.etag ?? '').join('+')
  const described = `${params === undefined ? 'original' : canonicalParams(params, chosen.format)}${plan === undefined ? '' : `,wm=${plan.fingerprint}${markVersions === '' ? '' : `@${markVersions}`}`}`
  x.representation = params === undefined ? 'watermarked original' : params.preset !== undefined ? `preset=${params.preset}` : canonicalParams(params, chosen.format)
  const headers: Record<string, string> = {}
  if (chosen.vary) headers.vary = 'Accept'
  // A mark naming the requester is theirs alone; one that changes every second is never stored.
  if (plan !== undefined && (plan.personal || !plan.cacheable)) headers['cache-control'] = plan.cacheable ? 'private' : 'private, no-store'

  const keep = bucket.cache !== null && version.freshUntil > Date.now() && (plan?.cacheable ?? true)
  const keyOf = (etag: string | undefined) => `${bucket.name}/${key}${DERIVED_MARK}image:${etag ?? ''}:${described}`
  const found = keep ? await lookupVariant(x, keyOf(version.meta.etag), version.freshUntil) : undefined
  if (found !== undefined) return withHeaders(await answerEntry(x, found.entry, found.outcome, options.debugHeaders), headers)

  const variantKey = keyOf(version.meta.etag)
  const entry = await once(variantKey, async () => {
    whole ??= await wholeObject(x, key, images.max_input_bytes, tooLarge)
    const span = x.span?.child('image.render', { 'yatagarasu.image.variant': described, 'yatagarasu.image.format': chosen.format })
    try {
      const rendered = await renderer.render(
        whole.bytes,
        {
          params: job,
          format: chosen.format,
          label,
          overlays:
            plan === undefined
              ? undefined
              : (width, height) =>
                  (reps.watermark as NonNullable<Representations['watermark']>).marks.watermarkOverlays(
                    plan,
                    width,
                    height,
                    async (markKey) => (markSources.get(markKey) ?? (await wholeObject(x, markKey, images.max_input_bytes, tooLarge))).bytes
                  ),
        },
        x.signal
      )
      span?.set({ 'yatagarasu.image.width': rendered.width, 'yatagarasu.image.height': rendered.height, 'yatagarasu.image.bytes': rendered.bytes.length })
      const made = variantEntry(whole, described, { contentType: rendered.contentType, contentEncoding: undefined }, rendered.bytes)
      // The original may have changed since its version was checked: the variant is of the bytes read.
      if (keep && whole.freshUntil > Date.now()) void bucket.cache?.store.local.set(keyOf(whole.meta.etag), made)
      return made
    } catch (err) {
      span?.fail(err)
      throw err
    } finally {
      span?.end()
    }
  })
  return withHeaders(await answerEntry(x, entry, { xCache: 'MISS', status: 'yatagarasu; fwd=miss; detail=image' + (keep ? '; stored' : '') }, options.debugHeaders), headers)
}

/** The output format of a watermarked original: its own, or PNG for one the encoders do not write (GIF, TIFF, SVG). */
function originalFormat(source: string): ImageFormat {
  return source === 'jpeg' || source === 'png' || source === 'webp' || source === 'avif' ? source : 'png'
}

function watermarkContextOf(x: Exchange): WatermarkContext {
  const query = x.target.indexOf('?')
  return {
    claims: x.principal?.claims,
    ip: x.clientIp,
    header: (name) => x.header(name),
    path: query === -1 ? x.target : x.target.slice(0, query),
    bucket: x.matched.bucket.name,
    now: new Date(),
  }
}

// ---------------------------------------------------------------------------------------------
// Compression

async function compressedAnswer(x: Exchange, reps: Representations, serveObject: Serve, options: RepresentOptions): Promise<Answer> {
  const compression = reps.compression
  if (compression === null) return serveObject(x)
  const { bucket, key } = x.matched
  const encoding = x.header('range') === undefined ? chooseEncoding(x.header('accept-encoding'), compression.offered) : undefined
  // The identity bytes: Vary still tells caches that another Accept-Encoding may get another body.
  if (encoding === undefined) {
    const answer = await serveObject(x)
    // A 304 carries no Content-Type (RFC 9110 §15.4.5): the object's version tells instead.
    const meta = answer.status === 304 ? (await currentVersion(x, key))?.meta : undefined
    return varyIfCompressible(answer, compression.config, meta)
  }
  // Compressed whole in memory: only what a cache entry may hold (or 64 MiB without a cache).
  const limit = bucket.cache?.maxItemBytes ?? 64 * 1024 * 1024
  let whole: WholeObject | undefined
  const tooLarge = () => new ProxyError('INTERNAL_ERROR', { reason: 'compression source over its limit' })
  const version = (await currentVersion(x, key)) ?? (whole = await wholeObject(x, key, Number.MAX_SAFE_INTEGER, tooLarge))
  // `no-transform` (RFC 9111 §5.2.2.6): the origin asked intermediaries to send the bytes as stored.
  const noTransform = /(^|,)\s*no-transform\s*(,|$)/i.test(version.meta.cacheControl ?? '')
  if (!compressible(compression.config, version.meta) || version.meta.size > limit || noTransform) return serveObject(x)
  x.representation = `encoding=${encoding}`
  const headers = { vary: 'Accept-Encoding' }
  const keep = bucket.cache !== null && version.freshUntil > Date.now()
  const keyOf = (etag: string | undefined) => `${bucket.name}/${key}${DERIVED_MARK}encoding:${etag ?? ''}:${encoding}`
  const found = keep ? await lookupVariant(x, keyOf(version.meta.etag), version.freshUntil) : undefined
  if (found !== undefined) return withHeaders(await answerEntry(x, found.entry, found.outcome, options.debugHeaders), headers)

  const entry = await once(keyOf(version.meta.etag), async () => {
    whole ??= await wholeObject(x, key, limit, tooLarge)
    const bytes = await compress(whole.bytes, encoding)
    options.metrics?.compressions.inc({ encoding })
    const made = variantEntry(whole, null, { contentType: whole.meta.contentType, contentEncoding: encoding }, bytes, encoding)
    if (keep && whole.freshUntil > Date.now()) void bucket.cache?.store.local.set(keyOf(whole.meta.etag), made)
    return made
  })
  return withHeaders(await answerEntry(x, entry, { xCache: 'MISS', status: 'yatagarasu; fwd=miss; detail=compressed' + (keep ? '; stored' : '') }, options.debugHeaders), headers)
}

/** Adds `Vary: Accept-Encoding` to serve's answer for an object that is compressed for other requests. */
function varyIfCompressible(answer: Answer, config: NonNullable<Representations['compression']>['config'], meta: ObjectMeta | undefined): Answer {
  const h = answer.headers
  const total = h['content-range']?.split('/')[1]
  const size = Number(total ?? h['content-length'] ?? 0)
  if (!compressible(config, meta ?? { contentType: h['content-type'], size, contentEncoding: h['content-encoding'] })) return answer
  return withHeaders(answer, { vary: 'Accept-Encoding' })
}

// ---------------------------------------------------------------------------------------------
// Shared

/** A cached variant of the original's current version (the key carries its ETag), fresh while it is. */
async function lookupVariant(x: Exchange, variantKey: string, freshUntil: number): Promise<{ entry: CachedObject; outcome: RepresentationOutcome } | undefined> {
  const local = x.matched.bucket.cache?.store.local
  if (local === undefined) return undefined
  const hit = local.peek(variantKey) ?? (await local.lookup(variantKey))
  if (hit === undefined) return undefined
  return { entry: { ...hit.entry, freshUntil }, outcome: { xCache: 'HIT', status: `yatagarasu; hit; detail=${hit.tier}`, tier: hit.tier } }
}

/**
 * A variant's entry: the original's validators and policy, its own bytes and type, and a strong
 * ETag of its own: the original's ETag and the variant's description hashed (the same on every
 * instance), or `"<etag>-<encoding>"` for a compressed body.
 */
function variantEntry(
  whole: WholeObject,
  described: string | null,
  representation: { contentType: string | undefined; contentEncoding: string | undefined },
  bytes: Buffer,
  encoding?: string
): CachedObject {
  const inner = whole.meta.etag?.replace(/^W\//, '').replace(/^"|"$/g, '')
  const etag =
    encoding !== undefined && inner !== undefined
      ? `"${inner}-${encoding}"`
      : `"${createHash('sha256')
          .update(`${inner ?? ''}\0${described ?? encoding ?? ''}`)
          .digest('base64url')
          .slice(0, 32)}"`
  const meta: ObjectMeta = {
    ...whole.meta,
    size: bytes.length,
    etag,
    contentType: representation.contentType,
    contentEncoding: representation.contentEncoding,
    userMetadata: {},
  }
  const now = Date.now()
  return { meta, body: bytes, storedAt: now, freshUntil: whole.freshUntil }
}

/** One making of `variantKey` at a time: the others wait for it and share its entry. */
function once(variantKey: string, make: () => Promise<CachedObject>): Promise<CachedObject> {
  const running = making.get(variantKey)
  if (running !== undefined) return running
  const made = make().finally(() => making.delete(variantKey))
  making.set(variantKey, made)
  return made
}

/** A copy of the answer with more headers (answers' header objects are shared: never mutated). */
function withHeaders(answer: Answer, extra: Record<string, string>): Answer {
  const vary = extra.vary !== undefined && answer.headers.vary !== undefined ? `${answer.headers.vary}, ${extra.vary}` : extra.vary
  return { ...answer, headers: { ...answer.headers, ...extra, ...(vary === undefined ? {} : { vary }) } }
}
