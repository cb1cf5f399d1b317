// The tiered cache: memory -> disk -> Redis (in configured order), itself a CacheStore.
// A hit in a lower tier is copied to the tiers above it in the background; a set writes every
// tier without the caller waiting for the slower ones.
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'

export interface TieredHit {
  entry: CachedObject
  tier: string
}

export class TieredCache implements CacheStore {
  readonly name = 'tiered'
  readonly tiers: readonly CacheStore[]

  constructor(tiers: readonly CacheStore[]) {
    this.tiers = tiers
  }

  /** The entry and the name of the tier that had it. */
  async lookup(key: string): Promise<TieredHit | undefined> {
    for (let i = 0; i < this.tiers.length; i++) {
      const tier = this.tiers[i] as CacheStore
      const entry = await tier.get(key)
      if (entry === undefined) continue
      for (let j = 0; j < i; j++) void (this.tiers[j] as CacheStore).set(key, entry)
      return { entry, tier: tier.name }
    }
    return undefined
  }

  async get(key: string): Promise<CachedObject | undefined> {
    return (await this.lookup(key))?.entry
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    await Promise.all(this.tiers.map((tier) => tier.set(key, entry)))
  }

  async delete(key: string): Promise<void> {
    await Promise.all(this.tiers.map((tier) => tier.delete(key)))
  }

  async purge(prefix: string): Promise<number> {
    const counts = await Promise.all(this.tiers.map((tier) => tier.purge(prefix)))
    return Math.max(0, ...counts)
  }

  stats(): CacheTierStats {
    const all = this.tiers.map((tier) => tier.stats())
    const sum = (pick: (s: CacheTierStats) => number) => all.reduce((total, s) => total + pick(s), 0)
    const first = all[0]
    return {
      entries: first?.entries ?? null,
      bytes: first?.bytes ?? null,
      hits: sum((s) => s.hits),
      misses: all.at(-1)?.misses ?? 0,
      hitBytes: sum((s) => s.hitBytes),
      evictions: sum((s) => s.evictions),
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.tiers.map((tier) => tier.close()))
  }
}
