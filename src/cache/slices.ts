// Slice caching of objects over max_item_size (nginx's `slice` module is the model). Such an object
// is kept as a small metadata entry and fixed-size, aligned slices, each an entry of its own:
//
//   <bucket>/<key>\0sliced                   metadata (size, ETag, type...), empty body, revalidated
//                                            with a HEAD like an entry is
//   <bucket>/<key>\0slice:<size>:<etag>:<index>
//                                            bytes [index * size, (index + 1) * size) of that version
//
// (derived-keys.ts: NUL never appears in an object key; these keys start with the object's, so
// purges and budgets treat them as the object's, and deleting the object's key deletes them.)
//
// The metadata entry's body is a SlicedBody: a StoredBody that streams a range slice after slice,
// each from the cache or fetched with one ranged GET under `If-Match: <etag>` (concurrent readers
// of a missing slice wait for one fetch, through the same flights map as whole-object misses; a
// metadata entry being stored is found there too, before its tier holds it; the workers of an
// instance sharing the disk tier claim a slice through the primary, and one of them fetches it).
// A stream asks for the next slice of its range as it opens the current one (read-ahead). Memory
// per stream: the two slices being fetched (a slice the tier will not keep is held whole), or one
// disk read. When the origin answers that the
// ETag changed, the object's metadata and slices are dropped and the stream errors: the serve
// stage restarts when nothing was sent yet, and cuts the connection otherwise.
import { ProxyError } from '../errors.ts'
import { storagePolicy } from '../http/freshness.ts'
import type {
  CachedObject,
  FillClaim,
  ObjectSource,
  ReadOptions,
  SharedFills,
  SlicedObjects,
  StoredBody,
  StoredBodyStreamOptions,
  TieredStore,
} from '../ports.ts'
import type { ByteRange, ObjectMeta } from '../types.ts'
import { DERIVED_MARK } from './derived-keys.ts'

/** A slice never changes under its key (the ETag is in it): kept until evicted or purged. */
const SLICE_LIFETIME_MS = 7 * 24 * 3600 * 1000
const EMPTY = Buffer.alloc(0)
const ETAG_CHANGED = 'etag_changed'

export interface SliceCacheOptions {
  /** Memory and disk tiers: the metadata entries. */
  local: TieredStore
  /** Where slices are kept (disk, when there is one). */
  bulk: TieredStore
  /** Fetches in flight by cache key (shared with whole-object misses). */
  flights: Map<string, Promise<CachedObject | undefined>>
  /** With `server.workers` > 1: the workers sharing the disk tier, so each slice is fetched by one of them at a time. */
  fills?: SharedFills
  sliceBytes: number
  ttlSeconds: number
}

export class SliceCache implements SlicedObjects {
  readonly sliceBytes: number
  readonly #options: SliceCacheOptions
  /** The flights (under metadata keys) that are metadata entries being stored, not HEADs. */
  readonly #records = new WeakSet<Promise<CachedObject | undefined>>()

  constructor(options: SliceCacheOptions) {
    this.sliceBytes = options.sliceBytes
    this.#options = options
  }

  async lookup(source: ObjectSource, key: string, cacheKey: string): Promise<CachedObject | undefined> {
    const { local, flights } = this.#options
    const metaKey = metaKeyOf(cacheKey)
    // Metadata being stored is found before the tier holds it: the requests that waited for the
    // whole GET which turned out too large look here as soon as it is known, and must not each
    // stream the whole object from the origin instead.
    const recording = flights.get(metaKey)
    const entry =
      recording !== undefined && this.#records.has(recording)
        ? await recording.catch(() => undefined)
        : (local.peek(metaKey) ?? (await local.lookup(metaKey, local.peekedTiers)))?.entry
    return entry === undefined ? undefined : this.#sliced(source, key, cacheKey, entry)
  }

  async discover(
    source: ObjectSource,
    key: string,
    cacheKey: string,
    maxItemBytes: number,
    options: ReadOptions,
    stale?: CachedObject
  ): Promise<CachedObject | undefined> {
    const { flights } = this.#options
    const metaKey = metaKeyOf(cacheKey)
    let flight = flights.get(metaKey)
    if (flight === undefined) {
      flight = source.head(key, { signal: undefined, span: options.span }).then(async (meta) => {
        if (stale !== undefined && stale.meta.etag !== meta.etag) await this.forget(cacheKey)
        if (meta.size <= maxItemBytes) {
          if (stale !== undefined) await this.forget(cacheKey)
          return undefined
        }
        return this.#record(cacheKey, meta)
      })
      flights.set(metaKey, flight)
      const own = flight
      const leave = () => {
        if (flights.get(metaKey) === own) flights.delete(metaKey)
      }
      void flight.then(leave, leave)
    }
    const entry = await flight
    return entry === undefined ? undefined : this.#sliced(source, key, cacheKey, entry)
  }

  async remember(source: ObjectSource, key: string, cacheKey: string, meta: ObjectMeta): Promise<CachedObject | undefined> {
    const entry = await this.#record(cacheKey, meta)
    return entry === undefined ? undefined : this.#sliced(source, key, cacheKey, entry)
  }

  stored(cacheKey: string): boolean {
    return this.#options.bulk.has(metaKeyOf(cacheKey))
  }

  cached(cacheKey: string, meta: ObjectMeta, range: ByteRange | undefined): { cached: number; total: number } {
    const { bulk, flights } = this.#options
    const { sliceBytes } = this
    if (meta.size === 0) return { cached: 0, total: 0 }
    const first = Math.floor((range?.start ?? 0) / sliceBytes)
    const last = Math.floor((range?.end ?? meta.size - 1) / sliceBytes)
    let cached = 0
    // A slice being fetched for another request counts: this one waits for that fetch (coalesced).
    for (let i = first; i <= last; i++) {
      const key = this.#keyOf(cacheKey, meta, i)
      if (bulk.has(key) || flights.has(key)) cached++
    }
    return { cached, total: last - first + 1 }
  }

  isVersionChange(error: unknown): boolean {
    return error instanceof ProxyError && error.reason === ETAG_CHANGED
  }

  async forget(cacheKey: string): Promise<void> {
    // A metadata entry still being stored is forgotten too: a restart must ask S3 again.
    const { flights } = this.#options
    const metaKey = metaKeyOf(cacheKey)
    const flight = flights.get(metaKey)
    if (flight !== undefined && this.#records.has(flight)) flights.delete(metaKey)
    await this.#options.local.purge(`${cacheKey}${DERIVED_MARK}`)
  }

  /** Stores the metadata entry; undefined when the object may not be stored (no-store, private). */
  async #record(cacheKey: string, meta: ObjectMeta): Promise<CachedObject | undefined> {
    const policy = storagePolicy(meta.cacheControl, this.#options.ttlSeconds)
    if (!policy.store || meta.etag === undefined) return undefined
    const { local, flights } = this.#options
    const metaKey = metaKeyOf(cacheKey)
    const now = Date.now()
    const entry: CachedObject = { meta, body: EMPTY, storedAt: now, freshUntil: now + policy.freshMs }
    const stored = local.set(metaKey, entry).then(() => entry)
    // Findable as a flight, already settled, until the tier holds it (a HEAD in flight for the key
    // already is one): a lookup gets the entry at once, never waits for the disk write.
    if (!flights.has(metaKey)) {
      const known = Promise.resolve(entry)
      this.#records.add(known)
      flights.set(metaKey, known)
      const leave = () => {
        if (flights.get(metaKey) === known) flights.delete(metaKey)
      }
      stored.then(leave, leave)
    }
    return stored
  }

  /** The metadata entry as the whole object: its body streams the slices. */
  #sliced(source: ObjectSource, key: string, cacheKey: string, entry: CachedObject): CachedObject {
    return { ...entry, body: new SlicedBody(this, source, key, cacheKey, entry.meta) }
  }

  /** Slice `index` of the version `meta`: from the cache, or fetched (one fetch at a time per slice). */
  async slice(source: ObjectSource, key: string, cacheKey: string, meta: ObjectMeta, index: number): Promise<CachedObject> {
    const { bulk, flights, fills } = this.#options
    const sliceKey = this.#keyOf(cacheKey, meta, index)
    for (;;) {
      const hit = bulk.peek(sliceKey) ?? (await bulk.lookup(sliceKey, bulk.peekedTiers))
      if (hit !== undefined) return hit.entry
      const inFlight = flights.get(sliceKey)
      if (inFlight === undefined) break
      try {
        const shared = await inFlight
        if (shared !== undefined) return shared
      } catch (err) {
        if (this.isVersionChange(err)) throw err
        // The fetch this request waited for failed for its own reasons: try once more ourselves.
      }
      if (flights.get(sliceKey) === inFlight) flights.delete(sliceKey)
    }
    let claim: FillClaim | undefined
    /** Read from the tier, where another worker stored it: not stored again. */
    let fromTier = false
    const fetched = (async () => {
      // The workers sharing the disk tier fetch a slice once too: one fetches, the others read it.
      claim = await fills?.claim(sliceKey)
      // Told it was stored; or free to fetch, which it also is when another worker stored it
      // between this worker's lookup and its claim (has() looks for a file under its name).
      if (claim !== undefined && (claim.answer === 'stored' || bulk.has(sliceKey))) {
        const stored = await bulk.lookup(sliceKey)
        fromTier = stored !== undefined
        if (stored !== undefined) {
          claim.done(true)
          return stored.entry
        }
      }
      // A slice the disk will not keep: the other workers need not wait for this fetch.
      return this.#fetch(source, key, cacheKey, meta, index, false, () => claim?.done(false))
    })()
    flights.set(sliceKey, fetched)
    try {
      const entry = (await fetched) as CachedObject
      const leave = () => {
        if (flights.get(sliceKey) === fetched) flights.delete(sliceKey)
      }
      if (fromTier) leave()
      // Findable as a flight until the tier holds it, so no one fetches it again meanwhile.
      else
        void bulk.set(sliceKey, entry).finally(() => {
          claim?.done(bulk.has(sliceKey))
          leave()
        })
      return entry
    } catch (err) {
      claim?.done(false)
      if (flights.get(sliceKey) === fetched) flights.delete(sliceKey)
      if (this.isVersionChange(err)) await this.forget(cacheKey)
      throw err
    }
  }

  #keyOf(cacheKey: string, meta: ObjectMeta, index: number): string {
    return sliceKeyOf(cacheKey, this.sliceBytes, meta.etag, index)
  }

  /** Drops a slice that failed its check, so the next read fetches it again. */
  async dropSlice(cacheKey: string, meta: ObjectMeta, index: number): Promise<void> {
    await this.#options.bulk.delete(this.#keyOf(cacheKey, meta, index))
  }

  /**
   * Slice `index` from the origin, into the disk tier as it arrives (`inMemory`: into a buffer).
   * `unkept` is called as soon as it is known that the tier will not keep it.
   */
  async #fetch(
    source: ObjectSource,
    key: string,
    cacheKey: string,
    meta: ObjectMeta,
    index: number,
    inMemory: boolean,
    unkept: () => void
  ): Promise<CachedObject | undefined> {
    const start = index * this.sliceBytes
    const end = Math.min(meta.size, start + this.sliceBytes) - 1
    // Not tied to one client: others may be waiting for this slice, and it is worth keeping.
    const body = await source.get(key, { kind: 'bounded', start, end }, { signal: undefined, ifMatch: meta.etag })
    // An origin that ignores If-Match still says which version it sent.
    if (body.meta.etag !== meta.etag || body.meta.size !== meta.size) {
      await body.stream.cancel().catch(() => {})
      throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: ETAG_CHANGED })
    }
    const length = end - start + 1
    const now = Date.now()
    const head = { meta: { ...meta, size: length }, storedAt: now, freshUntil: now + SLICE_LIFETIME_MS }
    // Into the disk tier as it arrives: a cold slice is never held whole in memory.
    const { bulk } = this.#options
    const writer = inMemory ? undefined : bulk.writer(this.#keyOf(cacheKey, meta, index), head, length)
    if (writer !== undefined) {
      const stored = await writer.writeAll(body.stream)
      if (stored !== undefined) return stored
      // The disk could not keep it (or the origin sent another length): fetched again into
      // memory, for this answer at least (a wrong length is refused there).
      unkept()
      return this.#fetch(source, key, cacheKey, meta, index, true, unkept)
    }
    // Neither written as it comes nor collected for the tier (over a budget, disk writes paused).
    if (!inMemory && !bulk.collects(length)) unkept()
    // Read into one buffer of the slice's size: no list of chunks copied again at the end (a cold
    // slice then costs its size in memory once, not twice).
    const bytes = Buffer.allocUnsafe(length)
    let received = 0
    for await (const chunk of body.stream) {
      if (received + chunk.length > length) throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'slice_length' })
      bytes.set(chunk, received)
      received += chunk.length
    }
    if (received !== length) throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'slice_length' })
    return { ...head, body: bytes }
  }
}

/**
 * A sliced object's body: `stream(range)` reads the slices the range overlaps, one after another
 * (the next one asked for ahead), each from the cache (a disk slice streamed by range, checked
 * block by block) or fetched.
 */
class SlicedBody implements StoredBody {
  readonly length: number
  readonly #cache: SliceCache
  readonly #source: ObjectSource
  readonly #key: string
  readonly #cacheKey: string
  readonly #meta: ObjectMeta

  constructor(cache: SliceCache, source: ObjectSource, key: string, cacheKey: string, meta: ObjectMeta) {
    this.length = meta.size
    this.#cache = cache
    this.#source = source
    this.#key = key
    this.#cacheKey = cacheKey
    this.#meta = meta
  }

  stream(range?: ByteRange, options: StoredBodyStreamOptions = {}): ReadableStream<Uint8Array> {
    const size = this.#cache.sliceBytes
    const start = range?.start ?? 0
    const end = range?.end ?? this.length - 1
    let index = Math.floor(start / size)
    let inner: ReadableStreamDefaultReader<Uint8Array> | undefined
    /** Chunks handed on from the current slice (a damaged slice is refetched only before any). */
    let fromSlice = 0
    let refetched = false
    const sliceAt = (at: number) => this.#cache.slice(this.#source, this.#key, this.#cacheKey, this.#meta, at)
    /**
     * The next slice of the range, asked for one step early (read-ahead): a cold answer fetches it
     * while it waits for (or streams) the current one, instead of only once that one is sent. The
     * answer keeps what it asked for: a slice the tier would not keep is not fetched twice.
     */
    let ahead: { index: number; slice: Promise<CachedObject> } | undefined
    const open = async () => {
      const early = ahead?.index === index ? ahead.slice : undefined
      // The slice this answer waits for is asked for first (its GET goes out first).
      const current =
        early?.catch((err: unknown) => {
          // A version change ends the answer; any other failure is tried once more, now.
          if (this.#cache.isVersionChange(err)) throw err
          return sliceAt(index)
        }) ?? sliceAt(index)
      // After a damaged slice's refetch the next one is already asked for.
      if ((index + 1) * size <= end && ahead?.index !== index + 1) {
        const next = sliceAt(index + 1)
        // Its failure is met when the answer gets to it.
        next.catch(() => {})
        ahead = { index: index + 1, slice: next }
      }
      const slice = await current
      const base = index * size
      const part = { start: Math.max(start, base) - base, end: Math.min(end, base + slice.body.length - 1) - base }
      fromSlice = 0
      const { body } = slice
      return body instanceof Uint8Array ? once(body.subarray(part.start, part.end + 1)) : body.stream(part, options).getReader()
    }
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          for (;;) {
            if (index * size > end) {
              controller.close()
              return
            }
            inner ??= await open()
            let next: ReadableStreamReadResult<Uint8Array>
            try {
              next = await inner.read()
            } catch (err) {
              inner = undefined
              // A cached slice that failed its check before giving anything: the disk tier dropped
              // it; fetch it again once.
              if (fromSlice > 0 || refetched) throw err
              refetched = true
              await this.#cache.dropSlice(this.#cacheKey, this.#meta, index)
              continue
            }
            if (next.done) {
              inner = undefined
              index++
              refetched = false
              continue
            }
            fromSlice++
            controller.enqueue(next.value)
            return
          }
        },
        cancel: async (reason) => {
          await inner?.cancel(reason)
        },
      },
      { highWaterMark: 0 }
    )
  }

  /** Never read whole: a sliced object is larger than any tier keeps in one piece. */
  async bytes(): Promise<Buffer> {
    throw new Error('a sliced object is streamed, never read whole')
  }
}

function metaKeyOf(cacheKey: string): string {
  return `${cacheKey}${DERIVED_MARK}sliced`
}

/**
 * Slice `index` of the version `etag` cut in slices of `sliceBytes`: a restart with another
 * `slice_size` over the same directory never reads a slice cut the old way at the new offsets.
 */
function sliceKeyOf(cacheKey: string, sliceBytes: number, etag: string | undefined, index: number): string {
  return `${cacheKey}${DERIVED_MARK}slice:${sliceBytes}:${etag ?? ''}:${index}`
}

/** A reader of one chunk. */
function once(bytes: Uint8Array): ReadableStreamDefaultReader<Uint8Array> {
  let done = false
  return {
    read: async () => {
      if (done) return { done: true, value: undefined }
      done = true
      return { done: false, value: bytes }
    },
    cancel: async () => {},
    releaseLock: () => {},
    closed: Promise.resolve(undefined),
  } as ReadableStreamDefaultReader<Uint8Array>
}
