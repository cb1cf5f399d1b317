// The interfaces the pipeline needs. Stages depend on these, never on the classes that implement
// them; only runtime.ts knows the concrete adapters.
import type { ProxyError } from './errors.ts'
import type { PipeableBody } from './http/direct-body.ts'
import type { AuditRecord, ByteRange, ObjectMeta, Principal, RangeSpec } from './types.ts'

/**
 * An origin body: read as a web stream (`stream`, pulled from the backend only as fast as the
 * client reads), or written straight into the client's response (`pipe`: the web stream is then
 * never built; see http/direct-body.ts).
 */
export interface ObjectBody extends PipeableBody {
  meta: ObjectMeta
  /** Present when the body is a part of the object; exactly the range asked for. */
  range: ByteRange | undefined
  /**
   * The whole body as bytes when every byte has arrived already (a small object), without a
   * stream; undefined otherwise, with nothing taken. After it the body is used up.
   */
  whole(): Buffer | undefined
  /**
   * `tap` sees every byte on its way to whoever reads the body (piped, streamed or taken whole),
   * so the cache can keep a copy without a second stream. Set before reading.
   */
  tap(tap: BodyTap): void
  /** How many body bytes the client has pulled so far. */
  bytesSent(): number
  /**
   * Reads the whole body into `sink`, at the pace it takes it (no client reads it): each chunk is
   * lent for the call only (copy what you keep); true goes on, a promise of that holds the backend
   * back until it settles, false stops (the body is cancelled). Resolves true at the end, false when
   * the sink stopped it; rejects when the body fails (a stall, the backend) or was read already.
   */
  drainInto(sink: (chunk: Uint8Array) => boolean | Promise<boolean>): Promise<boolean>
}

/** Something that keeps a copy of a body as it goes by (the cache filling on a miss). */
export interface BodyTap {
  /**
   * The next bytes, lent for the call only: copy what you keep. A promise (never rejecting) when
   * the tap holds too much: no more bytes are read from the backend until it settles.
   */
  chunk(bytes: Uint8Array): Promise<void> | undefined
  /** Every byte went by. */
  end(): void
  /** The body failed, or its reader left before the end: it is not complete. */
  fail(error: Error): void
}

export interface ReadOptions {
  /** Aborts the backend request (client gone). */
  signal: AbortSignal | undefined
  /**
   * Called when the body fails mid-transfer (backend stall or reset). Returns true when it cut
   * the client connection because this body was streaming to it (the client sees a truncated
   * response, never a clean end); otherwise, or without it, the body stream errors instead.
   */
  abortResponse?: ((error: ProxyError) => boolean) | undefined
  /** Epoch ms by which response headers must have arrived (a replica set's request deadline). */
  deadlineAt?: number | undefined
  /** Told which replica answered (for X-Served-By and the audit record). */
  servedBy?: ((replica: string) => void) | undefined
  /** The request's span when tracing is on: backend calls are recorded as its children. */
  span?: TraceSpan | undefined
  /**
   * GET only: the object must still have this ETag (`If-Match`). When it has another, the read
   * throws ProxyError ORIGIN_BAD_RESPONSE with reason `etag_changed` (S3's 412).
   */
  ifMatch?: string | undefined
}

export type SpanAttributes = Record<string, string | number | boolean | undefined>

/** A span being recorded (tracing on). With tracing off there are no spans at all. */
export interface TraceSpan {
  readonly traceId: string
  child(name: string, attributes?: SpanAttributes): TraceSpan
  set(attributes: SpanAttributes): void
  /** Marks the span as failed with this error (its code, never its details). */
  fail(error: unknown): void
  end(): void
}

export interface Tracer {
  /** The server span of a request, continuing the client's W3C `traceparent` when it sent one. */
  startRequest(name: string, headers: Readonly<Record<string, string | string[] | undefined>>, attributes: SpanAttributes): TraceSpan
  /** Exports what is buffered and stops. */
  close(): Promise<void>
}

export interface ObjectSource {
  /** Metadata only (S3 HeadObject). Throws ProxyError (ORIGIN_NOT_FOUND, ORIGIN_*). */
  head(key: string, options: ReadOptions): Promise<ObjectMeta>
  /**
   * The object, or exactly the requested range of it. Throws RANGE_NOT_SATISFIABLE with a
   * `Content-Range: bytes * /size` header when the range cannot be served.
   */
  get(key: string, range: RangeSpec | undefined, options: ReadOptions): Promise<ObjectBody>
  /**
   * A conditional GET (If-None-Match) to revalidate a cached copy: 'not-modified', or the current
   * object when it changed.
   */
  revalidate(key: string, etag: string, options: ReadOptions): Promise<ObjectBody | 'not-modified'>
  /**
   * One page of the backend's listing: keys under `prefix` strictly after `after`, in order, at most
   * `maxKeys` (no delimiter: grouping, scoping and paging tokens are the S3 front end's job).
   * Throws ProxyError (ORIGIN_*).
   */
  list(page: ListPageRequest, options: ReadOptions): Promise<ListPage>
  /** A cheap reachability check for readiness (S3 HeadBucket). Never throws. */
  probe(): Promise<boolean>
  /** Releases sockets; called when the runtime that owns the source is retired. */
  close(): void
}

export interface ListPageRequest {
  prefix: string
  /** Exclusive lower bound ('' from the start). */
  after: string
  maxKeys: number
}

export interface ListedObject {
  key: string
  size: number
  /** Quoted, as S3 lists it. */
  etag: string | undefined
  lastModified: Date | undefined
  storageClass: string | undefined
}

export interface ListPage {
  objects: ListedObject[]
  /** More keys follow the last one. */
  truncated: boolean
}

/** How a replica looks to /ready: takes traffic, does not, or admits trial requests. */
export type ReplicaHealth = 'healthy' | 'unhealthy' | 'half-open'

/** A bucket's backends as /ready sees them. */
export interface ReplicaHealthSource {
  /** Each replica's health, by name, in priority order. */
  health(): Promise<Record<string, ReplicaHealth>>
}

export interface TokenVerifier {
  /**
   * Finds and verifies the request's token, for reading `key` (the decoded object key).
   * Throws (or rejects with) ProxyError AUTH_* (401) or AUTHZ_* (403). Answers without a promise
   * when it needs no I/O (a token it has already verified).
   */
  authenticate(request: TokenCarrier, key: string): Principal | Promise<Principal>
  /**
   * Claims verified elsewhere (an S3 API credential's) checked against the same rules as a token's:
   * the claim rules, and the path scope for `key` (undefined for a bucket-level request such as a
   * listing: no path scope applies). Throws ProxyError AUTHZ_DENIED.
   */
  admitClaims(claims: Readonly<Record<string, unknown>>, key: string | undefined): void
  /**
   * For a listing with such claims: undefined when the bucket has no path scope; else the literal
   * prefixes of the scope (the only ones a listing may scan) and the per-key scope check.
   */
  listScope?(claims: Readonly<Record<string, unknown>>): { prefixes: readonly string[]; admits(key: string): boolean } | undefined
}

/** What a verifier may read from a request. */
export interface TokenCarrier {
  /** `name` in lower case (the config keeps header names so). */
  header(name: string): string | undefined
  query(name: string): string | undefined
  cookie(name: string): string | undefined
}

/** The OPA input document (docs/authentication.md). */
export interface AuthzInput {
  jwt_claims: Readonly<Record<string, unknown>>
  /** The configured bucket name. */
  bucket: string
  /** The full request path, decoded: the bucket prefix, `/`, and the key. */
  path: string
  /** The decoded object key, without a leading `/`. */
  key: string
  method: string
  client_ip: string
  /** 's3' for a request to the S3 API listener (absent on the HTTP path). */
  api?: 's3'
  /** The S3 operation (GetObject, ListObjectsV2...), on the S3 API only. */
  operation?: string
}

export interface AuthzDecision {
  allow: boolean
  /** For logs: opa_allow, opa_deny, opa_error, opa_timeout, opa_fail_open. */
  reason: string
}

export interface Authorizer {
  /** Never throws: failures come back as a decision (deny, or allow under fail_mode open). */
  authorize(input: AuthzInput): Promise<AuthzDecision>
}

/**
 * A cached body that stays where its tier keeps it (a file on disk) and is read lazily, by range,
 * at the reader's pace. The building block for serving large entries in constant memory: a whole
 * object made of several entries (slices) is streamed as one `stream(range)` after another.
 *
 * - `stream(range)` reads only the tier's blocks that overlap `range`, a few at a time, one read
 *   per pull of the returned stream (nothing is read ahead: a consumer that stops pulling stops
 *   the reads), and opens nothing before the first pull. Memory per open stream: one read's worth
 *   (at most 1 MiB on disk; with `reuseChunks`, one buffer for the whole stream).
 * - Every chunk it yields has passed the tier's check (a checksum per block) before it is handed
 *   on. When a block fails its check the stream errors instead and the tier drops the entry; when
 *   the storage fails (the file is gone) it errors too. A consumer never sees a corrupt byte, and
 *   must never turn an error into a clean end (serve.ts answers from the origin when the error
 *   comes before the first chunk, and cuts the connection after it).
 * - Cancelling the stream closes what it opened. Streams are independent: any number may be open
 *   on one body. An open stream of a disk entry keeps reading its bytes when the tier replaces or
 *   evicts the entry (its file stays open); a Redis entry's stream errors then (the value is gone)
 *   with an error whose `gone` is true: not damage, the consumer may read the rest of the same
 *   version from the origin (serve.ts does, under If-Match). Either way a stream reads no other
 *   bytes than the body's: it errors instead.
 */
export interface StoredBody {
  /** Size in bytes; named like a Buffer's, so `entry.body.length` is the size whatever the kind. */
  readonly length: number
  /** The bytes of `range` (inclusive; the whole body when undefined), verified block by block. */
  stream(range?: ByteRange, options?: StoredBodyStreamOptions): ReadableStream<Uint8Array>
  /**
   * The whole body in one read, verified: for copying into a tier that keeps bytes (memory,
   * Redis). Only for bodies small enough for that tier. Rejects as `stream` errors.
   */
  bytes(): Promise<Buffer>
}

export interface StoredBodyStreamOptions {
  /**
   * One buffer for every chunk of the stream: a chunk's bytes are valid only until the next chunk
   * is asked for. For a consumer that is done with a chunk before it reads the next, as
   * Exchange.respond is (it reads on once the socket has taken the last chunk); saves an
   * allocation per chunk (fresh memory: page faults, then garbage collection).
   */
  reuseChunks?: boolean
}

/** A cached body: the bytes themselves (memory, Redis, small disk entries) or a StoredBody. */
export type CachedBody = Buffer | StoredBody

/** An object as the cache keeps it: metadata, the whole body, and when it was (re)validated. */
export interface CachedObject {
  meta: ObjectMeta
  /** `body instanceof Uint8Array`: bytes in memory; otherwise a StoredBody, read lazily. */
  body: CachedBody
  /** Epoch ms when the entry was stored or last revalidated (drives `Age`). */
  storedAt: number
  /** Epoch ms after which the entry is stale and must be revalidated before use. */
  freshUntil: number
}

export interface CacheTierStats {
  entries: number | null
  bytes: number | null
  hits: number
  misses: number
  hitBytes: number
  evictions: number
  /** What the disk tier's scrub (cache/disk-scrub.ts) checked since start; other tiers have none. */
  scrub?: ScrubTotals
  /**
   * Entries, bytes and evictions are those of a disk directory shared by the workers, and another
   * worker exports them as metrics (the primary sums the workers' metrics).
   */
  sizeReportedElsewhere?: true
  /** The disk tier takes no new writes now: the disk failed one lately (cache/disk-write-pause.ts). */
  writesPaused?: boolean
}

/** How much a pass of the disk tier's scrub reads (cache/disk-scrub.ts). */
export interface ScrubLimits {
  /** The fraction of the indexed entries checked per pass, in (0, 1]. */
  sampleRate: number
  /** At most this many entries per pass. */
  maxEntries: number
  /** Read at most this many bytes per second, on average over the pass (0: no limit). */
  bytesPerSec: number
}

/** What one pass of the disk tier's scrub found. */
export interface ScrubReport {
  /** Entries read and checked: intact + damaged. */
  checked: number
  intact: number
  damaged: number
  /** Sampled entries evicted, replaced or gone before they were read, or that the process could not open then. */
  skipped: number
  /** Bytes read. */
  bytes: number
  ms: number
  /** The damaged entries, deleted: cache key, file and what was wrong. */
  damagedEntries: Array<{ key: string; file: string; reason: string }>
  /** The pass was stopped (shutdown, the caller left, the tier closed or its schedule changed) before it checked its sample. */
  stopped: boolean
}

export interface ScrubTotals {
  passes: number
  /** Entries read and checked. */
  checked: number
  /** Entries found damaged, and deleted. */
  damaged: number
  /** Bytes read. */
  bytes: number
}

/**
 * One cache tier (memory, disk, Redis) or the tiered composition of them. Keys are
 * `<bucket name>/<object key>`. Stores keep an entry until `freshUntil` plus the stale window they
 * were built with, so a stale entry can still shield clients from an origin outage.
 * A store never throws on get/set/delete: a failing tier is a miss.
 * Bodies: `get` may hand back a StoredBody (the disk tier does for entries over 64 KiB). The
 * memory and disk tiers' `set` take either kind (memory reads a StoredBody whole, once, and only
 * when the entry fits it; disk copies it block by block); TieredCache reads a StoredBody into
 * bytes before it hands it to any other tier (Redis: codec.ts encodes bytes).
 */
export interface CacheStore {
  readonly name: string
  /** The largest body the tier keeps, when it has its own limit (Redis): larger ones are not read for it. */
  readonly maxItemBytes?: number
  /** Whether `set` would keep a fresh entry of `size` body bytes for `key` now (limits, budget, paused writes). */
  keeps?(key: string, size: number): boolean
  get(key: string): Promise<CachedObject | undefined>
  set(key: string, entry: CachedObject): Promise<void>
  delete(key: string): Promise<void>
  /** Deletes every key starting with `prefix` ('' = everything); returns how many it knew of. */
  purge(prefix: string): Promise<number>
  stats(): CacheTierStats
  close(): Promise<void>
}

/** A cache hit and the name of the tier that had it. */
export interface TieredHit {
  entry: CachedObject
  tier: string
}

/** The tiered cache as the serve stage uses it: a lookup also says which tier answered. */
export interface TieredStore extends CacheStore {
  readonly tiers: readonly CacheStore[]
  readonly peekedTiers: 0 | 1
  /** The memory tier's entry, without waiting (undefined when there is none). */
  peek(key: string): TieredHit | undefined
  /** Searches the tiers from `from` down; a hit is copied to the tiers above it. */
  lookup(key: string, from?: number): Promise<TieredHit | undefined>
  /** Whether a memory or disk tier holds `key` now (no lookup counted, no recency changed). */
  has(key: string): boolean
  /** Whether any tier would keep a fresh entry of `size` body bytes for `key` now. */
  keeps(key: string, size: number): boolean
  /** Whether a purge or delete of `key` came after `since`: a copy fetched then is refused. */
  purgedAfter(key: string, since: number): boolean
  /**
   * The memory and disk tiers only: for entries derived from an object's key (`<key>\0...`: its
   * slices and sliced metadata), which those tiers delete with the object's key.
   */
  readonly local: TieredStore
  /** Where slices go: the disk tier when there is one (slices never push hot objects out of memory), else memory. */
  readonly bulk: TieredStore
  /**
   * Streams a new entry of `size` body bytes into the disk tier as the body arrives, instead of
   * holding it whole first. Undefined when there is no disk tier, the body is small enough to hold
   * (64 KiB), or the disk tier would not keep it. Once committed, `set` with the committed entry
   * copies it to the other tiers (disk keeps its file as it is). `wanted`, asked before the file is
   * put in place: false leaves the entry out (as a purge since `head.storedAt` does).
   */
  writer(key: string, head: Omit<CachedObject, 'body'>, size: number, wanted?: () => boolean): EntryWriter | undefined
  /**
   * Whether a body of `size` bytes given no writer is held whole and stored at its end: when it
   * is small (64 KiB) or there is no disk tier. A larger one the disk tier would not take (its
   * writes paused, over its bucket's budget) is not stored: it streams through, never held whole.
   */
  collects(size: number): boolean
  /**
   * Deletes `key` from every tier without counting as a purge: for an answer that replaces the
   * entry (no-store), where copies fetched before it may still be stored. `delete` and `purge`
   * also refuse every copy fetched or read before them (a purge sticks).
   */
  drop(key: string): Promise<void>
}

/** A new cache entry whose body is written as it arrives (TieredStore.writer). Nothing rejects. */
export interface EntryWriter {
  /**
   * The body's next bytes, kept by reference until written (not to be reused meanwhile). True when
   * the writer can take more at once (it holds little), a promise of that when it holds much (wait
   * for it: that bounds the memory held), false once it has failed: nothing is stored then, and
   * commit resolves undefined.
   */
  write(chunk: Uint8Array): boolean | Promise<boolean>
  /** As `write`, for a lent piece the caller reuses once this returns: the writer copies it (into memory it reuses). */
  writeCopy(chunk: Uint8Array): boolean | Promise<boolean>
  /**
   * Writes the rest of `stream` and commits: resolves with the committed entry, or undefined when
   * the disk failed (the stream is cancelled at once). Rejects only with the stream's own error
   * (the entry is given up).
   */
  writeAll(stream: ReadableStream<Uint8Array>): Promise<CachedObject | undefined>
  /**
   * The body is complete: the entry is made durable and indexed. Resolves with it as the tier holds
   * it (its body read back from the disk), or undefined when it was not stored (a failed or short
   * write, a full disk): nothing is left behind then.
   */
  commit(): Promise<CachedObject | undefined>
  /** Gives up on the entry (the body failed or nobody reads it any more): nothing is left behind. */
  abort(): void
  /**
   * The body as it is written, for answers that start before it is complete (cache/growing-body.ts):
   * a stream reads what is on the disk so far, at its own pace, and waits for the rest. When the
   * writing stops short of the bytes a stream wants (the body failed, the disk failed), the stream
   * goes on from `rest`.
   */
  growing(rest: BodyRest): GrowingBody
  /**
   * Where the body is being written, for other processes sharing the directory to read it as it
   * grows (SharedFills): settles once the file exists; undefined when it never will.
   */
  whereGrowing(): Promise<GrowingFileShare | undefined>
}

/** A body being written (EntryWriter.growing), readable while it grows. */
export interface GrowingBody extends StoredBody {
  /** The writing is over (committed or given up): the file is closed once no stream reads it. */
  release(): void
}

/**
 * Where a growing body's stream gets the bytes the writing stopped short of: `range` of the same
 * object version (a ranged GET under If-Match), read until `signal` aborts (its client left).
 */
export type BodyRest = (range: ByteRange, signal: AbortSignal) => Promise<ReadableStream<Uint8Array>>

/**
 * Objects over a bucket's max_item_size, cached as aligned slices (cache/slices.ts): a small
 * metadata entry per object, and each slice an entry of its own keyed by the object's ETag, fetched
 * with ranged GETs under `If-Match` (one fetch per slice at a time), so every byte of one answer
 * comes from one object version.
 */
export interface SlicedObjects {
  readonly sliceBytes: number
  /** The object's metadata entry (fresh or stale), as a CachedObject whose body reads the slices. */
  lookup(source: ObjectSource, key: string, cacheKey: string): Promise<CachedObject | undefined>
  /**
   * Asks the origin (HEAD, one at a time per key) and, when the object is over `maxItemBytes` and
   * storable, records its metadata and answers the sliced entry; undefined otherwise. `stale`: the
   * entry being revalidated; its slices are dropped when the ETag changed.
   */
  discover(source: ObjectSource, key: string, cacheKey: string, maxItemBytes: number, options: ReadOptions, stale?: CachedObject): Promise<CachedObject | undefined>
  /** Records metadata already fetched (a whole GET's answer) as a sliced object. */
  remember(source: ObjectSource, key: string, cacheKey: string, meta: ObjectMeta): Promise<CachedObject | undefined>
  /** Whether the disk tier holds the object's metadata entry now (where other workers find it). */
  stored(cacheKey: string): boolean
  /** How many of the slices covering `range` (the whole object when undefined) the cache holds now. */
  cached(cacheKey: string, meta: ObjectMeta, range: ByteRange | undefined): { cached: number; total: number }
  /** Whether `error` says the object changed under a read (its slices are already dropped). */
  isVersionChange(error: unknown): boolean
  /** Drops the metadata entry and every slice of the object. */
  forget(cacheKey: string): Promise<void>
}

/**
 * Fetches coordinated across the workers of one instance that share the disk tier's directory
 * (cache/disk-cluster.ts): one worker at a time fetches a key (a whole object or a slice); the
 * others wait and then read what it stored, or each fetches on its own when it was not stored.
 */
export interface SharedFills {
  /** Waits `waitMs` at most (default 30 s) for another worker's fetch, then fetches on its own. */
  claim(key: string, waitMs?: number): Promise<FillClaim>
}

export interface FillClaim {
  /**
   * 'fetch': this worker fetches the key, then calls `done`; 'stored': another worker stored it
   * (read it from the tier); 'growing': another worker's fetch is being written to the directory
   * (read it as it grows: `growing`).
   */
  readonly answer: 'fetch' | 'stored' | 'growing'
  /** With 'growing': the other worker's fill. */
  readonly growing?: OtherWorkersFill
  /** This worker's fetch is over; `stored`: the tier holds the key now (the waiters read it), else they fetch on their own. */
  done(stored: boolean): void
  /** This worker's fetch is being written to `file`: the workers waiting for it read it as it grows. */
  grows(file: GrowingFileShare, head: Omit<CachedObject, 'body'>): void
}

/** A file of the disk tier's directory another process is writing an entry's body to. */
export interface GrowingFileShare {
  path: string
  /** Where the body starts in the file. */
  bodyOffset: number
}

/** Another worker's fill of a key, being written to the shared directory (FillClaim 'growing'). */
export interface OtherWorkersFill {
  readonly head: Omit<CachedObject, 'body'>
  /**
   * The body, read from that worker's file as it grows (a stream whose bytes the writing stopped
   * short of, or that saw no new byte for `stallMs`, goes on from `rest`); undefined when the file
   * is gone already (the fill is over: `ended` says whether it was stored).
   */
  open(rest: BodyRest, stallMs: number): Promise<GrowingBody | undefined>
  /** Settles when that fill is over: true when the tier holds the entry now. */
  readonly ended: Promise<boolean>
}

/** Where audit records go (file, stdout, syslog, S3). `record` never blocks and never throws. */
export interface AuditSink {
  record(entry: AuditRecord): void
  /** Writes what is buffered (S3 batch included); called when the runtime is retired. */
  close(): Promise<void>
}

/** Why a rate limit refused a request: enough for Retry-After and the RateLimit-* headers. */
export interface RateLimitRefusal {
  /** Requests admitted per window. */
  limit: number
  windowSeconds: number
  /** Milliseconds until the window resets. */
  retryAfterMs: number
}

/** One rate-limit scope (global, per IP, per user, one bucket). */
export interface RateLimiter {
  /**
   * Counts one request against `key`; resolves the refusal when the limit is spent. Never rejects:
   * a shared store that fails falls back to counting in this process.
   */
  take(key: string): Promise<RateLimitRefusal | undefined>
}
