// Plain data shared by the stages (the per-request facts they hand each other are in
// pipeline/exchange.ts).
import type { CorsConfig } from './config/schema.ts'
import type { CompressionConfig, CompressionEncoding, ImagesConfig, WatermarkConfig } from './config/representations-schema.ts'
import type { PipeableBody } from './http/direct-body.ts'
import type { ImageRenderer } from './images/render.ts'
import type { Authorizer, CachedObject, ObjectSource, RateLimiter, SharedFills, SlicedObjects, TieredStore, TokenVerifier } from './ports.ts'

/** An inclusive byte range of an object, as in `Content-Range: bytes start-end/size`. */
export interface ByteRange {
  start: number
  end: number
}

/** A single range as the client asked for it, before the object's size is known. */
export type RangeSpec =
  | { kind: 'bounded'; start: number; end: number }
  | { kind: 'from'; start: number }
  | { kind: 'suffix'; length: number }

export interface ObjectMeta {
  size: number
  /** Quoted entity tag, e.g. `"abc"` or `W/"abc"`. */
  etag: string | undefined
  lastModified: Date | undefined
  contentType: string | undefined
  cacheControl: string | undefined
  contentDisposition: string | undefined
  contentEncoding: string | undefined
  contentLanguage: string | undefined
  expires: string | undefined
  /** x-amz-meta-* user metadata, keys without the prefix, lower case. */
  userMetadata: Record<string, string>
}

export interface Principal {
  subject: string | undefined
  claims: Readonly<Record<string, unknown>>
  /** The verifying key's `kid`, when the token named one (for audit). */
  keyId: string | undefined
  /** Where the token was found (for logs and audit); 's3' for an S3 API credential (SigV4). */
  tokenSource: 'bearer' | 'header' | 'query' | 'cookie' | 's3'
}

/** A configured bucket as the pipeline sees it: its config slice plus its live adapters. */
export interface BucketRoute {
  name: string
  prefix: string
  source: ObjectSource
  verifier: TokenVerifier | null
  authorizer: Authorizer | null
  cors: CorsConfig | null
  /** Overrides the Cache-Control sent onward (see http/freshness.ts). */
  cdnCacheControl: string | undefined
  /** Null when this bucket does not cache. */
  cache: BucketCache | null
  /** Null when neither `server.ip_filter` nor the bucket's own applies. */
  ipFilter: IpFilter | null
  /** The bucket's own limit (one counter for the whole bucket). */
  rateLimit: RateLimiter | null
  /** Adds `Content-Disposition: attachment`. */
  forceDownload: boolean
  /** Image variants, watermarks, compression (pipeline/represent.ts); null when none is configured. */
  representations: Representations | null
}

/** A version of an object: its metadata, when it was confirmed, and until when it holds (0: not cached). */
export interface ObjectVersion {
  meta: ObjectMeta
  storedAt: number
  freshUntil: number
}

/** An object's current version read whole (for a representation to be made of it). */
export interface WholeObject {
  meta: ObjectMeta
  bytes: Buffer
  /** Epoch ms until which this version may be used without asking the origin (0: not cached). */
  freshUntil: number
}

/** How a representation's answer came about, for X-Cache and Cache-Status. */
export interface RepresentationOutcome {
  xCache: 'HIT' | 'MISS'
  status: string
  tier?: string
}

/** What a bucket makes of its objects besides sending them as stored. */
export interface Representations {
  images: ImagesConfig | null
  /** This bucket's renderer (its own render slots and queue); null without images. */
  renderer: ImageRenderer | null
  /** The bucket's watermark rules and the module that draws them (loaded with sharp, only when configured). */
  watermark: { config: WatermarkConfig; marks: typeof import('./images/watermark.ts') } | null
  /** `offered`: the configured encodings this runtime can produce. */
  compression: { config: CompressionConfig; offered: CompressionEncoding[] } | null
}

/** An allow/deny decision on a client address (http/ip-filter.ts). */
export interface IpFilter {
  admits(address: string): boolean
}

export interface BucketCache {
  store: TieredStore
  /** Full-object fetches in flight, by cache key: concurrent misses wait for one origin GET. */
  flights: Map<string, Promise<CachedObject | undefined>>
  ttlSeconds: number
  maxItemBytes: number
  staleIfErrorSeconds: number
  /** The bucket's origin deadline: the longest a request waits for another request's fetch of the same key (serve.ts waits less). */
  followerWaitMs: number
  /** With workers sharing the disk tier: one worker at a time fetches a missing key. */
  fills: SharedFills | undefined
  /** This bucket's counters, kept across reloads. */
  counters: CacheCounters
  /** Objects over maxItemBytes cached as slices; null: they stream through uncached. */
  slices: SlicedObjects | null
}

export interface CacheCounters {
  hits: number
  misses: number
  stale: number
  hitBytes: number
}

export interface RouteMatch {
  bucket: BucketRoute
  /** The object key: the rest of the path after the prefix, percent-decoded exactly once. */
  key: string
}

/** Counts the body bytes a response has delivered; written by serve, read by observe. */
export interface TransferMeter {
  bytesSent(): number
}

/** How the cache took part in a response; written by serve, read by observe for metrics. */
export interface CacheUse {
  result: 'hit' | 'miss' | 'stale'
  /** The tier that answered a hit or stale answer. */
  tier: string | undefined
}

export interface StageMarks {
  start: number
  authenticated: number
  authorized: number
  /** The response headers were ready (cache lookup and backend call done). */
  served: number
}

/**
 * What the object pipeline answers: status, headers and the body, as bytes (their length is in the
 * headers), text, a stream (or an origin body that can be piped without one), or nothing (HEAD,
 * 304, 204). Header objects may be shared between answers (cached objects reuse theirs): nothing
 * downstream mutates one.
 */
export interface Answer {
  status: number
  headers: Readonly<Record<string, string>>
  body: Uint8Array | string | ReadableStream<Uint8Array> | PipeableBody | null
}

/**
 * The audit record: who read what, when, and why it was allowed or refused. One per request,
 * built by the observe stage when the response has ended. Never a token, an Authorization or
 * Cookie header, or a query string (a `?token=` would be in it).
 */
export interface AuditRecord {
  timestamp: string
  request_id: string
  trace_id: string | undefined
  client_ip: string
  /** The token's `sub`. */
  user: string | undefined
  jti: string | undefined
  kid: string | undefined
  bucket: string | undefined
  key: string | undefined
  method: string
  range: string | undefined
  status: number
  /** Body bytes actually sent (less than the object when the client went away). */
  bytes: number
  complete: boolean
  duration_ms: number
  /** hit, miss, stale; undefined when the bucket does not cache. */
  cache: string | undefined
  cache_tier: string | undefined
  replica: string | undefined
  /** The image variant (preset or parameters) or encoding answered instead of the stored bytes. */
  representation: string | undefined
  /** allowed, denied, anonymous (public bucket) or undefined (refused before authentication). */
  auth: 'allowed' | 'denied' | 'anonymous' | undefined
  /** Why: the error reason for a refusal, the OPA decision reason when a policy ran. */
  auth_reason: string | undefined
  opa_decision: string | undefined
  error: string | undefined
  user_agent: string | undefined
  /** Without its query string. */
  referer: string | undefined
}

/** What a reload did: the new generation and the buckets it added, removed or changed. */
export type ReloadResult =
  | { ok: true; generation: number; buckets: BucketChanges }
  | { ok: false; generation: number; error: string }

export interface BucketChanges {
  added: string[]
  removed: string[]
  changed: string[]
}
