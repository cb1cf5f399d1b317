// Memory tier: an LRU bounded by bytes (lru-cache with size accounting), with a per-item limit, a
// per-entry lifetime of freshness plus the stale window, and optional per-bucket budgets
// (bucket-budgets.ts) inside the tier's size. It keeps bytes only: a StoredBody handed to `set` (a
// disk hit copied up) is read whole, in one read, and only when the entry would be kept.
import { LRUCache } from 'lru-cache'
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'
import { BucketBudgets, type BucketBudgetMap } from './bucket-budgets.ts'
import { DerivedKeys } from './derived-keys.ts'
import { purgeByPrefix, TierCounters } from './tier-stats.ts'

export interface MemoryCacheOptions {
  maxBytes: number
  maxItemBytes: number
  /** How long past `freshUntil` an entry is kept for stale-if-error. */
  staleSeconds: number
  /** Bytes per bucket name; buckets left out share what these leave of `maxBytes`. */
  budgets?: BucketBudgetMap | undefined
}

/** Rough per-entry overhead (metadata, map slots), so many tiny objects cannot exceed the budget. */
const ENTRY_OVERHEAD = 512

const sizeOf = (entry: CachedObject) => entry.body.length + ENTRY_OVERHEAD

export class MemoryCache implements CacheStore {
  readonly name = 'memory'
  readonly #lru: LRUCache<string, CachedObject>
  readonly #maxBytes: number
  readonly #maxEntryBytes: number
  readonly #staleMs: number
  readonly #counters = new TierCounters()
  /** Keys whose StoredBody is being read for a `set`, and which call it is. */
  readonly #reading = new Map<string, symbol>()
  /** Slices and sliced metadata by object key: deleted with it. */
  readonly #derived = new DerivedKeys()
  #budgets: BucketBudgets | undefined
  #budgetsBuilt = '{}'

  constructor(options: MemoryCacheOptions) {
    this.#staleMs = options.staleSeconds * 1000
    this.#maxBytes = options.maxBytes
    this.#maxEntryBytes = Math.min(options.maxItemBytes + ENTRY_OVERHEAD, options.maxBytes)
    this.#lru = new LRUCache<string, CachedObject>({
      maxSize: options.maxBytes,
      maxEntrySize: this.#maxEntryBytes,
      sizeCalculation: sizeOf,
      dispose: (_value, key, reason) => {
        if (reason === 'evict') this.#counters.evictions++
        if (reason !== 'set') {
          this.#budgets?.forget(key)
          this.#derived.remove(key)
        }
      },
    })
    this.setBudgets(options.budgets ?? {})
  }

  async get(key: string): Promise<CachedObject | undefined> {
    return this.peek(key)
  }

  /** `get` without a promise: the memory tier never waits. */
  peek(key: string): CachedObject | undefined {
    const entry = this.#lru.get(key)
    if (entry !== undefined) this.#budgets?.touch(key)
    return this.#counters.record(entry)
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    const { body } = entry
    if (!(body instanceof Uint8Array)) {
      // A StoredBody (a disk hit copied up): read whole, once, and only when it would be kept.
      const wanted = Symbol(key)
      this.#reading.set(key, wanted)
      const bytes = this.#fits(key, entry) ? await body.bytes().catch(() => undefined) : undefined
      // A later set or delete of the key while this one read wins.
      if (this.#reading.get(key) !== wanted) return
      this.#reading.delete(key)
      if (bytes === undefined) {
        this.#drop(key)
        return
      }
      return this.set(key, { ...entry, body: bytes })
    }
    this.#reading.delete(key)
    // A view of a much larger buffer (a slice of Node's buffer pool from a disk hit, a Redis
    // reply) is copied: the entry must not keep the rest of that memory alive.
    if (body.byteLength * 2 < body.buffer.byteLength) entry = { ...entry, body: ownCopy(body) }
    const ttl = entry.freshUntil + this.#staleMs - Date.now()
    const size = sizeOf(entry)
    // The bucket's budget is applied first, so a bucket over it evicts its own entries before the
    // tier's LRU would evict anyone else's. An entry that cannot be stored also drops the key's
    // older copy: an outdated object is never left behind.
    if (ttl <= 0 || size > this.#maxEntryBytes || this.#budgets?.track(key, size) === false) {
      this.#lru.delete(key)
      return
    }
    this.#lru.set(key, entry, { ttl })
    if (this.#lru.has(key)) this.#derived.add(key)
  }

  async delete(key: string): Promise<void> {
    this.#drop(key)
    for (const derived of this.#derived.of(key)) this.#drop(derived)
  }

  /** Whether the tier holds `key` now (no hit counted, recency unchanged). */
  has(key: string): boolean {
    return this.#lru.has(key)
  }

  async purge(prefix: string): Promise<number> {
    for (const key of [...this.#reading.keys()]) if (key.startsWith(prefix)) this.#reading.delete(key)
    return purgeByPrefix(this.#lru, prefix)
  }

  /**
   * Applies new per-bucket budgets to the entries already held (on reload): each bucket keeps its
   * most recently used entries within its new budget.
   */
  setBudgets(budgets: BucketBudgetMap): void {
    const built = JSON.stringify(budgets)
    if (built === this.#budgetsBuilt) return
    this.#budgetsBuilt = built
    this.#budgets = BucketBudgets.create(this.#maxBytes, budgets, (key) => this.#evictForBudget(key))
    const held: Array<[string, number]> = []
    this.#lru.rforEach((entry, key) => held.push([key, sizeOf(entry)]))
    this.#budgets?.adopt(held)
  }

  stats(): CacheTierStats {
    return this.#counters.snapshot(this.#lru.size, this.#lru.calculatedSize)
  }

  async close(): Promise<void> {
    this.#reading.clear()
    this.#lru.clear()
  }

  keeps(key: string, size: number): boolean {
    const bytes = size + ENTRY_OVERHEAD
    return bytes <= this.#maxEntryBytes && this.#budgets?.fits(key, bytes) !== false
  }

  /** Whether `set` would keep the entry (before reading a StoredBody for it). */
  #fits(key: string, entry: CachedObject): boolean {
    const size = sizeOf(entry)
    return entry.freshUntil + this.#staleMs > Date.now() && size <= this.#maxEntryBytes && this.#budgets?.fits(key, size) !== false
  }

  #drop(key: string): void {
    this.#reading.delete(key)
    this.#lru.delete(key)
  }

  #evictForBudget(key: string): void {
    if (this.#lru.delete(key)) this.#counters.evictions++
  }
}

/** The bytes in memory of their own (Buffer.from would put a small one in Node's shared pool). */
function ownCopy(bytes: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafeSlow(bytes.length)
  copy.set(bytes)
  return copy
}
