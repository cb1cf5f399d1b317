// Memory tier: an LRU bounded by bytes (lru-cache with size accounting), with a per-item limit and
// a per-entry lifetime of freshness plus the stale window.
import { LRUCache } from 'lru-cache'
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'
import { purgeByPrefix, TierCounters } from './tier-stats.ts'

export interface MemoryCacheOptions {
  maxBytes: number
  maxItemBytes: number
  /** How long past `freshUntil` an entry is kept for stale-if-error. */
  staleSeconds: number
}

/** Rough per-entry overhead (metadata, map slots), so many tiny objects cannot exceed the budget. */
const ENTRY_OVERHEAD = 512

export class MemoryCache implements CacheStore {
  readonly name = 'memory'
  readonly #lru: LRUCache<string, CachedObject>
  readonly #staleMs: number
  readonly #counters = new TierCounters()

  constructor(options: MemoryCacheOptions) {
    this.#staleMs = options.staleSeconds * 1000
    this.#lru = new LRUCache<string, CachedObject>({
      maxSize: options.maxBytes,
      maxEntrySize: options.maxItemBytes + ENTRY_OVERHEAD,
      sizeCalculation: (entry) => entry.body.length + ENTRY_OVERHEAD,
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.#counters.evictions++
      },
    })
  }

  async get(key: string): Promise<CachedObject | undefined> {
    return this.peek(key)
  }

  /** `get` without a promise: the memory tier never waits. */
  peek(key: string): CachedObject | undefined {
    return this.#counters.record(this.#lru.get(key))
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    const ttl = entry.freshUntil + this.#staleMs - Date.now()
    if (ttl > 0) this.#lru.set(key, entry, { ttl })
  }

  async delete(key: string): Promise<void> {
    this.#lru.delete(key)
  }

  async purge(prefix: string): Promise<number> {
    return purgeByPrefix(this.#lru, prefix)
  }

  stats(): CacheTierStats {
    return this.#counters.snapshot(this.#lru.size, this.#lru.calculatedSize)
  }

  async close(): Promise<void> {
    this.#lru.clear()
  }
}
