// The tiered cache: memory -> disk -> Redis (in configured order), itself a CacheStore.
// A hit in a lower tier is copied to the tiers above it in the background; a set writes every
// tier without the caller waiting for the slower ones. A large disk hit's body is a StoredBody
// (ports.ts): copied up only into tiers that keep it (memory reads it whole only when it fits).
// A purge sticks (purge-log.ts): no copy fetched or read before it is stored after it.
import type { CachedObject, CacheStore, CacheTierStats, EntryWriter, TieredHit, TieredStore } from '../ports.ts'
import type { BucketBudgetMap } from './bucket-budgets.ts'
import { DiskCache, SMALL_BODY } from './disk.ts'
import { MemoryCache } from './memory.ts'
import { PurgeLog } from './purge-log.ts'

export class TieredCache implements TieredStore {
  readonly name = 'tiered'
  readonly tiers: readonly CacheStore[]
  /** How many tiers `peek` reads: 1 when the first tier is memory, else 0. */
  readonly peekedTiers: 0 | 1
  readonly #memory: MemoryCache | undefined
  readonly #disk: DiskCache | undefined
  /** Memory and disk only: derived entries (slices) stay where deleting their object deletes them. */
  readonly local: TieredCache
  /** Where slices go: disk when there is one, else memory. */
  readonly bulk: TieredCache
  /** Shared with `local` and `bulk`: a purge through any of them holds for all. */
  readonly #purges: PurgeLog

  constructor(tiers: readonly CacheStore[], purges = new PurgeLog()) {
    this.tiers = tiers
    this.#purges = purges
    this.#memory = tiers[0] instanceof MemoryCache ? tiers[0] : undefined
    this.peekedTiers = this.#memory === undefined ? 0 : 1
    this.#disk = tiers.find((tier) => tier instanceof DiskCache)
    const local = tiers.filter((tier) => tier instanceof MemoryCache || tier instanceof DiskCache)
    this.local = local.length === tiers.length ? this : new TieredCache(local, purges)
    const disk = local.filter((tier) => tier instanceof DiskCache)
    this.bulk = disk.length === 0 || disk.length === local.length ? this.local : new TieredCache(disk, purges)
  }

  /** The disk tier, when there is one. */
  get disk(): DiskCache | undefined {
    return this.#disk
  }

  keeps(key: string, size: number): boolean {
    return this.tiers.some((tier) => tier.keeps?.(key, size) === true)
  }

  has(key: string): boolean {
    return this.tiers.some((tier) => (tier instanceof MemoryCache || tier instanceof DiskCache) && tier.has(key))
  }

  /**
   * The first tier's entry when that tier is memory, without a promise: a memory hit is answered
   * in the same tick. Undefined when it is not there (then `lookup(key, peekedTiers)`).
   */
  peek(key: string): TieredHit | undefined {
    const entry = this.#memory?.peek(key)
    return entry === undefined ? undefined : { entry, tier: 'memory' }
  }

  /** The entry and the name of the tier that had it, searching from tier `from` down. */
  async lookup(key: string, from = 0): Promise<TieredHit | undefined> {
    const seq = this.#purges.seq
    for (let i = from; i < this.tiers.length; i++) {
      const tier = this.tiers[i] as CacheStore
      const entry = await tier.get(key)
      if (entry === undefined) continue
      if (i > 0) void this.#write(this.tiers.slice(0, i), key, entry, seq)
      return { entry, tier: tier.name }
    }
    return undefined
  }

  async get(key: string): Promise<CachedObject | undefined> {
    return (await this.lookup(key))?.entry
  }

  /** Stores a copy fetched at `entry.storedAt`; not when the key was purged since. */
  async set(key: string, entry: CachedObject): Promise<void> {
    if (this.#purges.purgedAfter(key, entry.storedAt)) return
    await this.#write(this.tiers, key, entry, this.#purges.seq)
  }

  /**
   * Streams a large new entry into the disk tier as it arrives (ports.ts). A small body is cheaper
   * held and written to every tier at once; so is anything when there is no disk tier.
   */
  writer(key: string, head: Omit<CachedObject, 'body'>, size: number, wanted?: () => boolean): EntryWriter | undefined {
    if (size <= SMALL_BODY) return undefined
    return this.#disk?.writer(key, head, size, () => wanted?.() !== false && !this.#purges.purgedAfter(key, head.storedAt))
  }

  purgedAfter(key: string, since: number): boolean {
    return this.#purges.purgedAfter(key, since)
  }

  collects(size: number): boolean {
    return size <= SMALL_BODY || this.#disk === undefined
  }

  async delete(key: string): Promise<void> {
    this.#purges.deleted(key)
    await this.drop(key)
  }

  async drop(key: string): Promise<void> {
    await Promise.all(this.tiers.map((tier) => tier.delete(key)))
  }

  async purge(prefix: string): Promise<number> {
    this.#purges.purged(prefix)
    const counts = await Promise.all(this.tiers.map((tier) => tier.purge(prefix)))
    return Math.max(0, ...counts)
  }

  /**
   * New per-bucket budgets for the memory and disk tiers, applied to what they hold (on reload).
   * Redis has none: its size is Redis's own `maxmemory`.
   */
  setBudgets(budgets: BucketBudgetMap): void {
    for (const tier of this.tiers) {
      if (tier instanceof MemoryCache || tier instanceof DiskCache) tier.setBudgets(budgets)
    }
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

  /**
   * Writes the entry to `tiers`. A StoredBody goes as it is to the tiers that take one (memory
   * reads it only when it keeps it, disk copies it block by block); the others (Redis) get bytes,
   * read once for all of them.
   */
  async #write(tiers: readonly CacheStore[], key: string, entry: CachedObject, seq: number): Promise<void> {
    if (this.#purges.purgedSince(key, seq)) return
    await this.#copy(tiers, key, entry)
    // A purge that came while the tiers were writing may have missed the copy: it goes now.
    if (this.#purges.purgedSince(key, seq)) await Promise.all(tiers.map((tier) => tier.delete(key)))
  }

  async #copy(tiers: readonly CacheStore[], key: string, entry: CachedObject): Promise<void> {
    const { body } = entry
    if (body instanceof Uint8Array) {
      await Promise.all(tiers.map((tier) => tier.set(key, entry)))
      return
    }
    let bytes: Promise<CachedObject | undefined> | undefined
    const asBytes = () =>
      (bytes ??= body.bytes().then(
        (read) => ({ ...entry, body: read }),
        () => undefined
      ))
    await Promise.all(
      tiers.map(async (tier) => {
        if (tier instanceof MemoryCache || tier instanceof DiskCache) return tier.set(key, entry)
        // Not read back from the disk for a tier that would not keep it.
        if (tier.maxItemBytes !== undefined && body.length > tier.maxItemBytes) return tier.delete(key)
        const read = await asBytes()
        // An unreadable (damaged) body: no older copy is left behind either.
        await (read === undefined ? tier.delete(key) : tier.set(key, read))
      })
    )
  }
}
