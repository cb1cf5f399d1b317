// Disk tier: one file per entry under `dir`, named by the SHA-256 of the cache key, holding the
// metadata header and the body (codec.ts). Writes are atomic: a temp file is written, fsynced and
// renamed over the target, so a crash never leaves a half-written entry under a real name. An
// in-memory LRU index (bounded by bytes) tracks the files and deletes evicted ones; it is rebuilt
// from the directory at start-up, oldest first, so the cache survives restarts. An entry whose
// checksum does not match (truncated, corrupted) is deleted and treated as a miss. Per-bucket
// budgets (bucket-budgets.ts) bound each bucket's files inside the tier's size.
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { LRUCache } from 'lru-cache'
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'
import { BucketBudgets, type BucketBudgetMap } from './bucket-budgets.ts'
import { decodeEntry, decodeHeader, encodeEntry } from './codec.ts'
import { purgeByPrefix, TierCounters } from './tier-stats.ts'

export interface DiskCacheOptions {
  dir: string
  maxBytes: number
  maxItemBytes: number
  staleSeconds: number
  /** Bytes per bucket name; buckets left out share what these leave of `maxBytes`. */
  budgets?: BucketBudgetMap | undefined
}

interface IndexEntry {
  file: string
  size: number
}

const SUFFIX = '.entry'
const sizeOf = (entry: IndexEntry) => Math.max(1, entry.size)
const HEADER_PROBE = 64 * 1024

export class DiskCache implements CacheStore {
  readonly name = 'disk'
  readonly #dir: string
  readonly #staleMs: number
  readonly #maxItemBytes: number
  readonly #index: LRUCache<string, IndexEntry>
  readonly #counters = new TierCounters()
  readonly #maxBytes: number
  #budgets: BucketBudgets | undefined
  #budgetsBuilt = '{}'

  private constructor(options: DiskCacheOptions) {
    this.#dir = options.dir
    this.#staleMs = options.staleSeconds * 1000
    this.#maxItemBytes = options.maxItemBytes
    this.#maxBytes = options.maxBytes
    this.#index = new LRUCache<string, IndexEntry>({
      maxSize: options.maxBytes,
      sizeCalculation: sizeOf,
      dispose: (entry, key, reason) => {
        if (reason === 'evict') this.#counters.evictions++
        if (reason !== 'set') {
          this.#budgets?.forget(key)
          void unlink(entry.file).catch(() => {})
        }
      },
    })
    this.setBudgets(options.budgets ?? {})
  }

  /** Opens (creating) the directory and rebuilds the index from the files already there. */
  static async open(options: DiskCacheOptions): Promise<DiskCache> {
    await mkdir(options.dir, { recursive: true })
    const cache = new DiskCache(options)
    await cache.#rebuild()
    return cache
  }

  async get(key: string): Promise<CachedObject | undefined> {
    const indexed = this.#index.get(key)
    if (indexed !== undefined) {
      const bytes = await readFile(indexed.file).catch(() => undefined)
      const entry = bytes === undefined ? undefined : decodeEntry(key, bytes)
      if (entry !== undefined && entry.freshUntil + this.#staleMs > Date.now()) {
        this.#budgets?.touch(key)
        return this.#counters.record(entry)
      }
      // Gone, corrupt, truncated or past its stale window: never served, removed.
      this.#index.delete(key)
    }
    return this.#counters.record(undefined)
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    if (entry.body.length > this.#maxItemBytes) return
    const file = this.#fileOf(key)
    const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`
    try {
      const bytes = encodeEntry(key, entry)
      // Over its bucket's budget on its own: not stored, and the key's older copy goes too.
      if (this.#budgets?.fits(key, bytes.length) === false) return await this.delete(key)
      const handle = await open(temp, 'w')
      try {
        await handle.writeFile(bytes)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await rename(temp, file)
      const index = { file, size: bytes.length }
      // The bucket's budget first: a bucket over it evicts its own files before the tier's LRU
      // would evict anyone else's. (Budgets may have changed while the file was written.)
      if (this.#budgets?.track(key, sizeOf(index)) === false) return await this.delete(key)
      this.#index.set(key, index)
    } catch {
      await rm(temp, { force: true }).catch(() => {})
    }
  }

  async delete(key: string): Promise<void> {
    if (!this.#index.delete(key)) await unlink(this.#fileOf(key)).catch(() => {})
  }

  async purge(prefix: string): Promise<number> {
    return purgeByPrefix(this.#index, prefix)
  }

  /**
   * Applies new per-bucket budgets to the files already indexed (on reload): each bucket keeps its
   * most recently used files within its new budget.
   */
  setBudgets(budgets: BucketBudgetMap): void {
    const built = JSON.stringify(budgets)
    if (built === this.#budgetsBuilt) return
    this.#budgetsBuilt = built
    const next = BucketBudgets.create(this.#maxBytes, budgets, (key) => this.#evictForBudget(key))
    this.#budgets = next
    if (next === undefined) return
    // Oldest first, so each bucket ends up with its most recently used files.
    const held: Array<[string, IndexEntry]> = []
    this.#index.rforEach((entry, key) => held.push([key, entry]))
    for (const [key, entry] of held) {
      if (!next.track(key, sizeOf(entry))) this.#evictForBudget(key)
    }
  }

  stats(): CacheTierStats {
    return this.#counters.snapshot(this.#index.size, this.#index.calculatedSize)
  }

  async close(): Promise<void> {
    // Files stay on disk for the next start; only the in-memory index is released.
  }

  #evictForBudget(key: string): void {
    if (this.#index.delete(key)) this.#counters.evictions++
  }

  #fileOf(key: string): string {
    return join(this.#dir, `${createHash('sha256').update(key).digest('hex')}${SUFFIX}`)
  }

  async #rebuild(): Promise<void> {
    const found: Array<{ key: string; file: string; size: number; mtime: number }> = []
    for (const name of await readdir(this.#dir)) {
      const file = join(this.#dir, name)
      if (name.endsWith('.tmp')) {
        await rm(file, { force: true })
        continue
      }
      if (!name.endsWith(SUFFIX)) continue
      const info = await stat(file).catch(() => undefined)
      const head = info === undefined ? undefined : await readHead(file)
      const header = head === undefined ? undefined : decodeHeader(head)
      if (info === undefined || header === undefined || file !== this.#fileOf(header.key)) {
        await rm(file, { force: true })
        continue
      }
      if (header.freshUntil + this.#staleMs <= Date.now()) {
        await rm(file, { force: true })
        continue
      }
      found.push({ key: header.key, file, size: info.size, mtime: info.mtimeMs })
    }
    found.sort((a, b) => a.mtime - b.mtime)
    for (const entry of found) {
      const index = { file: entry.file, size: entry.size }
      // Budgets that shrank since the files were written keep each bucket's newest files.
      if (this.#budgets?.track(entry.key, sizeOf(index)) === false) await rm(entry.file, { force: true })
      else this.#index.set(entry.key, index)
    }
  }
}

async function readHead(file: string): Promise<Buffer | undefined> {
  const handle = await open(file, 'r').catch(() => undefined)
  if (handle === undefined) return undefined
  try {
    const buffer = Buffer.alloc(HEADER_PROBE)
    const { bytesRead } = await handle.read(buffer, 0, HEADER_PROBE, 0)
    return buffer.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
}
