// Per-bucket byte budgets inside one cache tier (`buckets[].cache.max_size`), so one bucket's
// traffic cannot push the other buckets' entries out of the tier.
//
// The tier keeps every entry in its own LRU, bounded by the tier's size. This class shadows the
// same keys (with their sizes) in one LRU per group, each bounded by the group's limit:
//   - a bucket with a budget: at most its budget (never more than the tier);
//   - every bucket without one, together: what the budgets leave of the tier (nothing when the
//     budgets take it all: those buckets then do not use this tier).
// A group over its limit evicts its own least recently used entries from the tier. The limits add
// up to at most the tier's size, so the tier's own LRU never has to evict: no group's traffic
// touches another group's entries. Keys are `<bucket name>/<object key>` (ports.ts); config/load.ts
// refuses bucket names that would make a key's bucket ambiguous while budgets are set.
import { LRUCache } from 'lru-cache'

/** Bytes per bucket name. */
export type BucketBudgetMap = Readonly<Record<string, number>>

interface Group {
  /** `<bucket name>/`; '' for the buckets without a budget. */
  prefix: string
  limit: number
  /** Key -> size; undefined when the limit is 0 (the group stores nothing in this tier). */
  lru: LRUCache<string, number> | undefined
}

export class BucketBudgets {
  /** The budgeted buckets, longest name first. */
  readonly #budgeted: Group[]
  readonly #shared: Group
  readonly #evict: (key: string) => void

  /**
   * Undefined when no bucket has a budget (the tier's LRU alone decides). `evict` must remove the
   * key from the tier (which then calls `forget`).
   */
  static create(tierBytes: number, budgets: BucketBudgetMap, evict: (key: string) => void): BucketBudgets | undefined {
    return Object.keys(budgets).length === 0 ? undefined : new BucketBudgets(tierBytes, budgets, evict)
  }

  private constructor(tierBytes: number, budgets: BucketBudgetMap, evict: (key: string) => void) {
    this.#evict = evict
    const group = (prefix: string, limit: number): Group => ({
      prefix,
      limit,
      lru:
        limit <= 0
          ? undefined
          : new LRUCache<string, number>({
              maxSize: limit,
              sizeCalculation: (size) => size,
              // After the LRU has let go of the key, so the tier's `forget` finds nothing to undo.
              disposeAfter: (_size, key, reason) => {
                if (reason === 'evict') evict(key)
              },
            }),
    })
    this.#budgeted = Object.entries(budgets)
      .map(([bucket, bytes]) => group(`${bucket}/`, Math.min(bytes, tierBytes)))
      .sort((a, b) => b.prefix.length - a.prefix.length)
    const reserved = this.#budgeted.reduce((sum, g) => sum + g.limit, 0)
    this.#shared = group('', tierBytes - reserved)
  }

  /** Whether an entry of `size` bytes under `key` can be held at all (its group's limit). */
  fits(key: string, size: number): boolean {
    return size <= this.#groupOf(key).limit
  }

  /**
   * Counts `key` (new, or replaced with a new size) as its group's most recent entry, evicting the
   * group's least recently used ones beyond its limit. False, and nothing counted, when it cannot
   * fit: the tier must not store it.
   */
  track(key: string, size: number): boolean {
    const group = this.#groupOf(key)
    if (group.lru === undefined || size > group.limit) return false
    group.lru.set(key, size)
    return true
  }

  /**
   * Takes over the entries a tier already holds (new budgets on reload), given oldest first with
   * their sizes: each bucket keeps its most recently used entries within its budget, the rest are
   * evicted.
   */
  adopt(held: ReadonlyArray<readonly [string, number]>): void {
    for (const [key, size] of held) if (!this.track(key, size)) this.#evict(key)
  }

  /** A hit: the key becomes its group's most recently used. */
  touch(key: string): void {
    this.#groupOf(key).lru?.get(key)
  }

  /** The tier dropped the key (deleted, purged, expired, evicted). */
  forget(key: string): void {
    this.#groupOf(key).lru?.delete(key)
  }

  #groupOf(key: string): Group {
    for (const group of this.#budgeted) if (key.startsWith(group.prefix)) return group
    return this.#shared
  }
}
