// serve: the object, by RFC 9110 rules the proxy owns whatever the backend does, from the cache
// when it can (RFC 9111). Runs only after authenticate and authorize passed for this exact key, so
// a cached private object is never served to a request that was not allowed to read it.
//
//   cache hit, fresh        answer from the cached bytes (Range, 304 and 412 included); a body
//                           the tier keeps out of memory (a large disk entry) is streamed by range
//                           at the client's pace, never opened for HEAD, 304, 412 or 416
//   cache hit, stale        conditional GET to the origin: 304 refreshes the entry; a changed
//                           object replaces it; an origin failure serves the stale copy
//                           (stale-if-error window) marked STALE
//   miss, whole-object GET  one origin GET per key at a time, read at the origin's pace (the
//                           disk's) into the disk tier's file or one buffer; every request for it,
//                           the first included, is answered from what arrived as it grows
//   miss, Range or HEAD     straight to the origin, nothing stored (a 206 or a HEAD is never
//                           stored as if it were the whole object)
//   sliced object           (cache.slice on, object over max_item_size) the cached metadata
//                           answers HEAD, 304, 412 and 416; a body streams slice after slice, each
//                           from the cache or fetched with a ranged GET under If-Match (one fetch per
//                           slice at a time). A Range or HEAD miss asks HEAD first to learn the size;
//                           a whole GET that turns out too large is cancelled and served by slices.
//                           The object changing before the first byte restarts the answer once;
//                           after it, the connection is cut (never a body of two versions).
//
// Without a cache: HEAD asks the backend for metadata only (HeadObject); GET sends a single Range on
// in the same request; preconditions are evaluated here against the object's validators, and a
// backend body that is not wanted (304, 412, stale If-Range) is cancelled at once.
import { ProxyError } from '../errors.ts'
import { evaluatePreconditions, ifRangeAllows, type ConditionalHeaders } from '../http/conditional.ts'
import { outgoingCacheControl, storagePolicy } from '../http/freshness.ts'
import { asAttachment, notModifiedHeaders, objectHeaders, type HeaderRecord } from '../http/headers.ts'
import { contentRange, parseRange, resolveRange, unsatisfiedRange } from '../http/range.ts'
import type { BodyRest, CachedObject, EntryWriter, FillClaim, GrowingBody, ObjectBody, ReadOptions, SharedFills, SlicedObjects, StoredBody, TieredHit, TraceSpan } from '../ports.ts'
import type { Answer, BucketCache, BucketRoute, ByteRange, ObjectMeta, ObjectVersion, RangeSpec, RepresentationOutcome, WholeObject } from '../types.ts'
import type { Exchange } from './exchange.ts'
import { collect, GrowingBytes } from '../http/growing-bytes.ts'

interface ObjectRequest {
  head: boolean
  conditions: ConditionalHeaders
  range: RangeSpec | undefined
  ifRange: string | undefined
  options: ReadOptions
  /** Told when a fill that reads on its own fails (its answers go on from ranged GETs). */
  fillFailed: FillFailed | undefined
}

/** A fill's origin read failed: `bucket`, `key` and why. */
export type FillFailed = (bucket: string, key: string, error: ProxyError) => void

/** X-Cache and Cache-Status (RFC 9211) of one response. */
interface CacheOutcome {
  xCache: 'HIT' | 'MISS' | 'STALE'
  status: string
  /** The tier that answered, for metrics. */
  tier?: string
  entry?: CachedObject
}

const EMPTY = new Uint8Array(0)
const HIT_STATUS: Record<string, string> = {
  memory: 'yatagarasu; hit; detail=memory',
  disk: 'yatagarasu; hit; detail=disk',
  redis: 'yatagarasu; hit; detail=redis',
}

/**
 * Headers of whole-object answers from a cache entry: the entry's own headers built once, and the
 * last complete answer (with X-Cache, Cache-Status, Age), reused while those three are unchanged
 * (Age changes once a second). Nothing downstream mutates a response's header object.
 */
interface EntryHeaders {
  bucket: BucketRoute
  base: HeaderRecord
  answer: HeaderRecord | undefined
  answerStatus: string
  answerAge: string
}
// Keyed by the entry's metadata object: a tier that hands out a new CachedObject per hit (the
// disk tier) keeps one ObjectMeta per entry, so its hits reuse their headers too.
const entryHeaders = new WeakMap<ObjectMeta, EntryHeaders>()

export interface ServeOptions {
  /** Adds X-Served-By (the replica that answered) to origin responses. */
  debugHeaders: boolean
  /** Records cache lookups and backend calls as spans (tracing on). */
  tracing: boolean
  /**
   * Told when a cache fill's origin read fails after its answers were handed to the growing file:
   * they go on from ranged GETs, and the request that started it may be logged already.
   */
  fillFailed?: FillFailed
}

export function serve(options: ServeOptions): (x: Exchange) => Answer | Promise<Answer> {
  const { debugHeaders, tracing, fillFailed } = options
  return function serve(x) {
    const { bucket, key } = x.matched
    const request = readRequest(x, debugHeaders, fillFailed)
    const cache = bucket.cache
    if (cache === null) return fromOrigin(x, bucket, key, request, undefined)
    const cacheKey = `${bucket.name}/${key}`
    // A fresh memory hit is answered in this tick: no promise on the hottest path.
    const span = tracing && cache.store.peekedTiers === 1 ? x.span?.child('cache.lookup', { 'yatagarasu.cache.tier': 'memory' }) : undefined
    const peeked = cache.store.peek(cacheKey)
    if (span !== undefined) {
      span.set({ 'yatagarasu.cache.hit': peeked !== undefined })
      span.end()
    }
    if (peeked !== undefined && peeked.entry.freshUntil > Date.now()) return fromHit(x, bucket, cache, cacheKey, peeked, request)
    return fromCacheOrOrigin(x, bucket, cache, cacheKey, key, request, peeked)
  }
}

function fromHit(x: Exchange, bucket: BucketRoute, cache: BucketCache, cacheKey: string, hit: TieredHit, request: ObjectRequest): Answer | Promise<Answer> {
  const { counters } = cache
  const size = hit.entry.body.length
  counters.hits++
  counters.hitBytes += size
  const outcome: CacheOutcome = { xCache: 'HIT', status: HIT_STATUS[hit.tier] ?? `yatagarasu; hit; detail=${hit.tier}`, tier: hit.tier }
  return fromEntry(x, bucket, hit.entry, request, outcome, () => {
    // The entry's body failed its check before a byte was sent (the tier dropped it): a miss.
    counters.hits--
    counters.hitBytes -= size
    counters.misses++
    return originInstead(x, bucket, cache, cacheKey, request)
  })
}

/** A miss after all (the cached body could not be read): what a miss would have answered. */
function originInstead(x: Exchange, bucket: BucketRoute, cache: BucketCache, cacheKey: string, request: ObjectRequest): Promise<Answer> {
  x.cacheUse = { result: 'miss', tier: undefined }
  const { key } = x.matched
  if (request.head || request.range !== undefined) return fromOrigin(x, bucket, key, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' })
  return fetchAndFill(x, bucket, cache, cacheKey, key, request)
}

async function fromCacheOrOrigin(
  x: Exchange,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  key: string,
  request: ObjectRequest,
  peeked: TieredHit | undefined
): Promise<Answer> {
  let hit = peeked
  if (hit === undefined && cache.store.tiers.length > cache.store.peekedTiers) {
    const span = request.options.span?.child('cache.lookup', { 'yatagarasu.cache.tier': cache.store.tiers.slice(cache.store.peekedTiers).map((t) => t.name).join(',') })
    hit = await cache.store.lookup(cacheKey, cache.store.peekedTiers)
    span?.set({ 'yatagarasu.cache.hit': hit !== undefined, 'yatagarasu.cache.hit_tier': hit?.tier })
    span?.end()
  }
  if (hit !== undefined && hit.entry.freshUntil > Date.now()) return fromHit(x, bucket, cache, cacheKey, hit, request)
  if (hit === undefined && cache.slices !== null) {
    const sliced =
      (await cache.slices.lookup(bucket.source, key, cacheKey)) ??
      (request.head || request.range !== undefined ? await cache.slices.discover(bucket.source, key, cacheKey, cache.maxItemBytes, request.options) : undefined)
    if (sliced !== undefined) return fromSliced(x, bucket, cache, cacheKey, request, sliced, false)
  }
  cache.counters.misses++
  x.cacheUse = { result: 'miss', tier: undefined }
  if (hit !== undefined) return revalidate(x, bucket, cache, cacheKey, key, hit.entry, request)
  if (request.head || request.range !== undefined) {
    return fromOrigin(x, bucket, key, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' })
  }
  return fetchAndFill(x, bucket, cache, cacheKey, key, request)
}

function readRequest(x: Exchange, debugHeaders: boolean, fillFailed?: FillFailed): ObjectRequest {
  const parsed = parseRange(x.header('range'))
  return {
    head: x.method === 'HEAD',
    conditions: {
      ifMatch: x.header('if-match'),
      ifNoneMatch: x.header('if-none-match'),
      ifModifiedSince: x.header('if-modified-since'),
      ifUnmodifiedSince: x.header('if-unmodified-since'),
    },
    range: parsed === 'multiple' ? undefined : parsed,
    ifRange: x.header('if-range'),
    options: new OriginReadOptions(x, debugHeaders),
    fillFailed,
  }
}

/** How an origin read follows the client: built per request, its parts only on first use. */
class OriginReadOptions implements ReadOptions {
  readonly #x: Exchange
  readonly #debugHeaders: boolean
  constructor(x: Exchange, debugHeaders: boolean) {
    this.#x = x
    this.#debugHeaders = debugHeaders
  }
  get span(): TraceSpan | undefined {
    return this.#x.span
  }
  servedBy(replica: string): void {
    this.#x.replica = replica
    if (this.#debugHeaders) this.#x.outgoing.setHeader('x-served-by', replica)
  }
  /** Aborts the origin request when the client goes away (a cache hit never creates it). */
  get signal(): AbortSignal {
    return this.#x.signal
  }
  get abortResponse(): (error: ProxyError) => boolean {
    const x = this.#x
    return (error) => {
      // Before the headers went out, the body was not streaming to this client (the cache was
      // collecting it): the error is answered normally instead.
      if (!x.outgoing.headersSent) return false
      x.error = error
      x.outgoing.destroy()
      return true
    }
  }
}

/**
 * The origin read of a fill: it follows its client (aborted when the client leaves, its failure
 * cuts the client's answer) until the fill reads on at its own pace and the client's answer reads
 * the cache's file (`servedFromFile`: a failure errors the body instead), and, for a fill others
 * share, goes on when the client leaves (`detach`).
 */
class FillReadOptions implements ReadOptions {
  readonly #client: ReadOptions
  readonly #abort = new AbortController()
  #detached = false
  #fromCache = false

  constructor(client: ReadOptions) {
    this.#client = client
    const clientSignal = client.signal
    if (clientSignal?.aborted === true) this.#abort.abort(clientSignal.reason)
    else
      clientSignal?.addEventListener(
        'abort',
        () => {
          if (!this.#detached) this.#abort.abort(clientSignal.reason)
        },
        { once: true }
      )
  }
  get span(): TraceSpan | undefined {
    return this.#client.span
  }
  servedBy(replica: string): void {
    this.#client.servedBy?.(replica)
  }
  get signal(): AbortSignal {
    return this.#abort.signal
  }
  get abortResponse(): (error: ProxyError) => boolean {
    const clientAbort = this.#client.abortResponse
    return (error) => !this.#fromCache && clientAbort?.(error) === true
  }
  /** The body no longer streams to the client: its answer reads what the cache collects. */
  servedFromCache(): void {
    this.#fromCache = true
  }
  /** The read goes on when the client leaves. */
  detach(): void {
    this.#detached = true
  }
}

// ---------------------------------------------------------------------------------------------
// Origin only

async function fromOrigin(
  x: Exchange,
  bucket: BucketRoute,
  key: string,
  request: ObjectRequest,
  outcome: CacheOutcome | undefined
): Promise<Answer> {
  const { options } = request
  if (request.head) {
    const meta = await bucket.source.head(key, options)
    const decided = decide(meta, request)
    if (decided.kind !== 'body') return preconditionAnswer(bucket, decided.kind, meta, outcome)
    return { status: decided.range ? 206 : 200, headers: bodyHeaders(bucket, meta, decided.range, outcome), body: null }
  }

  let body: ObjectBody
  try {
    body = await bucket.source.get(key, request.range, options)
  } catch (err) {
    // The backend refused the range before the proxy saw the validators. Preconditions and
    // If-Range come first (RFC 9110 §13.2.2): decide again on the metadata (a rare extra HEAD).
    const conditional = Object.values(request.conditions).some((v) => v !== undefined) || request.ifRange !== undefined
    if (!(err instanceof ProxyError && err.code === 'RANGE_NOT_SATISFIABLE' && conditional)) throw err
    const meta = await bucket.source.head(key, options)
    const decided = decide(meta, request)
    if (decided.kind !== 'body') return preconditionAnswer(bucket, decided.kind, meta, outcome)
    body = await bucket.source.get(key, undefined, options)
    return streamed(x, bucket, body, outcome)
  }
  const outcomeOfPreconditions = evaluatePreconditions(request.conditions, body.meta)
  if (outcomeOfPreconditions !== 'proceed') {
    await body.stream.cancel()
    return preconditionAnswer(bucket, outcomeOfPreconditions, body.meta, outcome)
  }
  if (body.range !== undefined && !ifRangeAllows(request.ifRange, body.meta)) {
    await body.stream.cancel()
    body = await bucket.source.get(key, undefined, options)
  }
  return streamed(x, bucket, body, outcome)
}

/** Answers with `body`'s bytes. */
function streamed(x: Exchange, bucket: BucketRoute, body: ObjectBody, outcome: CacheOutcome | undefined): Answer {
  x.transfer = body
  const headers = bodyHeaders(bucket, body.meta, body.range, outcome)
  return { status: body.range === undefined ? 200 : 206, headers, body }
}

// ---------------------------------------------------------------------------------------------
// Cache

/**
 * Answers from a cached copy: the same status, headers and bytes a miss would get. `unreadable`
 * answers instead when the entry's StoredBody fails before its first byte (else an internal error).
 */
function fromEntry(
  x: Exchange,
  bucket: BucketRoute,
  entry: CachedObject,
  request: ObjectRequest,
  outcome: CacheOutcome,
  unreadable?: (error: unknown) => Answer | Promise<Answer>
): Answer | Promise<Answer> {
  x.cacheUse = { result: outcome.xCache === 'STALE' ? 'stale' : outcome.xCache === 'HIT' ? 'hit' : 'miss', tier: outcome.tier }
  const meta = entry.meta
  const decided = decide(meta, request)
  outcome.entry = entry
  if (decided.kind !== 'body') return preconditionAnswer(bucket, decided.kind, meta, outcome)
  const headers = decided.range === undefined ? wholeEntryHeaders(bucket, entry, outcome) : bodyHeaders(bucket, meta, decided.range, outcome)
  const status = decided.range === undefined ? 200 : 206
  if (request.head) return { status, headers, body: null }
  const { body } = entry
  if (!(body instanceof Uint8Array)) {
    // A body whose bytes went away mid-answer (a Redis value expired, evicted or replaced): the
    // rest of the same version from the origin.
    const first = decided.range?.start ?? 0
    const last = decided.range?.end ?? meta.size - 1
    const rest = (sent: number) => restOf(bucket, x.matched.key, meta, { start: first + sent, end: last }, x.signal)
    return fromStoredBody(x, { status, headers, body: null }, body, decided.range, unreadable, rest)
  }
  const start = decided.range?.start ?? 0
  const length = decided.range === undefined ? body.length : decided.range.end - start + 1
  // The cached bytes themselves, or a view on them (no copy).
  const bytes =
    length === body.length ? (body as Uint8Array<ArrayBuffer>) : length === 0 ? EMPTY : new Uint8Array(body.buffer as ArrayBuffer, body.byteOffset + start, length)
  x.transfer = { bytesSent: () => length }
  return { status, headers, body: bytes }
}

/**
 * Streams a StoredBody (or the range of it the answer is for) at the client's pace. Its first chunk
 * is read before the answer is given: until then nothing is sent, so a body that fails its check
 * there is answered by `unreadable` (from the origin). A later failure that says the bytes are
 * gone (ports.ts) goes on with `rest` (the same version from the origin, once); any other errors
 * the stream, and Exchange.respond cuts the connection: the client sees a truncated response,
 * never a clean end.
 */
async function fromStoredBody(
  x: Exchange,
  head: Answer,
  body: StoredBody,
  range: ByteRange | undefined,
  unreadable: ((error: unknown) => Answer | Promise<Answer>) | undefined,
  rest: (sent: number) => Promise<ReadableStream<Uint8Array>>
): Promise<Answer> {
  // Exchange.respond writes each chunk out before it reads the next: one buffer per response.
  let reader = body.stream(range, { reuseChunks: true }).getReader()
  let continued = false
  let pending: ReadableStreamReadResult<Uint8Array> | undefined
  try {
    pending = await reader.read()
  } catch (err) {
    if (unreadable !== undefined) return unreadable(err)
    if (err instanceof ProxyError) throw err
    throw new ProxyError('INTERNAL_ERROR', { reason: `cached body unreadable: ${(err as Error).message}`, cause: err })
  }
  let sent = 0
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next = pending
        pending = undefined
        try {
          try {
            next ??= await reader.read()
          } catch (err) {
            if (continued || (err as { gone?: unknown } | undefined)?.gone !== true) throw err
            continued = true
            reader = (await rest(sent)).getReader()
            next = await reader.read()
          }
        } catch (err) {
          // An origin failure behind a sliced body is logged as itself.
          x.error =
            err instanceof ProxyError ? err : new ProxyError('INTERNAL_ERROR', { reason: `cached body failed mid-transfer: ${(err as Error).message}`, cause: err })
          throw err
        }
        if (next.done) {
          controller.close()
        } else {
          sent += next.value.length
          controller.enqueue(next.value)
        }
      },
      cancel(reason) {
        return reader.cancel(reason)
      },
    },
    { highWaterMark: 0 }
  )
  x.transfer = { bytesSent: () => sent }
  return { ...head, body: stream }
}

function wholeEntryHeaders(bucket: BucketRoute, entry: CachedObject, outcome: CacheOutcome): HeaderRecord {
  let built = entryHeaders.get(entry.meta)
  // A reload builds new bucket objects (their Cache-Control policy may differ): rebuild then.
  if (built === undefined || built.bucket !== bucket) {
    built = { bucket, base: bodyHeaders(bucket, entry.meta, undefined, undefined), answer: undefined, answerStatus: '', answerAge: '' }
    entryHeaders.set(entry.meta, built)
  }
  const age = ageOf(entry)
  if (built.answer !== undefined && built.answerStatus === outcome.status && built.answerAge === age) return built.answer
  const headers: HeaderRecord = { ...built.base, 'x-cache': outcome.xCache, 'cache-status': outcome.status }
  if (outcome.xCache !== 'MISS') headers.age = age
  built.answer = headers
  built.answerStatus = outcome.status
  built.answerAge = age
  return headers
}

/** Age (RFC 9111 §5.1) of a cached copy, in whole seconds. */
function ageOf(entry: CachedObject): string {
  return String(Math.max(0, Math.floor((Date.now() - entry.storedAt) / 1000)))
}

async function revalidate(
  x: Exchange,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  key: string,
  stale: CachedObject,
  request: ObjectRequest
): Promise<Answer> {
  let result: ObjectBody | 'not-modified'
  const read = new FillReadOptions(request.options)
  try {
    result = stale.meta.etag === undefined ? await bucket.source.get(key, undefined, read) : await bucket.source.revalidate(key, stale.meta.etag, read)
  } catch (err) {
    const withinWindow = Date.now() < stale.freshUntil + cache.staleIfErrorSeconds * 1000
    if (err instanceof ProxyError && err.source === 'upstream' && withinWindow) {
      cache.counters.stale++
      // The stale copy failing its check too: the origin's error is the answer.
      return fromEntry(x, bucket, stale, request, { xCache: 'STALE', status: `yatagarasu; fwd=stale; fwd-status=${err.status}; detail=stale-if-error` }, () => {
        throw err
      })
    }
    if (err instanceof ProxyError && err.code === 'ORIGIN_NOT_FOUND') void cache.store.delete(cacheKey)
    throw err
  }
  if (result === 'not-modified') {
    const refreshed = refreshEntry(cache, cacheKey, stale)
    return fromEntry(x, bucket, refreshed, request, { xCache: 'HIT', status: 'yatagarasu; fwd=stale; fwd-status=304' }, () =>
      originInstead(x, bucket, cache, cacheKey, request)
    )
  }
  return fill(x, bucket, cache, cacheKey, result, request, read, undefined)
}

async function fetchAndFill(
  x: Exchange,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  key: string,
  request: ObjectRequest,
  takeover = false
): Promise<Answer> {
  /** Another request's fetch answers this one (a copy that fails its check: from the origin). */
  const coalesced = (entry: CachedObject) =>
    fromEntry(x, bucket, entry, request, { xCache: 'HIT', status: 'yatagarasu; hit; detail=coalesced' }, () =>
      fromOrigin(x, bucket, key, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' })
    )
  const inFlight = cache.flights.get(cacheKey)
  if (inFlight !== undefined) {
    // Its body is arriving: read as it grows, at this client's pace.
    const growing = fillStates.get(inFlight)?.growing
    if (growing !== undefined) return coalesced(growing)
    const shared = await joinFlight(cache, inFlight, true)
    if (shared === LATE) {
      // That fetch's body has not begun (S3 is slow to answer), or it is a representation's whole
      // read that stood still: this request fetches the object itself, unless a copy came in
      // meanwhile (another worker's, on the shared disk), and the requests still waiting for the
      // stalled fetch join this one when their wait is over.
      const stored = await lookupEntry(cache, cacheKey)
      if (stored !== undefined && stored.freshUntil > Date.now()) return coalesced(stored)
      if (cache.flights.get(cacheKey) === inFlight) {
        cache.flights.delete(cacheKey)
        // The stalled fetch stores nothing: its copy may be of an older version than this one's.
        const stalled = fillStates.get(inFlight)
        if (stalled !== undefined) stalled.superseded = true
      }
      return fetchAndFill(x, bucket, cache, cacheKey, key, request, true)
    }
    if (shared !== undefined) {
      return coalesced(shared)
    }
    // The leader's object may have turned out to be sliced.
    const sliced = await cache.slices?.lookup(bucket.source, key, cacheKey)
    if (sliced !== undefined) return fromSliced(x, bucket, cache, cacheKey, request, sliced, true)
    return fromOrigin(x, bucket, key, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' })
  }

  const { promise: flight, resolve: settle, reject: fail } = Promise.withResolvers<CachedObject | undefined>()
  flight.catch(() => {})
  cache.flights.set(cacheKey, flight)
  const state: FillState = { movedAt: performance.now(), watchedElsewhere: false, superseded: false, growing: undefined, streaming: Promise.withResolvers() }
  fillStates.set(flight, state)
  let claim: FillClaim | undefined
  let kept: 'entry' | 'sliced' | undefined
  // A purge may have dropped this flight, and a newer one taken its place: only this one leaves.
  const leave = () => {
    if (cache.flights.get(cacheKey) === flight) cache.flights.delete(cacheKey)
    // The other workers read what it kept from the shared directory when it is there now, else
    // fetch it.
    claim?.done(kept === 'entry' ? cache.store.bulk.has(cacheKey) : kept === 'sliced' && cache.slices?.stored(cacheKey) === true)
  }
  const done: Flight = {
    settle: (entry) => {
      if (entry !== undefined) kept = 'entry'
      state.growing = undefined
      settle(entry)
    },
    sliced: () => {
      kept = 'sliced'
    },
    moved: () => {
      state.movedAt = performance.now()
    },
    superseded: () => state.superseded,
    streaming: (entry, writer) => {
      state.growing = entry
      state.streaming.resolve(entry)
      // The other workers waiting for this fetch read its file as it grows.
      if (writer !== undefined && claim !== undefined) {
        const head = { meta: entry.meta, storedAt: entry.storedAt, freshUntil: entry.freshUntil }
        void writer.whereGrowing().then((file) => file !== undefined && claim?.grows(file, head))
      }
    },
    fail: (error) => fail(error),
    leave,
  }
  // A fetch that takes over from a slow one in this worker does not claim: that one holds the claim.
  if (cache.fills !== undefined && !takeover) {
    const claimed = await claimFetch(cache.fills, bucket, cache, cacheKey, key)
    if (claimed.sliced !== undefined) {
      done.settle(undefined)
      leave()
      return fromSliced(x, bucket, cache, cacheKey, request, claimed.sliced, true)
    }
    if (claimed.stored !== undefined) {
      done.settle(claimed.stored)
      leave()
      return coalesced(claimed.stored)
    }
    const { other } = claimed
    if (other !== undefined) {
      // Another worker's fetch, read from its file as it grows, here and by the requests that join
      // this worker's flight; when it is over, they get what it stored. Its pace is watched by its
      // own worker and by the readers here: never counted as standing still.
      state.watchedElsewhere = true
      done.streaming(other.entry)
      void other.ended.then(async (stored) => {
        // Settled first: a request that joins meanwhile still reads the growing file.
        done.settle(stored ? await storedEntry(cache, cacheKey) : undefined)
        other.entry.body.release()
        leave()
      })
      return coalesced(other.entry)
    }
    claim = claimed.claim
  }
  let body: ObjectBody
  const read = new FillReadOptions(request.options)
  try {
    body = await bucket.source.get(key, undefined, read)
  } catch (err) {
    leave()
    done.fail(err)
    throw err
  }
  return fill(x, bucket, cache, cacheKey, body, request, read, done)
}

/**
 * How long a request waits for another request's fetch of a whole object in the same worker while
 * that fetch does not move, before it fetches the object itself (the bucket's deadline, when
 * shorter): S3 slow to send its headers must not hold the others up for long (nginx's
 * proxy_cache_lock_timeout is 5 s). Once the body begins, the waiting requests read it as it grows
 * (fill). A representation's whole read that moves is waited for up to the bucket's deadline.
 */
const FOLLOWER_WAIT_MS = 4_000
/**
 * How long a worker waits for another worker's fetch of a whole object to begin: once its body is
 * being written to the shared directory, this worker reads it as it grows (a small one, once it is
 * stored). At most half the in-worker wait: that wait counts from when this worker's requests
 * joined its fetch, which starts only after this one, so they still share the fetch it makes
 * after waiting.
 */
const OTHER_WORKER_WAIT_MS = 2_000
/** What joinFlight answers when the fetch it waited for stood still for the follower wait, or took the deadline. */
const LATE: unique symbol = Symbol('late')
/** What joinFlight's race takes when the fill started writing a growing entry. */
const GROWING: unique symbol = Symbol('growing')
interface FillState {
  /** When the fetch last moved: given bytes to keep. */
  movedAt: number
  /** Another worker's fill, read here from its file: its pace is not seen here (never standing still). */
  watchedElsewhere: boolean
  /** Another request took it over (it stood still): it stores nothing. */
  superseded: boolean
  /** The entry being written to the disk tier, readable as it grows (fromGrowing), until the fill is over. */
  growing: CachedObject | undefined
  /** Settles with `growing` when the fill starts writing it. */
  streaming: PromiseWithResolvers<CachedObject>
}
/** The whole-object fetches in flight (fetchAndFill), by their flight. */
const fillStates = new WeakMap<Promise<CachedObject | undefined>, FillState>()

const followerWaitOf = (cache: BucketCache) => Math.min(FOLLOWER_WAIT_MS, cache.followerWaitMs)

/**
 * With workers sharing the disk tier, one of them at a time fetches a missing object: the entry
 * another worker stored (it waited for that fetch), the sliced object's metadata that fetch found
 * over max_item_size, or the claim this worker's fetch releases.
 */
async function claimFetch(
  fills: SharedFills,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  key: string
): Promise<{ stored?: CachedObject; sliced?: CachedObject; claim?: FillClaim; other?: OtherWorkersEntry }> {
  const claim = await fills.claim(cacheKey, Math.min(OTHER_WORKER_WAIT_MS, followerWaitOf(cache) / 2))
  if (claim.growing !== undefined) {
    const { head, ended } = claim.growing
    // A fill that began before a purge of the key is not read (this worker's purge log says so):
    // this worker fetches on its own, claiming nothing.
    if (cache.store.purgedAfter(cacheKey, head.storedAt)) return {}
    const rest: BodyRest = (range, signal) => restOf(bucket, key, head.meta, range, signal)
    const body = await claim.growing.open(rest, cache.followerWaitMs)
    if (body !== undefined) return { other: { entry: { ...head, body }, ended } }
    // Its file is gone: that fetch is over. What it stored is read; else this worker fetches on
    // its own (claiming nothing: the others are told to as well).
    const found = (await ended) ? await storedEntry(cache, cacheKey) : undefined
    return found === undefined ? {} : { stored: found }
  }
  // Told it was stored; or free to fetch, which it also is when another worker stored it between
  // this worker's lookup and its claim (the disk tier's has() looks for a file under its name).
  if (claim.answer === 'stored' || cache.store.bulk.has(cacheKey)) {
    // A lookup that fails is a miss: this worker fetches (and releases its claim when it is done).
    const found = await storedEntry(cache, cacheKey)
    // What another worker fetched while this one waited is served even when it is stored already
    // stale (no-cache, max-age=0), as a request that waited in this worker is served it.
    if (found !== undefined && (claim.answer === 'stored' || found.freshUntil > Date.now())) {
      claim.done(true)
      return { stored: found }
    }
  }
  if (claim.answer === 'stored' && cache.slices !== null) {
    const sliced = await cache.slices.lookup(bucket.source, key, cacheKey).catch(() => undefined)
    if (sliced !== undefined) return { sliced }
  }
  return { claim }
}

/** Another worker's fill of a key, read from the shared directory as it grows (claimFetch). */
interface OtherWorkersEntry {
  entry: CachedObject & { body: GrowingBody }
  /** Settles when that fill is over: true when the tier holds the entry now. */
  ended: Promise<boolean>
}

/** The entry the tiers hold for `cacheKey` now (fresh or not); undefined when none, or the lookup failed. */
async function storedEntry(cache: BucketCache, cacheKey: string): Promise<CachedObject | undefined> {
  return (await cache.store.lookup(cacheKey, cache.store.peekedTiers).catch(() => undefined))?.entry
}

/** A whole-object fetch that requests for the same key wait for (fetchAndFill). */
interface Flight {
  /** The entry stored, or undefined (not stored): the waiting requests get it at once. */
  settle(entry: CachedObject | undefined): void
  /** The object turned out over max_item_size: its sliced metadata was stored instead. */
  sliced(): void
  /** The body's next bytes were taken to be kept (the waiting requests wait while it moves). */
  moved(): void
  /** Another request took this fetch over: it stores nothing. */
  superseded(): boolean
  /**
   * The body is arriving (`writer`: into the disk tier's file): the waiting requests read it as it
   * grows (the other workers' too, from the file).
   */
  streaming(entry: CachedObject, writer?: EntryWriter): void
  fail(error: unknown): void
  /** The fetch is over (after the tiers took what they keep). */
  leave(): void
}

/**
 * Keeps a whole object as it comes from the origin, at the origin's pace, and answers this request
 * and those that join from what arrived; then stores it in every tier. A large object is written to
 * the disk tier's file as it comes (never held whole in memory); a small one, or any without a disk
 * tier, is collected into one buffer (GrowingBytes). A small object that came whole with its head
 * is stored and answered as bytes.
 */
async function fill(
  x: Exchange,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  body: ObjectBody,
  request: ObjectRequest,
  read: FillReadOptions,
  flight: Flight | undefined
): Promise<Answer> {
  const policy = storagePolicy(body.meta.cacheControl, cache.ttlSeconds)
  const finish = (kept: CachedObject | undefined) => {
    // Taken over, the other fetch stores: its copy may be of a newer version than this one's.
    const entry = flight?.superseded() === true ? undefined : kept
    flight?.settle(entry)
    if (entry === undefined) {
      flight?.leave()
      // An older stored copy goes (a fill of it still in flight is not a purge to refuse).
      if (!policy.store) void cache.store.drop(cacheKey)
      return
    }
    // The flight stays findable until every tier holds the entry, so a request whose lookup
    // passed a tier just before it was written still joins instead of fetching again.
    void cache.store.set(cacheKey, entry).finally(() => flight?.leave())
  }
  const abandon = (error: unknown) => {
    flight?.leave()
    flight?.fail(error)
  }
  const miss: CacheOutcome = { xCache: 'MISS', status: 'yatagarasu; fwd=miss' }
  if (!policy.store || body.meta.size > cache.maxItemBytes) {
    let sliced: CachedObject | undefined
    try {
      sliced = policy.store ? await cache.slices?.remember(bucket.source, x.matched.key, cacheKey, body.meta) : undefined
      if (sliced !== undefined) flight?.sliced()
    } finally {
      // After the sliced metadata is stored: the requests waiting for this fetch read it.
      finish(undefined)
    }
    if (sliced !== undefined) {
      // Served slice by slice instead (the whole body is not read).
      await body.stream.cancel()
      return fromSliced(x, bucket, cache, cacheKey, request, sliced, true)
    }
    return answerFresh(x, bucket, body, request, miss)
  }
  miss.status = 'yatagarasu; fwd=miss; stored'

  const now = Date.now()
  const head = { meta: body.meta, storedAt: now, freshUntil: now + policy.freshMs }
  // A large body goes to the disk tier as it arrives; a small one (or without a disk tier) is
  // collected and stored at its end.
  const writer = cache.store.writer(cacheKey, head, body.meta.size, () => flight?.superseded() !== true)
  if (writer === undefined && !cache.store.collects(body.meta.size)) {
    // The disk tier, this body's home, does not take it now: not held whole in memory instead.
    finish(undefined)
    return answerFresh(x, bucket, body, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' })
  }
  if (writer === undefined) {
    // A small object that came whole with its head, for a plain GET: stored and answered as bytes
    // (no streams).
    const decided = decide(body.meta, request)
    const bytes = decided.kind === 'body' && decided.range === undefined && !request.head ? body.whole() : undefined
    if (bytes !== undefined) {
      finish({ ...head, body: bytes })
      return { status: 200, headers: bodyHeaders(bucket, body.meta, undefined, miss), body: bytes }
    }
  }
  // Read from the origin at its own pace (the disk's, for a body the disk keeps), whoever reads,
  // into the disk tier's file or one buffer, and answered (this request and those that join) from
  // what arrived, as it grows. A fill others can join goes on when this client leaves; a
  // revalidation's (joined by nobody) stops with it.
  read.servedFromCache()
  // Goes on without this client only when others may share it and a tier will keep what it reads
  // (an abandoned fill of an object no tier takes would read it from S3, and hold it, for nothing).
  if (flight !== undefined && (writer !== undefined || cache.store.keeps(cacheKey, body.meta.size))) read.detach()
  const rest: BodyRest = (range, signal) => restOf(bucket, x.matched.key, body.meta, range, signal)
  const keeper = writer === undefined ? bytesKeeper(new GrowingBytes(body.meta.size, rest), head) : fileKeeper(writer, rest)
  const growing: CachedObject = { ...head, body: keeper.body }
  flight?.streaming(growing, writer)
  if (flight !== undefined) body.tap({ chunk: () => void flight.moved(), end: () => {}, fail: () => {} })
  // Lent pieces, copied into the writer's reused buffers or the one buffer (no garbage per piece).
  body.drainInto(keeper.take).then(
    async (complete) => {
      const entry = await keeper.end(complete)
      keeper.body.release()
      finish(entry)
    },
    (err: unknown) => {
      keeper.fail()
      keeper.body.release()
      // Its readers go on from ranged GETs. The origin's failure is logged on its own line (this
      // request's may be out already: a 304, a client that left), and with this request.
      if (err instanceof ProxyError && !read.signal.aborted) {
        x.error ??= err
        request.fillFailed?.(bucket.name, x.matched.key, err)
      }
      abandon(err)
    }
  )
  return fromEntry(x, bucket, growing, request, miss, () => fromOrigin(x, bucket, x.matched.key, request, { xCache: 'MISS', status: 'yatagarasu; fwd=miss' }))
}

/**
 * Answers from a sliced object's metadata entry (revalidated with a HEAD when stale). X-Cache is
 * HIT when every slice the answer needs is cached as it starts; with some cached it is a MISS with
 * `fwd=partial`. `counted`: the request was already counted as a miss.
 */
async function fromSliced(
  x: Exchange,
  bucket: BucketRoute,
  cache: BucketCache,
  cacheKey: string,
  request: ObjectRequest,
  found: CachedObject,
  counted: boolean,
  restarted = false
): Promise<Answer> {
  const slices = cache.slices as SlicedObjects
  const { key } = x.matched
  let entry: CachedObject | undefined = found
  let stale: CacheOutcome | undefined
  if (entry.freshUntil <= Date.now()) {
    try {
      entry = await slices.discover(bucket.source, key, cacheKey, cache.maxItemBytes, request.options, entry)
    } catch (err) {
      const withinWindow = Date.now() < found.freshUntil + cache.staleIfErrorSeconds * 1000
      if (!(err instanceof ProxyError && err.source === 'upstream' && withinWindow)) {
        if (err instanceof ProxyError && err.code === 'ORIGIN_NOT_FOUND') await slices.forget(cacheKey)
        throw err
      }
      cache.counters.stale++
      stale = { xCache: 'STALE', status: `yatagarasu; fwd=stale; fwd-status=${err.status}; detail=stale-if-error` }
    }
    // No longer over max_item_size (or no longer storable): a plain miss.
    if (entry === undefined) return counted ? originInstead(x, bucket, cache, cacheKey, request) : missOf(x, bucket, cache, cacheKey, request)
  }
  const decided = decide(entry.meta, request)
  const wanted = decided.kind === 'body' && !request.head ? slices.cached(cacheKey, entry.meta, decided.range) : { cached: 0, total: 0 }
  let outcome: CacheOutcome
  if (stale !== undefined) outcome = stale
  else if (wanted.cached === wanted.total) outcome = { xCache: 'HIT', status: 'yatagarasu; hit; detail=slices', tier: 'slices' }
  else if (wanted.cached === 0) outcome = { xCache: 'MISS', status: 'yatagarasu; fwd=miss; detail=slices; stored' }
  else outcome = { xCache: 'MISS', status: 'yatagarasu; fwd=partial; detail=slices; stored' }
  if (!counted) {
    if (outcome.xCache === 'MISS') cache.counters.misses++
    else if (outcome.xCache === 'HIT') cache.counters.hits++
  }
  return fromEntry(x, bucket, entry, request, outcome, async (error) => {
    // Nothing was sent yet: an object that changed is answered again from its new version, once.
    if (!restarted && slices.isVersionChange(error)) {
      const fresh = await slices.discover(bucket.source, key, cacheKey, cache.maxItemBytes, request.options)
      if (fresh === undefined) return originInstead(x, bucket, cache, cacheKey, request)
      return fromSliced(x, bucket, cache, cacheKey, request, fresh, true, true)
    }
    if (error instanceof ProxyError) throw error
    throw new ProxyError('INTERNAL_ERROR', { reason: `sliced body unreadable: ${(error as Error).message}`, cause: error })
  })
}

/** A miss not yet counted: counted, then answered as a miss. */
function missOf(x: Exchange, bucket: BucketRoute, cache: BucketCache, cacheKey: string, request: ObjectRequest): Promise<Answer> {
  cache.counters.misses++
  return originInstead(x, bucket, cache, cacheKey, request)
}

/** Answers a whole-object origin body that is not cached (too large, or not storable). */
async function answerFresh(
  x: Exchange,
  bucket: BucketRoute,
  body: ObjectBody,
  request: ObjectRequest,
  outcome: CacheOutcome
): Promise<Answer> {
  const decided = decide(body.meta, request)
  if (decided.kind !== 'body' || request.head) {
    await body.stream.cancel()
    if (decided.kind !== 'body') return preconditionAnswer(bucket, decided.kind, body.meta, outcome)
    return { status: decided.range ? 206 : 200, headers: bodyHeaders(bucket, body.meta, decided.range, outcome), body: null }
  }
  if (decided.range !== undefined) {
    await body.stream.cancel()
    return fromOrigin(x, bucket, x.matched.key, request, outcome)
  }
  return streamed(x, bucket, body, outcome)
}

/** Where a fill keeps a body as it arrives (fill): the disk tier's file, or one buffer. */
interface Keeper {
  /** What the answers read while it grows. */
  body: GrowingBody
  /** The next lent piece (drainInto's sink). */
  take: (chunk: Uint8Array) => boolean | Promise<boolean>
  /** The body ended (`complete`: every byte came): the entry to store, or undefined. */
  end(complete: boolean): Promise<CachedObject | undefined>
  /** The body failed: nothing is kept. */
  fail(): void
}

function fileKeeper(writer: EntryWriter, rest: BodyRest): Keeper {
  return {
    body: writer.growing(rest),
    take: (chunk) => writer.writeCopy(chunk),
    end: (complete) => {
      if (complete) return writer.commit()
      writer.abort()
      return Promise.resolve(undefined)
    },
    fail: () => writer.abort(),
  }
}

function bytesKeeper(bytes: GrowingBytes, head: Omit<CachedObject, 'body'>): Keeper {
  return {
    body: bytes,
    take: (chunk) => bytes.append(chunk),
    end: (complete) => {
      const whole = complete ? bytes.whole : undefined
      if (whole === undefined) bytes.fail()
      return Promise.resolve(whole === undefined ? undefined : { ...head, body: whole })
    },
    fail: () => bytes.fail(),
  }
}

/**
 * `range` of the object version `meta` describes, from the origin: the rest of a growing body its
 * writing stopped short of. Never another version's bytes: without an ETag to ask for, it fails.
 */
async function restOf(bucket: BucketRoute, key: string, meta: ObjectMeta, range: ByteRange, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
  if (meta.etag === undefined) throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'no_etag' })
  const body = await bucket.source.get(key, { kind: 'bounded', start: range.start, end: range.end }, { signal, ifMatch: meta.etag })
  // An origin that ignores If-Match still says which version it sent.
  if (body.meta.etag !== meta.etag || body.meta.size !== meta.size) {
    await body.stream.cancel().catch(() => {})
    throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'etag_changed' })
  }
  return body.stream
}

// ---------------------------------------------------------------------------------------------
// RFC 9110 decisions and headers

type Decision =
  | { kind: 'not-modified' | 'failed' | 'unsatisfiable' }
  | { kind: 'body'; range: ByteRange | undefined }

/** Preconditions first, then If-Range, then Range (RFC 9110 §13.2.2), against the metadata. */
function decide(meta: ObjectMeta, request: ObjectRequest): Decision {
  const outcome = evaluatePreconditions(request.conditions, meta)
  if (outcome !== 'proceed') return { kind: outcome }
  if (request.range === undefined || !ifRangeAllows(request.ifRange, meta)) return { kind: 'body', range: undefined }
  const range = resolveRange(request.range, meta.size)
  return range === undefined ? { kind: 'unsatisfiable' } : { kind: 'body', range }
}

function unsatisfiable(meta: ObjectMeta): ProxyError {
  return new ProxyError('RANGE_NOT_SATISFIABLE', { headers: { 'content-range': unsatisfiedRange(meta.size) } })
}

/** The answer without a body: 304, or the 412 / 416 error. */
function preconditionAnswer(
  bucket: BucketRoute,
  kind: 'not-modified' | 'failed' | 'unsatisfiable',
  meta: ObjectMeta,
  outcome: CacheOutcome | undefined
): Answer {
  if (kind === 'failed') throw new ProxyError('HTTP_PRECONDITION_FAILED')
  if (kind === 'unsatisfiable') throw unsatisfiable(meta)
  const headers = notModifiedHeaders(meta)
  applyPolicyHeaders(headers, bucket, meta, outcome)
  return { status: 304, headers, body: null }
}

function bodyHeaders(bucket: BucketRoute, meta: ObjectMeta, range: ByteRange | undefined, outcome: CacheOutcome | undefined): HeaderRecord {
  const headers = objectHeaders(meta, range === undefined ? meta.size : range.end - range.start + 1)
  if (range !== undefined) headers['content-range'] = contentRange(range, meta.size)
  if (bucket.forceDownload) headers['content-disposition'] = asAttachment(meta.contentDisposition)
  applyPolicyHeaders(headers, bucket, meta, outcome)
  return headers
}

function applyPolicyHeaders(headers: HeaderRecord, bucket: BucketRoute, meta: ObjectMeta, outcome: CacheOutcome | undefined): void {
  const restricted = bucket.verifier !== null || bucket.authorizer !== null
  const cacheControl = outgoingCacheControl(meta.cacheControl, restricted, bucket.cdnCacheControl)
  if (cacheControl === undefined) delete headers['cache-control']
  else headers['cache-control'] = cacheControl
  if (outcome !== undefined) applyCacheHeaders(headers, outcome)
}

function applyCacheHeaders(headers: HeaderRecord, outcome: CacheOutcome): void {
  headers['x-cache'] = outcome.xCache
  headers['cache-status'] = outcome.status
  if (outcome.entry !== undefined && outcome.xCache !== 'MISS') headers.age = ageOf(outcome.entry)
}

// ---------------------------------------------------------------------------------------------
// Whole objects for representations (pipeline/represent.ts receives these from app.ts)


/**
 * The metadata of `key`'s current version: a fresh cache entry's (a whole object or a sliced one's
 * metadata); a stale one revalidated (a 304 refreshes the entry; a changed object replaces it when
 * it fits); else the origin's answer to a HEAD.
 */
export async function currentVersion(x: Exchange, key: string): Promise<ObjectVersion> {
  const { bucket } = x.matched
  const cache = bucket.cache
  const options = new OriginReadOptions(x, false)
  if (cache === null) return { meta: await bucket.source.head(key, options), storedAt: Date.now(), freshUntil: 0 }
  const cacheKey = `${bucket.name}/${key}`
  const now = Date.now()
  const hit = await lookupEntry(cache, cacheKey)
  if (hit !== undefined && hit.freshUntil > now) return hit
  if (hit !== undefined && hit.meta.etag !== undefined) {
    const result = await bucket.source.revalidate(key, hit.meta.etag, options)
    if (result === 'not-modified') return refreshEntry(cache, cacheKey, hit)
    if (result.meta.size > cache.maxItemBytes) {
      await result.stream.cancel()
      return versionOf(cache, result.meta)
    }
    const { whole } = await storeFetched(cache, cacheKey, result, cache.maxItemBytes, () => new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'body longer than its size' }))
    return { meta: whole.meta, storedAt: Date.now(), freshUntil: whole.freshUntil }
  }
  if (hit === undefined && cache.slices !== null) {
    const sliced = await cache.slices.lookup(bucket.source, key, cacheKey)
    if (sliced !== undefined && sliced.freshUntil > now) return sliced
    // Asked with a HEAD and recorded: the next request finds it fresh.
    const discovered = sliced === undefined ? undefined : await cache.slices.discover(bucket.source, key, cacheKey, cache.maxItemBytes, options, sliced)
    if (discovered !== undefined) return discovered
  }
  return versionOf(cache, await bucket.source.head(key, options))
}

function versionOf(cache: BucketCache, meta: ObjectMeta): ObjectVersion {
  const policy = storagePolicy(meta.cacheControl, cache.ttlSeconds)
  const now = Date.now()
  return { meta, storedAt: now, freshUntil: policy.store ? now + policy.freshMs : 0 }
}

/** The entry the tiers hold for `cacheKey` (fresh or stale), the memory tier first without waiting. */
async function lookupEntry(cache: BucketCache, cacheKey: string): Promise<CachedObject | undefined> {
  const peeked = cache.store.peek(cacheKey)
  if (peeked !== undefined) return peeked.entry
  return cache.store.tiers.length > cache.store.peekedTiers ? (await cache.store.lookup(cacheKey, cache.store.peekedTiers))?.entry : undefined
}

/**
 * Waits for another request's whole-object fetch of the same key: its entry (with `growing`, the
 * growing entry as soon as its body begins); undefined when it failed or was not storable; LATE
 * when it stood still for the follower wait or took the bucket's deadline, and the follower
 * fetches the object itself.
 */
async function joinFlight(cache: BucketCache, inFlight: Promise<CachedObject | undefined>, growing = false): Promise<CachedObject | undefined | typeof LATE> {
  const wait = followerWaitOf(cache)
  const since = performance.now()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof LATE>((resolve) => {
    const check = () => {
      const now = performance.now()
      // A fetch with no progress recorded (a representation's whole read) counts as standing still.
      const watched = fillStates.get(inFlight)
      const still = watched?.watchedElsewhere === true ? 0 : now - Math.max(watched?.movedAt ?? since, since)
      const left = cache.followerWaitMs - (now - since)
      if (still >= wait || left <= 0) return resolve(LATE)
      timer = setTimeout(check, Math.min(wait - still, left))
    }
    timer = setTimeout(check, wait)
  })
  const state = growing ? fillStates.get(inFlight) : undefined
  const streaming = state?.streaming.promise.then((): typeof GROWING => GROWING)
  const joined = await Promise.race([inFlight.catch(() => undefined), deadline, ...(streaming === undefined ? [] : [streaming])])
  clearTimeout(timer)
  // The growing entry is read only while its fill is on: once that settled, what it stored.
  if (joined === GROWING) return state?.growing ?? inFlight.catch(() => undefined)
  return joined
}

/** A stale entry the origin confirmed (304): fresh again, stored again. */
function refreshEntry(cache: BucketCache, cacheKey: string, stale: CachedObject): CachedObject {
  const now = Date.now()
  const refreshed: CachedObject = { ...stale, storedAt: now, freshUntil: now + storagePolicy(stale.meta.cacheControl, cache.ttlSeconds).freshMs }
  void cache.store.set(cacheKey, refreshed)
  return refreshed
}

/**
 * `key`'s current version read whole, for a representation to be made of it: the fresh cache
 * entry, else revalidated or fetched (joining a miss of the same key in flight for at most the
 * follower wait) and stored exactly as a miss stores it. A version over `maxBytes` is refused with
 * `tooLarge()` before its body is read. `shared`: the read serves several requests (a render they
 * all wait for), so it does not stop when this request's client goes away.
 */
export async function wholeObject(x: Exchange, key: string, maxBytes: number, tooLarge: () => Error, shared = false): Promise<WholeObject> {
  const { bucket } = x.matched
  const cache = bucket.cache
  const options: ReadOptions = shared ? { signal: undefined, span: x.span } : new OriginReadOptions(x, false)
  if (cache === null) {
    const body = await bucket.source.get(key, undefined, options)
    return { meta: body.meta, bytes: await readBounded(body, maxBytes, tooLarge), freshUntil: 0 }
  }
  const cacheKey = `${bucket.name}/${key}`
  const hit = await lookupEntry(cache, cacheKey)
  const stored = (entry: CachedObject) => wholeOf(entry, maxBytes, tooLarge)
  if (hit !== undefined && hit.freshUntil > Date.now()) {
    if (hit.meta.size > maxBytes) throw tooLarge()
    try {
      return await stored(hit)
    } catch {
      // The cached body failed its check (the tier dropped it): read the origin instead.
    }
  }
  if (hit !== undefined && hit.meta.etag !== undefined && hit.freshUntil <= Date.now()) {
    const result = await bucket.source.revalidate(key, hit.meta.etag, options)
    if (result !== 'not-modified') return (await storeFetched(cache, cacheKey, result, maxBytes, tooLarge)).whole
    try {
      return await stored(refreshEntry(cache, cacheKey, hit))
    } catch {
      // Its body failed its check, or is gone (a Redis value evicted meanwhile): fetched below.
    }
  }
  const inFlight = cache.flights.get(cacheKey)
  if (inFlight !== undefined) {
    const joined = await joinFlight(cache, inFlight)
    if (joined !== undefined && joined !== LATE) {
      try {
        return await stored(joined)
      } catch {
        // As above: fetched below.
      }
    }
  }
  return (await fetchWhole(bucket, cache, key, options, maxBytes, tooLarge)).whole
}

/**
 * Leads one whole-object fetch of `key`: misses of the same key (a plain GET, a representation, a
 * prewarm) wait for it, and it is stored as a miss stores it. A body over `maxBytes` is refused with
 * `tooLarge()` before it is read. `stored` settles when every tier holds the entry; undefined: not
 * stored (no-store, or over max_item_size).
 */
export async function fetchWhole(
  bucket: BucketRoute,
  cache: BucketCache,
  key: string,
  options: ReadOptions,
  maxBytes: number,
  tooLarge: () => Error
): Promise<{ whole: WholeObject; stored: Promise<void> | undefined }> {
  const cacheKey = `${bucket.name}/${key}`
  const { promise: flight, resolve: settle } = Promise.withResolvers<CachedObject | undefined>()
  cache.flights.set(cacheKey, flight)
  let fetched: { whole: WholeObject; stored: Promise<void> | undefined; entry: CachedObject | undefined } | undefined
  try {
    fetched = await storeFetched(cache, cacheKey, await bucket.source.get(key, undefined, options), maxBytes, tooLarge)
    // The flight stays findable until every tier holds the entry (as a fill keeps it), so a request
    // whose lookup passed a tier just before it was written still joins instead of fetching again.
    const stored = fetched.stored?.finally(() => {
      if (cache.flights.get(cacheKey) === flight) cache.flights.delete(cacheKey)
    })
    return { whole: fetched.whole, stored }
  } finally {
    if (fetched?.stored === undefined && cache.flights.get(cacheKey) === flight) cache.flights.delete(cacheKey)
    settle(fetched?.entry)
  }
}

/** An origin body read whole (at most `maxBytes`) and stored when a miss would store it. */
async function storeFetched(
  cache: BucketCache,
  cacheKey: string,
  body: ObjectBody,
  maxBytes: number,
  tooLarge: () => Error
): Promise<{ whole: WholeObject; stored: Promise<void> | undefined; entry: CachedObject | undefined }> {
  // When S3 answered, not when the body was read: a purge while it was read refuses this copy.
  const fetchedAt = Date.now()
  const bytes = await readBounded(body, maxBytes, tooLarge)
  const policy = storagePolicy(body.meta.cacheControl, cache.ttlSeconds)
  const now = Date.now()
  const freshUntil = policy.store ? now + policy.freshMs : 0
  const whole: WholeObject = { meta: body.meta, bytes, freshUntil }
  if (!policy.store || bytes.length > cache.maxItemBytes) return { whole, stored: undefined, entry: undefined }
  const entry: CachedObject = { meta: body.meta, body: bytes, storedAt: fetchedAt, freshUntil }
  return { whole, stored: cache.store.set(cacheKey, entry).then(ignore, ignore), entry }
}

const ignore = () => {}

/** A body read whole, refused before reading when its size says it is over `maxBytes` and cut when it lies. */
async function readBounded(body: ObjectBody, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  if (body.meta.size > maxBytes) {
    await body.stream.cancel()
    throw tooLarge()
  }
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of body.stream) {
    size += chunk.length
    if (size > maxBytes) throw tooLarge()
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size)
}

async function wholeOf(entry: CachedObject, maxBytes: number, tooLarge: () => Error): Promise<WholeObject> {
  if (entry.meta.size > maxBytes) throw tooLarge()
  const bytes = entry.body instanceof Uint8Array ? entry.body : await collect(entry.body.stream(undefined, { reuseChunks: false }))
  return { meta: entry.meta, bytes, freshUntil: entry.freshUntil }
}

/**
 * Answers a representation's entry (an image variant, a compressed body) exactly as an object is
 * answered from the cache: Range, 304, 412, 416 and HEAD by its own validators.
 */
export function answerEntry(x: Exchange, entry: CachedObject, outcome: RepresentationOutcome, debugHeaders: boolean): Answer | Promise<Answer> {
  return fromEntry(x, x.matched.bucket, entry, readRequest(x, debugHeaders), { ...outcome })
}
