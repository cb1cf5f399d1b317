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
import { chooseEncoding, compressible, mediaType } from '../compression/negotiate.ts'
import { compress } from '../compression/compress.ts'
import { ProxyError } from '../errors.ts'
import { outputFormat, sniffFormat, sourceFormatOf, type SourceFormat } from '../images/negotiate.ts'
import { canonicalParams, readImageParams, type ImageParams } from '../images/params.ts'
import type { WatermarkContext, WatermarkPlan } from '../images/watermark.ts'
import type { CompressionEncoding, ImageFormat, ImagesConfig } from '../config/representations-schema.ts'
import type { CachedObject } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { Answer, BucketCache, ObjectMeta, ObjectVersion, Representations, RepresentationOutcome, WholeObject } from '../types.ts'
import type { Exchange } from './exchange.ts'

type Serve = (x: Exchange) => Answer | Promise<Answer>

/**
 * What represent asks of the serve stage (app.ts hands serve's functions over; one stage never
 * imports another): the object as served, its current version, its bytes whole, and a variant's
 * entry answered as a cached object is (Range, 304, 412, 416, HEAD).
 */
export interface Objects {
  serve: Serve
  currentVersion(x: Exchange, key: string): Promise<ObjectVersion>
  wholeObject(x: Exchange, key: string, maxBytes: number, tooLarge: () => Error, shared?: boolean): Promise<WholeObject>
  answerEntry(x: Exchange, entry: CachedObject, outcome: RepresentationOutcome): Answer | Promise<Answer>
}

export interface RepresentOptions {
  objects: Objects
  metrics: Metrics | undefined
  /**
   * The S3 API answers objects as stored: only watermarks apply there (a mark must not be
   * bypassed by another listener); image parameters and compression are the HTTP path's.
   */
  watermarksOnly: boolean
}

/** Renders and compressions in flight, by variant key: concurrent requests for one variant wait for one. */
const making = new Map<string, Promise<CachedObject>>()

export function represent(options: RepresentOptions): Serve {
  const serveObject = options.objects.serve
  return function represent(x) {
    const reps = x.matched.bucket.representations
    if (reps === null) return serveObject(x)
    const images = options.watermarksOnly ? null : reps.images
    const params = images === null ? undefined : readImageParams(x.target, images)
    const watermark = reps.watermark
    const plan = watermark === null ? undefined : watermark.marks.watermarkPlan(watermark.config, x.matched.key, watermarkContextOf(x))
    const marked = plan !== undefined && (params !== undefined || watermark?.config.apply === 'all')
    if (params !== undefined || marked) {
      const request: ImageRequest = { reps, params, plan: marked ? plan : undefined }
      return imageFromMemory(x, request, options) ?? imageAnswer(x, request, options)
    }
    if (reps.compression !== null && !options.watermarksOnly) {
      return compressedFromMemory(x, reps.compression, options) ?? compressedAnswer(x, reps.compression, options)
    }
    return serveObject(x)
  }
}

// ---------------------------------------------------------------------------------------------
// Images

interface ImageRequest {
  reps: Representations
  params: ImageParams | undefined
  plan: WatermarkPlan | undefined
}

/** What a request for an image representation of one original version resolves to. */
interface ImageChoice {
  format: ImageFormat
  /** The render's parameters (a watermarked original keeps its size and format). */
  job: ImageParams
  /** For metrics: the preset, `custom` or `original`. */
  label: string
  /** The variant's canonical description: parameters, format, watermark fingerprint (and mark versions). */
  described: string
  headers: Record<string, string>
  /** The variant may be stored and looked up (a cache, a fresh original, a mark that may be kept). */
  keep: boolean
  /** The variant's cache key for an original with this ETag. */
  keyOf(etag: string | undefined): string
}

/** The choice for this request and a version of the original in `source` format. */
function chooseImage(x: Exchange, request: ImageRequest, images: ImagesConfig, source: SourceFormat, freshUntil: number, markVersions: string): ImageChoice {
  const { params, plan } = request
  const { bucket, key } = x.matched
  // A watermarked original keeps its own format (a browser asked for this file, not a conversion).
  const chosen = params === undefined ? { format: originalFormat(source), vary: false } : outputFormat(params.format, x.header('accept'), source, images.formats)
  const described = `${params === undefined ? 'original' : canonicalParams(params, chosen.format)}${plan === undefined ? '' : `,wm=${plan.fingerprint}${markVersions === '' ? '' : `@${markVersions}`}`}`
  const headers: Record<string, string> = {}
  if (chosen.vary) headers.vary = 'Accept'
  // A mark naming the requester is theirs alone; one that changes every second is never stored.
  if (plan !== undefined && (plan.personal || !plan.cacheable)) headers['cache-control'] = plan.cacheable ? 'private' : 'private, no-store'
  const prefix = `${bucket.name}/${key}${DERIVED_MARK}image:`
  return {
    format: chosen.format,
    job: params ?? { width: undefined, height: undefined, fit: 'inside', format: chosen.format, quality: images.default_quality, preset: undefined },
    label: params === undefined ? 'original' : (params.preset ?? 'custom'),
    described,
    headers,
    keep: bucket.cache !== null && freshUntil > Date.now() && (plan?.cacheable ?? true),
    keyOf: (etag) => `${prefix}${etag ?? ''}:${described}`,
  }
}

function describe(x: Exchange, request: ImageRequest, format: ImageFormat): void {
  const { params } = request
  x.representation = params === undefined ? 'watermarked original' : params.preset !== undefined ? `preset=${params.preset}` : canonicalParams(params, format)
}

/**
 * A variant answered in this tick, without a promise: its original fresh in the memory tier and the
 * variant there too (the hottest path, as for plain objects). Undefined: take the long way.
 */
function imageFromMemory(x: Exchange, request: ImageRequest, options: RepresentOptions): Answer | Promise<Answer> | undefined {
  const { images } = request.reps
  const cache = x.matched.bucket.cache
  // Image marks have versions of their own to check first.
  if (images === null || cache === null || (request.plan?.sources.length ?? 0) > 0) return undefined
  const original = cache.store.peek(`${x.matched.bucket.name}/${x.matched.key}`)
  if (original === undefined || original.entry.freshUntil <= Date.now() || emptyMarks(request.plan)) return undefined
  const source = sourceFormatOf(original.entry.meta.contentType, images.svg)
  if (source === undefined) return undefined
  const choice = chooseImage(x, request, images, source, original.entry.freshUntil, '')
  if (!choice.keep) return undefined
  const variantKey = choice.keyOf(original.entry.meta.etag)
  const hit = cache.store.local.peek(variantKey)
  if (hit === undefined) return undefined
  describe(x, request, choice.format)
  const entry = asFreshAs(cache, variantKey, hit.entry, original.entry)
  return withHeaders(options.objects.answerEntry(x, entry, hitOutcome(hit.tier)), choice.headers)
}

async function imageAnswer(x: Exchange, request: ImageRequest, options: RepresentOptions): Promise<Answer> {
  const { serve: serveObject, currentVersion, wholeObject } = options.objects
  const { reps, params, plan } = request
  const { images, renderer } = reps
  // config/load.ts refuses a watermark without images: nothing else reaches here without them.
  if (images === null || renderer === null) return serveObject(x)
  // A mark with nothing to draw for this request (a missing header or claim) never means clean bytes.
  if (emptyMarks(plan)) throw new ProxyError('IMAGE_WATERMARK_EMPTY', { reason: 'every mark of the matching rule resolved to no text' })
  const { bucket, key } = x.matched
  const tooLarge = () => new ProxyError('IMAGE_UNPROCESSABLE', { reason: `the original is over images.max_input_bytes (${images.max_input_bytes})` })
  const version = await currentVersion(x, key)
  const source = sourceFormatOf(version.meta.contentType, images.svg) ?? (await sourceOfUntyped(x, request, images, version.meta))
  if (source === undefined) {
    if (params !== undefined) throw new ProxyError('IMAGE_NOT_AN_IMAGE', { reason: `content type ${version.meta.contentType ?? 'none'}` })
    // A watermark rule matched an object that is not an image: it is served as it is.
    return serveObject(x)
  }
  // Image marks are objects of the bucket too: their versions are part of the variant's identity.
  const markSources = new Map<string, WholeObject>()
  for (const markKey of plan?.sources ?? []) markSources.set(markKey, await wholeObject(x, markKey, images.max_input_bytes, tooLarge))
  const markVersions = [...markSources.values()].map((mark) => mark.meta.etag ?? '').join('+')
  const choice = chooseImage(x, request, images, source, version.freshUntil, markVersions)
  describe(x, request, choice.format)
  const { keep, headers, described } = choice
  const variantKey = choice.keyOf(version.meta.etag)
  const found = keep ? await lookupVariant(x, variantKey) : undefined
  if (found !== undefined) {
    const entry = bucket.cache === null ? found.entry : asFreshAs(bucket.cache, variantKey, found.entry, version)
    return withHeaders(options.objects.answerEntry(x, entry, hitOutcome(found.tier)), headers)
  }

  // One render per variant; its work serves every request waiting for it, so no single client's
  // leaving stops it, and the original is read only once a render slot is free.
  const entry = await once(variantKey, async () => {
    let whole: WholeObject | undefined
    const read = async () => (whole = await wholeObject(x, key, images.max_input_bytes, tooLarge, true)).bytes
    const span = x.span?.child('image.render', { 'yatagarasu.image.variant': described, 'yatagarasu.image.format': choice.format })
    try {
      const marks = reps.watermark?.marks
      const rendered = await renderer.render(read, {
        params: choice.job,
        format: choice.format,
        label: choice.label,
        overlays:
          plan === undefined || marks === undefined
            ? undefined
            : (width, height) =>
                marks.watermarkOverlays(plan, width, height, async (markKey) => (markSources.get(markKey) ?? (await wholeObject(x, markKey, images.max_input_bytes, tooLarge, true))).bytes),
      })
      span?.set({ 'yatagarasu.image.width': rendered.width, 'yatagarasu.image.height': rendered.height, 'yatagarasu.image.bytes': rendered.bytes.length })
      const original: WholeObject | undefined = whole
      if (original === undefined) throw new Error('the renderer did not read the original')
      const made = variantEntry(original, described, { contentType: rendered.contentType, contentEncoding: undefined }, rendered.bytes)
      // The original may have changed since its version was checked: the variant is of the bytes read.
      if (keep && original.freshUntil > Date.now()) void bucket.cache?.store.local.set(choice.keyOf(original.meta.etag), made)
      return made
    } catch (err) {
      span?.fail(err)
      throw err
    } finally {
      span?.end()
    }
  })
  return withHeaders(options.objects.answerEntry(x, entry, { xCache: 'MISS', status: 'yatagarasu; fwd=miss; detail=image' + (keep ? '; stored' : '') }), headers)
}

/** Every mark of the plan resolved to no text (and there is no image mark): nothing would be drawn. */
function emptyMarks(plan: WatermarkPlan | undefined): boolean {
  return plan !== undefined && plan.marks.every((mark) => mark.type === 'text' && mark.text === '')
}

/** Types an uploader leaves when it knows none: the bytes say what they are. */
const GENERIC_TYPES = new Set(['', 'application/octet-stream', 'binary/octet-stream', 'application/x-binary'])

/**
 * The format of an original whose Content-Type is not one the proxy renders, when a watermark
 * rule marks its key: an `image/*` type it cannot decode is refused (never served clean), and
 * under a generic type the first bytes decide. Undefined: not an image (served as it is).
 */
async function sourceOfUntyped(x: Exchange, request: ImageRequest, images: ImagesConfig, meta: ObjectMeta): Promise<SourceFormat | undefined> {
  if (request.plan === undefined || request.params !== undefined) return undefined
  const type = mediaType(meta.contentType ?? '')
  const cannotMark = () => new ProxyError('IMAGE_NOT_AN_IMAGE', { reason: `cannot watermark ${type || 'untyped'} content` })
  if (type.startsWith('image/')) throw cannotMark()
  if (!GENERIC_TYPES.has(type) || meta.size === 0) return undefined
  const head = await x.matched.bucket.source.get(x.matched.key, { kind: 'bounded', start: 0, end: 31 }, { signal: x.signal, span: x.span })
  const chunks: Uint8Array[] = []
  for await (const chunk of head.stream) chunks.push(chunk)
  const sniffed = sniffFormat(Buffer.concat(chunks), images.svg)
  if (sniffed === 'unknown-image') throw cannotMark()
  return sniffed
}

/**
 * A variant entry as fresh as the version of its original just confirmed (the key holds the
 * ETag): Age and freshness follow the original's, and the refreshed entry is stored so the tiers
 * keep it as long as the original.
 */
function asFreshAs(cache: BucketCache, variantKey: string, entry: CachedObject, version: { storedAt: number; freshUntil: number }): CachedObject {
  if (entry.freshUntil === version.freshUntil) return entry
  const refreshed: CachedObject = { ...entry, storedAt: version.storedAt, freshUntil: version.freshUntil }
  void cache.store.local.set(variantKey, refreshed)
  return refreshed
}

/** The output format of a watermarked original: its own, or PNG for one the encoders do not write (GIF, TIFF, SVG). */
function originalFormat(source: string): ImageFormat {
  return source === 'jpeg' || source === 'png' || source === 'webp' || source === 'avif' ? source : 'png'
}

function watermarkContextOf(x: Exchange): WatermarkContext {
  return {
    claims: x.principal?.claims,
    ip: x.clientIp,
    header: (name) => x.header(name),
    // The decoded path (prefix and key), so spellings of one path draw (and cache) one mark.
    path: x.matched.bucket.prefix === '/' ? `/${x.matched.key}` : `${x.matched.bucket.prefix}/${x.matched.key}`,
    bucket: x.matched.bucket.name,
    now: new Date(),
  }
}

// ---------------------------------------------------------------------------------------------
// Compression

type Compression = NonNullable<Representations['compression']>

/** The encoding this request gets, before the object is known; undefined: the identity bytes. */
function encodingFor(x: Exchange, compression: Compression): CompressionEncoding | undefined {
  // A Range is answered from the identity bytes: offsets into a compressed body depend on the encoder.
  return x.header('range') === undefined ? chooseEncoding(x.header('accept-encoding'), compression.offered) : undefined
}

/** Whether this version of an object is sent compressed when the client accepts it. */
function compresses(compression: Compression, meta: ObjectMeta, limit: number): boolean {
  // `no-transform` (RFC 9111 §5.2.2.6): the origin asked intermediaries to send the bytes as stored.
  return compressible(compression.config, meta) && meta.size <= limit && !/(^|,)\s*no-transform\s*(,|$)/i.test(meta.cacheControl ?? '')
}

function encodedKey(x: Exchange, etag: string | undefined, encoding: CompressionEncoding): string {
  return `${x.matched.bucket.name}/${x.matched.key}${DERIVED_MARK}encoding:${etag ?? ''}:${encoding}`
}

const VARY_ENCODING = { vary: 'Accept-Encoding' }
/** A Range is answered from the identity bytes, so an encoded answer offers none (as nginx's gzip filter). */
const ENCODED = { vary: 'Accept-Encoding', 'accept-ranges': 'none' }

/** A compressed body answered in this tick: the object fresh in the memory tier and its encoding there too. */
function compressedFromMemory(x: Exchange, compression: Compression, options: RepresentOptions): Answer | Promise<Answer> | undefined {
  const cache = x.matched.bucket.cache
  if (cache === null) return undefined
  const encoding = encodingFor(x, compression)
  if (encoding === undefined) return undefined
  const original = cache.store.peek(`${x.matched.bucket.name}/${x.matched.key}`)
  if (original === undefined || original.entry.freshUntil <= Date.now() || !compresses(compression, original.entry.meta, cache.maxItemBytes)) return undefined
  const variantKey = encodedKey(x, original.entry.meta.etag, encoding)
  const hit = cache.store.local.peek(variantKey)
  if (hit === undefined) return undefined
  x.representation = `encoding=${encoding}`
  return withHeaders(options.objects.answerEntry(x, asFreshAs(cache, variantKey, hit.entry, original.entry), hitOutcome(hit.tier)), ENCODED)
}

async function compressedAnswer(x: Exchange, compression: Compression, options: RepresentOptions): Promise<Answer> {
  const { serve: serveObject, currentVersion, wholeObject } = options.objects
  const { bucket, key } = x.matched
  const encoding = encodingFor(x, compression)
  // The identity bytes: Vary still tells caches that another Accept-Encoding may get another body.
  if (encoding === undefined) {
    const answer = await serveObject(x)
    // A 304 carries no Content-Type (RFC 9110 §15.4.5): the object's version tells instead.
    const meta = answer.status === 304 ? (await currentVersion(x, key)).meta : undefined
    return varyIfCompressible(answer, compression.config, meta)
  }
  // Compressed whole in memory: only what a cache entry may hold (or 64 MiB without a cache).
  const limit = bucket.cache?.maxItemBytes ?? 64 * 1024 * 1024
  const tooLarge = () => new ProxyError('INTERNAL_ERROR', { reason: 'compression source over its limit' })
  const version = await currentVersion(x, key)
  if (!compresses(compression, version.meta, limit)) return serveObject(x)
  x.representation = `encoding=${encoding}`
  const keep = bucket.cache !== null && version.freshUntil > Date.now()
  const variantKey = encodedKey(x, version.meta.etag, encoding)
  const found = keep ? await lookupVariant(x, variantKey) : undefined
  if (found !== undefined) {
    const fresh = bucket.cache === null ? found.entry : asFreshAs(bucket.cache, variantKey, found.entry, version)
    return withHeaders(options.objects.answerEntry(x, fresh, hitOutcome(found.tier)), ENCODED)
  }

  const entry = await once(variantKey, async () => {
    const whole = await wholeObject(x, key, limit, tooLarge, true)
    const bytes = await compress(whole.bytes, encoding)
    options.metrics?.compressions.inc({ encoding })
    const made = variantEntry(whole, null, { contentType: whole.meta.contentType, contentEncoding: encoding }, bytes, encoding)
    if (keep && whole.freshUntil > Date.now()) void bucket.cache?.store.local.set(encodedKey(x, whole.meta.etag, encoding), made)
    return made
  })
  return withHeaders(options.objects.answerEntry(x, entry, { xCache: 'MISS', status: 'yatagarasu; fwd=miss; detail=compressed' + (keep ? '; stored' : '') }), ENCODED)
}

/** Adds `Vary: Accept-Encoding` to serve's answer for an object that is compressed for other requests. */
function varyIfCompressible(answer: Answer, config: NonNullable<Representations['compression']>['config'], meta: ObjectMeta | undefined): Answer {
  const h = answer.headers
  const total = h['content-range']?.split('/')[1]
  const size = Number(total ?? h['content-length'] ?? 0)
  if (!compressible(config, meta ?? { contentType: h['content-type'], size, contentEncoding: h['content-encoding'] })) return answer
  return withHeaders(answer, VARY_ENCODING) as Answer
}

// ---------------------------------------------------------------------------------------------
// Shared

/** A cached variant of the original's current version (its key carries the ETag: fresh while the original is). */
async function lookupVariant(x: Exchange, variantKey: string): Promise<{ entry: CachedObject; tier: string } | undefined> {
  const local = x.matched.bucket.cache?.store.local
  if (local === undefined) return undefined
  const hit = local.peek(variantKey) ?? (await local.lookup(variantKey))
  return hit === undefined ? undefined : { entry: hit.entry, tier: hit.tier }
}

const HIT_OUTCOMES = new Map<string, RepresentationOutcome>()
function hitOutcome(tier: string): RepresentationOutcome {
  let outcome = HIT_OUTCOMES.get(tier)
  if (outcome === undefined) HIT_OUTCOMES.set(tier, (outcome = { xCache: 'HIT', status: `yatagarasu; hit; detail=${tier}`, tier }))
  return outcome
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
    // A render's bytes may change while the original's date does not (a {{date}} mark, a new logo):
    // its only validator is its ETag. A compressed body is the original's content, dated as it.
    lastModified: encoding === undefined ? undefined : whole.meta.lastModified,
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

/**
 * A copy of the answer with more headers (answers' header objects are shared: never mutated). The
 * merged object is remembered per answer header object, which a cached entry reuses between answers.
 */
function withHeaders(answer: Answer | Promise<Answer>, extra: Readonly<Record<string, string>>): Answer | Promise<Answer> {
  if (answer instanceof Promise) return answer.then((ready) => withHeaders(ready, extra) as Answer)
  if (Object.keys(extra).length === 0) return answer
  const key = Object.entries(extra).join(';')
  const remembered = merged.get(answer.headers)
  if (remembered !== undefined && remembered.key === key) return { ...answer, headers: remembered.headers }
  const vary = extra.vary !== undefined && answer.headers.vary !== undefined ? `${answer.headers.vary}, ${extra.vary}` : extra.vary
  const headers = { ...answer.headers, ...extra, ...(vary === undefined ? {} : { vary }) }
  merged.set(answer.headers, { key, headers })
  return { ...answer, headers }
}
const merged = new WeakMap<object, { key: string; headers: Record<string, string> }>()
