// What every tier counts for /admin/cache/stats, and the prefix purge of an LRU-indexed tier.
import type { LRUCache } from 'lru-cache'
import type { CachedObject, CacheTierStats } from '../ports.ts'

export class TierCounters {
  hits = 0
  misses = 0
  hitBytes = 0
  evictions = 0

  /** Counts one lookup and passes its result through. */
  record(entry: CachedObject | undefined): CachedObject | undefined {
    if (entry === undefined) {
      this.misses++
    } else {
      this.hits++
      this.hitBytes += entry.body.length
    }
    return entry
  }

  snapshot(entries: number | null, bytes: number | null): CacheTierStats {
    return { entries, bytes, hits: this.hits, misses: this.misses, hitBytes: this.hitBytes, evictions: this.evictions }
  }
}

/** Deletes every key of `lru` that starts with `prefix`; returns how many. */
export function purgeByPrefix<V extends {}>(lru: LRUCache<string, V>, prefix: string): number {
  let count = 0
  for (const key of [...lru.keys()]) {
    if (key.startsWith(prefix) && lru.delete(key)) count++
  }
  return count
}
