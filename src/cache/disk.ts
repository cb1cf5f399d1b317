// Disk tier: one file per entry under `dir`, named by the SHA-256 of the cache key, holding a
// header (key, metadata, timestamps, a CRC-32 per 256 KiB body block) and the body
// (disk-format.ts). A hit never reads a large body whole: an entry over SMALL_BODY bytes comes back
// as a DiskBody (disk-body.ts) that streams checked blocks at the client's pace, and a Range reads
// only the blocks it needs; a small entry is read whole, in one read, and
// checked at once. The checked headers of recently written or hit entries stay in memory and their
// files open (disk-handles.ts), so a hit costs only the reads of its body's blocks: a small hit is
// one positioned read, one thread-pool round trip.
// Writes are atomic: a temp file is written, fsynced and renamed over the target, so a crash never
// leaves a half-written entry under a real name. An in-memory LRU index (bounded by bytes) tracks
// the files and deletes evicted ones; it is rebuilt from the directory at start-up, oldest first,
// so the cache survives restarts (files of another format, damaged headers and temp files are
// deleted then). An entry whose header or a block fails its check is deleted and never served.
// A scrub (disk-scrub.ts) reads a sample of the entries whole now and then, so damage is found
// before a hit meets it.
// Per-bucket budgets (bucket-budgets.ts) bound each bucket's files inside the tier's size.
// Workers of one instance share the directory through a ledger in the primary (disk-cluster.ts):
// the ledger is this class too, rebuilt from the directory and the only one to evict, and each
// worker's index is its view of it, told what the others wrote when it finds their files by name.
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { LRUCache } from 'lru-cache'
import type { CachedObject, CacheStore, CacheTierStats, EntryWriter, ScrubLimits, ScrubReport, ScrubTotals } from '../ports.ts'
import { BucketBudgets, type BucketBudgetMap } from './bucket-budgets.ts'
import { purgeCovers, type PurgeTarget } from './purge-log.ts'
import { DerivedKeys } from './derived-keys.ts'
import { DiskBody } from './disk-body.ts'
import { OpenFiles, sameFile, transientFsError, type EntryFile, type FileIdentity } from './disk-handles.ts'
import { COMMIT_STALL_MS, commitFailureMs, EntryFileWriter, entryWriterOf, writeAll } from './disk-writer.ts'
import { WritePause, type WritesEvent } from './disk-write-pause.ts'
import { blockIntact, blockTable } from './block-crcs.ts'
import { BLOCK_SIZE, encodeHead, headFrom, parseHead, type EntryHead } from './disk-format.ts'
import { checkEntryFile, Pacer, readEntryHead, sampleOf, ScrubSchedule } from './disk-scrub.ts'
import { purgeByPrefix, TierCounters } from './tier-stats.ts'

export interface DiskCacheOptions {
  dir: string
  maxBytes: number
  maxItemBytes: number
  staleSeconds: number
  /** Bytes per bucket name; buckets left out share what these leave of `maxBytes`. */
  budgets?: BucketBudgetMap | undefined
  /**
   * This process is one of the workers sharing `dir` (disk-cluster.ts), and this is its line to
   * the ledger that keeps the directory's budget: nothing is rebuilt at open, an entry another
   * worker wrote is found by its file's name, and only the ledger evicts files.
   */
  ledger?: DiskLedgerLink | undefined
  /** This tier is the ledger (in the cluster primary): told each key it stops holding. */
  onGone?: ((key: string) => void) | undefined
  /** Told when writes pause after the disk failed one, and when they work again (disk-write-pause.ts). */
  onWrites?: ((event: WritesEvent) => void) | undefined
  /** The first pause of writes after a failure (tests shorten it). */
  writesPauseMs?: number | undefined
}

/** A worker's line to the ledger of the disk directory it shares with the other workers. */
export interface DiskLedgerLink {
  /**
   * `key`'s file, `fileSize` bytes, was written (`written`), found or hit here: counted, most
   * recently used. A file written here replaces the others' copies: they forget theirs.
   */
  held(key: string, fileSize: number, written?: boolean): void
  /** `key`'s file was deleted here (damaged, gone or stale): no longer counted. */
  dropped(key: string): void
  /** Deletes what `target` covers from the whole directory; resolves, with how many, once the files are gone. */
  purge(target: PurgeTarget): Promise<number>
  /**
   * This tier's config went live (a reload committed): the ledger takes its limits and these
   * budgets. Until then a tier built for a reload leaves the directory's limits alone, so a reload
   * that fails changes nothing.
   */
  live(budgets: BucketBudgetMap): void
  /** The directory's entries, bytes and evictions as the ledger last told them; `reporter`: this worker exports them as metrics. */
  totals(): { entries: number; bytes: number; evictions: number; reporter: boolean }
  /**
   * Calls `forget` with the keys the ledger stopped holding (evicted, purged, dropped by another
   * worker), and those another worker wrote again (this one's header and open file are the old copy's).
   */
  onGone(forget: (gone: string[], rewritten: string[]) => void): void
  close(): void
}

interface IndexEntry {
  file: string
  /** The file's descriptor, shared by the entry's reads; retired with the entry. */
  handle: EntryFile
  /** File bytes: header and body. */
  size: number
  /** Where the body starts (the header's length). */
  bodyOffset: number
}

/** Bodies up to this size are read whole, in one read; larger ones stream. */
export const SMALL_BODY = 64 * 1024
const SUFFIX = '.entry'
const sizeOf = (entry: IndexEntry) => Math.max(1, entry.size)
/**
 * Entries whose checked header is kept in memory (metadata and block table, ~1 KiB each): their
 * hits read no header, only the body blocks, which are checked against the kept table. Entries
 * with an empty body (a sliced object's metadata) are kept whole: their hits read nothing.
 */
const MAX_KNOWN_HEADS = 4096
/** Entries whose file stays open between hits (a hit then opens nothing). */
const MAX_IDLE_FILES = 256

export class DiskCache implements CacheStore {
  readonly name = 'disk'
  readonly #dir: string
  readonly #staleMs: number
  readonly #maxItemBytes: number
  readonly #index: LRUCache<string, IndexEntry>
  readonly #counters = new TierCounters()
  readonly #maxBytes: number
  /** Slices and sliced metadata by object key: deleted with it. */
  readonly #derived = new DerivedKeys()
  /** On a worker, an entry's handle knows its file (disk-handles.ts): other workers write the directory too. */
  readonly #files: OpenFiles
  /**
   * Checked headers by index entry: a large entry as #read made it (a DiskBody holds no state of
   * a read), a small one as its head (its body is read at each hit).
   */
  readonly #known = new LRUCache<IndexEntry, CachedObject | EntryHead>({ max: MAX_KNOWN_HEADS })
  #budgets: BucketBudgets | undefined
  #budgetsBuilt = '{}'
  #scrubbing = false
  #scrubSchedule: ScrubSchedule | undefined
  /** Aborted at shutdown and when the tier closes: the pass that runs stops, and no other starts. */
  readonly #scrubStop = new AbortController()
  readonly #scrubTotals: ScrubTotals = { passes: 0, checked: 0, damaged: 0, bytes: 0 }
  readonly #ledger: DiskLedgerLink | undefined
  readonly #onGone: ((key: string) => void) | undefined
  readonly #writes: WritePause
  /** Keys leaving the index now are only forgotten: their files are another process's to delete. */
  #forgetting = false
  /** Files being deleted (the ledger answers a purge once they are gone). */
  readonly #unlinking = new Set<Promise<void>>()
  /**
   * A worker's lookups of files not in its index, by key: `valid` false once a purge or drop
   * covered the key (a miss), `reread` once another worker wrote it again (read the new file).
   */
  readonly #discovering = new Map<string, { found: Promise<IndexEntry | undefined>; valid: boolean; reread: boolean }>()
  /** A worker's purges and deletes on their way to the ledger: until the files are gone, no lookup finds them by name. */
  readonly #purging = new Set<PurgeTarget>()

  private constructor(options: DiskCacheOptions) {
    this.#ledger = options.ledger
    this.#files = new OpenFiles(MAX_IDLE_FILES, { identities: options.ledger !== undefined })
    this.#onGone = options.onGone
    this.#writes = new WritePause(options.onWrites, options.writesPauseMs)
    this.#dir = options.dir
    this.#staleMs = options.staleSeconds * 1000
    this.#maxItemBytes = options.maxItemBytes
    this.#maxBytes = options.maxBytes
    this.#index = new LRUCache<string, IndexEntry>({
      maxSize: options.maxBytes,
      sizeCalculation: sizeOf,
      dispose: (entry, key, reason) => {
        entry.handle.retire()
        this.#known.delete(entry)
        if (reason === 'set') return
        if (reason === 'evict') this.#counters.evictions++
        this.#budgets?.forget(key)
        this.#derived.remove(key)
        if (this.#forgetting) return this.#onGone?.(key)
        this.#invalidate({ exact: key })
        // A worker's view: only the ledger evicts files.
        if (reason === 'evict' && this.#ledger !== undefined) return
        // A worker deletes only the file it indexed: another may have renamed a new copy there.
        const unlinked = this.#unlink(entry.file, entry.handle.identity)
        // Told once the file is gone: the ledger then counts only a newer copy under the name.
        const ledger = this.#ledger
        if (ledger !== undefined) void unlinked.then(() => ledger.dropped(key))
        this.#onGone?.(key)
      },
    })
    this.#applyBudgets(options.budgets ?? {})
  }

  /**
   * The ledger under new limits (a reload changed them): a tier over the same directory that takes
   * over `previous`'s index, least recently used first, without reading a file; what no longer
   * fits is evicted (deleted, and told through `onGone`).
   */
  static takeOver(previous: DiskCache, options: DiskCacheOptions): DiskCache {
    const cache = new DiskCache(options)
    previous.#index.rforEach(({ file, size, bodyOffset }, key) => {
      const index = { file, handle: cache.#files.handleOf(file), size, bodyOffset }
      if (cache.#budgets?.track(key, sizeOf(index)) === false) {
        void cache.#unlink(file)
        return cache.#onGone?.(key)
      }
      cache.#index.set(key, index)
      cache.#derived.add(key)
    })
    return cache
  }

  /** Opens (creating) the directory and rebuilds the index from the files already there. */
  static async open(options: DiskCacheOptions): Promise<DiskCache> {
    await mkdir(options.dir, { recursive: true })
    const cache = new DiskCache(options)
    if (options.ledger === undefined) await cache.#rebuild()
    else
      options.ledger.onGone((gone, rewritten) => {
        cache.forget(gone)
        cache.forget(rewritten, 'rewritten')
      })
    return cache
  }

  get(key: string): Promise<CachedObject | undefined> {
    const indexed = this.#index.get(key)
    if (indexed !== undefined) return this.#hit(key, indexed)
    if (this.#ledger === undefined) return Promise.resolve(this.#counters.record(undefined))
    return this.#discover(key).then((found) => (found === undefined ? this.#counters.record(undefined) : this.#hit(key, found)))
  }

  #hit(key: string, indexed: IndexEntry): Promise<CachedObject | undefined> {
    const known = this.#known.get(indexed)
    // A small hit is one read and one promise on top of it (no async function layers).
    if (known === undefined) return this.#read(key, indexed).then((entry) => this.#found(key, indexed, entry), (err: unknown) => this.#unread(key, indexed, err))
    if (!('bodyOffset' in known)) return Promise.resolve(this.#found(key, indexed, known))
    // Past its stale window: the body is not worth reading.
    if (known.freshUntil + this.#staleMs <= Date.now()) return Promise.resolve(this.#found(key, indexed, undefined))
    // Read on the event loop when it can be (disk-handles.ts), else through the thread pool.
    // From Node's buffer pool when it fits there: the memory tier copies a pool slice it keeps.
    const body = Buffer.allocUnsafe(known.size)
    const now = readSmallInline(indexed.handle, known, body)
    if (now !== false) return Promise.resolve(this.#found(key, indexed, now))
    return readSmall(indexed.handle, known, body).then((entry) => this.#found(key, indexed, entry), (err: unknown) => this.#unread(key, indexed, err))
  }

  /**
   * A lookup whose file could not be read: a miss. The entry goes unless the process was to blame
   * (out of descriptors or memory): then the file is fine, and the next lookup reads it.
   */
  #unread(key: string, indexed: IndexEntry, err: unknown): CachedObject | undefined {
    if (!transientFsError(err)) this.#drop(key, indexed)
    return this.#counters.record(undefined)
  }

  /** The answer of a get whose entry was read (undefined: gone, damaged or truncated). */
  #found(key: string, indexed: IndexEntry, entry: CachedObject | undefined): CachedObject | undefined | Promise<CachedObject | undefined> {
    if (entry !== undefined && entry.freshUntil + this.#staleMs > Date.now()) {
      this.#budgets?.touch(key)
      this.#ledger?.held(key, indexed.size)
      return this.#counters.record(entry)
    }
    // Gone, damaged, truncated or past its stale window: never served, removed.
    this.#drop(key, indexed)
    // Written again under its name since it was indexed (the new copy read against the old
    // header): looked up again, the new copy is found (indexed, or by name on a worker).
    if (entry === undefined && indexed.handle.replaced) return this.get(key)
    return this.#counters.record(undefined)
  }

  keeps(key: string, size: number): boolean {
    return size <= this.#maxItemBytes && !this.#writes.paused && this.#budgets?.fits(key, size) !== false
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    const { body } = entry
    if (body.length > this.#maxItemBytes) return
    // The entry a writer of this tier just committed, handed back by the tiered cache: already here.
    const indexed = this.#index.peek(key)
    const known = indexed === undefined ? undefined : this.#known.peek(indexed)
    if (known !== undefined && 'body' in known && known.body === body && known.storedAt === entry.storedAt && known.freshUntil === entry.freshUntil) return
    const file = this.#fileOf(key)
    const temp = tempOf(file)
    if (body instanceof Uint8Array) {
      const head = encodeHead(key, entry, body.length, blockTable(body, BLOCK_SIZE))
      // Over its bucket's budget on its own: not stored, and the key's older copy goes too.
      if (this.#budgets?.fits(key, head.length + body.length) === false) return await this.delete(key)
      if (!this.#writes.mayWrite()) return
      try {
        // Nobody waits for this write, but a hung one holds its body: watched.
        await this.#writes.watch(commitFailureMs(body.length), async () => {
          const handle = await open(temp, 'w')
          try {
            await writeAll(handle, [head, body], 0)
            await handle.sync()
          } finally {
            await handle.close()
          }
        })
      } catch {
        await rm(temp, { force: true }).catch(() => {})
        return
      }
      await this.#install(key, file, temp, head, body.length)
      return
    }
    // A StoredBody (another entry's, when a revalidated entry is rewritten with new timestamps):
    // copied chunk by chunk.
    await this.writer(key, entry, body.length)
      ?.writeAll(body.stream())
      .catch(() => undefined)
  }

  /**
   * A writer of a new entry whose body arrives in pieces (ports.ts EntryWriter): written to a temp
   * file as it comes, renamed into place and indexed at commit. Undefined when the tier would not
   * keep it (over the item limit, or over its bucket's budget on its own: the key's older copy
   * goes then too). `wanted`, asked when the file is in place: false drops it (the key was purged
   * while it was written).
   */
  writer(key: string, head: Omit<CachedObject, 'body'>, size: number, wanted?: () => boolean): EntryWriter | undefined {
    if (size > this.#maxItemBytes) return undefined
    // The header's length does not depend on the checksums: the body's place is known now.
    const placeholder = encodeHead(key, head, size, Buffer.alloc(4 * Math.ceil(size / BLOCK_SIZE)))
    if (this.#budgets?.fits(key, placeholder.length + size) === false) {
      void this.delete(key)
      return undefined
    }
    if (!this.#writes.mayWrite()) return undefined
    const file = this.#fileOf(key)
    const temp = tempOf(file)
    const out = new EntryFileWriter(temp, placeholder.length, size, this.#writes)
    return entryWriterOf(
      out,
      (crcs) => encodeHead(key, head, size, crcs),
      (written) => this.#install(key, file, temp, written, size, wanted),
      COMMIT_STALL_MS,
      this.#writes
    )
  }

  /**
   * Moves a complete, synced temp file into place and indexes it, with its header known; resolves
   * with the entry as a hit would read it (a large body as a DiskBody; undefined for a small one,
   * read at each hit, or when it was not kept).
   */
  async #install(key: string, file: string, temp: string, head: Buffer, size: number, wanted?: () => boolean): Promise<CachedObject | undefined> {
    // Not wanted (purged while written): the key's file, maybe a newer copy's, is left alone.
    if (wanted?.() === false) {
      await rm(temp, { force: true }).catch(() => {})
      return undefined
    }
    // A worker's view knows the file it wrote as the entry's (a rename keeps the inode and mtime):
    // its first read may otherwise open a copy another worker wrote since, and take it for its own.
    let written: FileIdentity | undefined
    try {
      if (this.#ledger !== undefined) written = await stat(temp)
      await rename(temp, file)
    } catch {
      await rm(temp, { force: true }).catch(() => {})
      return undefined
    }
    this.#writes.worked()
    // Purged during the rename: asked again in the turn the index is written, so a purge after
    // this finds the entry.
    if (wanted?.() === false) {
      await this.delete(key)
      return undefined
    }
    const index = { file, handle: this.#files.handleOf(file, written), size: head.length + size, bodyOffset: head.length }
    // The bucket's budget first: a bucket over it evicts its own files before the tier's LRU
    // would evict anyone else's. (Budgets may have changed while the file was written.)
    if (this.#budgets?.track(key, sizeOf(index)) === false) {
      await this.delete(key)
      return undefined
    }
    this.#index.set(key, index)
    this.#derived.add(key)
    this.#ledger?.held(key, index.size, true)
    // Its header is known: the first hit reads only the body.
    const parsed = parseHead(head)
    return parsed === undefined || 'need' in parsed ? undefined : this.#learn(key, index, parsed)
  }

  async delete(key: string): Promise<void> {
    const derived = this.#derived.of(key)
    this.#invalidate({ exact: key })
    if (this.#ledger !== undefined) {
      // The ledger deletes the files, the slices other workers wrote included.
      await this.#purgeShared({ exact: key }, () => this.forget([key, ...derived]))
      return
    }
    if (!this.#index.delete(key)) await unlink(this.#fileOf(key)).catch(() => {})
    for (const other of derived) this.#index.delete(other)
  }

  /**
   * Whether the tier holds `key` now (no hit counted, recency unchanged): in its index, or, for a
   * worker sharing the directory, in a file another worker wrote (its next get finds it).
   */
  has(key: string): boolean {
    return this.#index.has(key) || (this.#ledger !== undefined && existsSync(this.#fileOf(key)))
  }

  async purge(prefix: string): Promise<number> {
    this.#invalidate({ prefix })
    if (this.#ledger === undefined) return purgeByPrefix(this.#index, prefix)
    return await this.#purgeShared({ prefix }, () => {
      this.#forgetting = true
      try {
        purgeByPrefix(this.#index, prefix)
      } finally {
        this.#forgetting = false
      }
    })
  }

  /**
   * A worker's purge or delete: `forgetHere` drops what this worker indexes, then the ledger
   * deletes the files of every worker. Meanwhile the files are still there: a lookup must not
   * find them by name (and hand a purged copy to the memory tier above).
   */
  async #purgeShared(target: PurgeTarget, forgetHere: () => void): Promise<number> {
    this.#purging.add(target)
    try {
      forgetHere()
      return await (this.#ledger as DiskLedgerLink).purge(target)
    } finally {
      this.#purging.delete(target)
    }
  }

  /**
   * Stops indexing `keys`, leaving their files alone: the ledger deleted them or will (in a
   * worker), or a worker did (in the ledger, which tells the other workers); `rewritten`: another
   * worker wrote them again (a lookup reading them now reads the new file instead).
   */
  forget(keys: Iterable<string>, why: 'gone' | 'rewritten' = 'gone'): void {
    this.#forgetting = true
    try {
      for (const key of keys) {
        this.#invalidate({ exact: key }, why === 'rewritten')
        this.#index.delete(key)
      }
    } finally {
      this.#forgetting = false
    }
  }

  /**
   * The ledger (in the cluster primary): `key`'s file of `fileSize` bytes, written or hit by a
   * worker, counted as the most recently used. A file not counted yet is counted only if it is
   * there: the ledger may have evicted it while the worker's message was on its way.
   */
  async adopt(key: string, fileSize: number): Promise<void> {
    const indexed = this.#index.get(key)
    if (indexed !== undefined && indexed.size === fileSize) return this.#budgets?.touch(key)
    const file = this.#fileOf(key)
    const info = await stat(file).catch(() => undefined)
    if (info?.size !== fileSize) return
    const index = { file, handle: this.#files.handleOf(file), size: fileSize, bodyOffset: 0 }
    if (this.#budgets?.track(key, sizeOf(index)) === false) return await this.delete(key)
    this.#index.set(key, index)
    this.#derived.add(key)
  }

  /**
   * The ledger: indexes the entry files of the directory it does not know (a worker died before
   * it reported them), so they count in the budget and purges find them.
   */
  async adoptUnknownFiles(): Promise<number> {
    const known = new Set<string>()
    for (const { file } of this.#index.values()) known.add(file)
    let adopted = 0
    for (const name of await readdir(this.#dir).catch(() => [])) {
      const file = join(this.#dir, name)
      if (!name.endsWith(SUFFIX) || known.has(file)) continue
      const info = await stat(file).catch(() => undefined)
      const head = info === undefined ? undefined : await readHead(file, info.size).catch(() => undefined)
      if (info === undefined || head === undefined || file !== this.#fileOf(head.key) || this.#index.has(head.key)) continue
      await this.adopt(head.key, info.size)
      adopted++
    }
    return adopted
  }

  /**
   * The ledger: workers deleted these keys' files (damaged, gone or stale). A key whose file is
   * there again (another worker wrote a new copy meanwhile) stays counted, at its new size.
   */
  async dropped(keys: string[]): Promise<void> {
    for (const key of keys) {
      const info = await stat(this.#fileOf(key)).catch(() => undefined)
      if (info === undefined) this.forget([key])
      else await this.adopt(key, info.size)
    }
  }

  /** Resolves once every file this tier has begun to delete is gone. */
  async filesDeleted(): Promise<void> {
    await Promise.all(this.#unlinking)
  }

  /**
   * Applies new per-bucket budgets to the files already indexed (a reload committed): each bucket
   * keeps its most recently used files within its new budget. A worker's view tells the ledger
   * that this tier's limits and budgets are live.
   */
  setBudgets(budgets: BucketBudgetMap): void {
    this.#applyBudgets(budgets)
    this.#ledger?.live(budgets)
  }

  #applyBudgets(budgets: BucketBudgetMap): void {
    const built = JSON.stringify(budgets)
    if (built === this.#budgetsBuilt) return
    this.#budgetsBuilt = built
    this.#budgets = BucketBudgets.create(this.#maxBytes, budgets, (key) => this.#evictForBudget(key))
    const held: Array<[string, number]> = []
    this.#index.rforEach((entry, key) => held.push([key, sizeOf(entry)]))
    this.#budgets?.adopt(held)
  }

  stats(): CacheTierStats {
    const scrub = { ...this.#scrubTotals }
    const writesPaused = this.#writes.paused
    if (this.#ledger === undefined) return { ...this.#counters.snapshot(this.#index.size, this.#index.calculatedSize), scrub, writesPaused }
    // A worker: the shared directory's size, which one worker exports as metrics for all.
    const { entries, bytes, evictions, reporter } = this.#ledger.totals()
    return { ...this.#counters.snapshot(entries, bytes), evictions, scrub, writesPaused, ...(reporter ? {} : { sizeReportedElsewhere: true }) }
  }

  async close(): Promise<void> {
    this.#scrubSchedule?.stop()
    this.stopScrub()
    this.#ledger?.close()
    // Files stay on disk for the next start; only the in-memory index is released.
    this.#files.closeIdle()
  }

  /**
   * Reads a random sample of the entries whole and checks them (disk-scrub.ts); the damaged ones
   * are deleted. Undefined when a pass is running already.
   */
  async scrub(limits: ScrubLimits, signal?: AbortSignal): Promise<ScrubReport | undefined> {
    if (this.#scrubbing) return undefined
    const report: ScrubReport = { checked: 0, intact: 0, damaged: 0, skipped: 0, bytes: 0, ms: 0, damagedEntries: [], stopped: false }
    if (this.#scrubStop.signal.aborted) return { ...report, stopped: true }
    this.#scrubbing = true
    const started = performance.now()
    try {
      const sample = sampleOf(this.#index.entries(), Math.min(limits.maxEntries, Math.ceil(this.#index.size * limits.sampleRate)))
      const stop = this.#scrubStop.signal
      const pacer = new Pacer(limits.bytesPerSec, signal === undefined ? stop : AbortSignal.any([stop, signal]))
      for (const [key, indexed] of sample) {
        // Evicted or replaced since the sample was taken.
        if (this.#index.peek(key) !== indexed) {
          report.skipped++
          continue
        }
        const check = await checkEntryFile(indexed.file, key, pacer).catch(() => undefined)
        if (check === undefined) {
          report.stopped = true
          break
        }
        if (check.result === 'gone') {
          // Deleted under the index (by another worker sharing the directory): a hit would miss too.
          this.#drop(key, indexed)
          report.skipped++
          continue
        }
        if (check.result === 'unread') {
          report.skipped++
          continue
        }
        report.checked++
        report.bytes += check.bytes
        if (check.result === 'intact') {
          report.intact++
          continue
        }
        report.damaged++
        report.damagedEntries.push({ key, file: indexed.file, reason: check.reason })
        // Deleted with its file, unless a newer copy replaced it while it was read.
        this.#drop(key, indexed)
      }
    } finally {
      this.#scrubbing = false
      report.ms = Math.round(performance.now() - started)
      this.#scrubTotals.passes++
      this.#scrubTotals.checked += report.checked
      this.#scrubTotals.damaged += report.damaged
      this.#scrubTotals.bytes += report.bytes
    }
    return report
  }

  /**
   * Stops the pass that runs, if any (its report says `stopped`), and every later one: a shutdown
   * does not wait for a pass, and none starts while it drains.
   */
  stopScrub(): void {
    this.#scrubStop.abort()
  }

  /**
   * Scrubs a sample every `everyMs` (null: never) and hands `onPass` each report. The same
   * settings again keep the running schedule (a reload with the scrub block unchanged).
   */
  scrubEvery(schedule: { everyMs: number; limits: ScrubLimits } | null, onPass: (report: ScrubReport) => void): void {
    const settings = JSON.stringify(schedule)
    if ((this.#scrubSchedule?.settings ?? 'null') === settings) return
    this.#scrubSchedule?.stop()
    this.#scrubSchedule =
      schedule === null
        ? undefined
        : new ScrubSchedule(settings, schedule.everyMs, async (signal) => {
            const report = await this.scrub(schedule.limits, signal)
            if (report !== undefined) onPass(report)
          })
  }

  /**
   * The entry of `indexed`: a small body read whole with its header and checked; a larger one as
   * a DiskBody, after reading only the header. Undefined when the file is gone or damaged.
   */
  async #read(key: string, indexed: IndexEntry): Promise<CachedObject | undefined> {
    const whole = indexed.size - indexed.bodyOffset <= SMALL_BODY
    let bytes = await readShared(indexed.handle, whole ? indexed.size : indexed.bodyOffset)
    let head = bytes === undefined ? undefined : parseHead(bytes)
    if (head !== undefined && 'need' in head) {
      // The file was replaced by one with a longer header since it was indexed.
      bytes = await readShared(indexed.handle, head.need)
      head = bytes === undefined ? undefined : parseHead(bytes)
    }
    if (bytes === undefined || head === undefined || 'need' in head || head.key !== key) return undefined
    if (head.size > SMALL_BODY) return this.#learn(key, indexed, head)
    // Truncated, or a damaged block.
    if (bytes.length !== head.bodyOffset + head.size) return undefined
    const body = bytes.subarray(head.bodyOffset)
    if (!blocksIntact(head, body)) return undefined
    this.#learn(key, indexed, head)
    return { meta: head.meta, storedAt: head.storedAt, freshUntil: head.freshUntil, body }
  }

  /**
   * Keeps the checked header of `indexed` (still `key`'s entry: not dropped while it was read or
   * written), so later hits read only body blocks. Returns the entry a large or empty body's hits
   * share (a small body is read at each hit).
   */
  #learn(key: string, indexed: IndexEntry, head: EntryHead): CachedObject | undefined {
    const entry = { meta: head.meta, storedAt: head.storedAt, freshUntil: head.freshUntil }
    let known: CachedObject | EntryHead
    if (head.size > SMALL_BODY) known = { ...entry, body: this.#bodyOf(key, indexed, head) }
    else if (head.size === 0) known = { ...entry, body: Buffer.alloc(0) }
    // Its own copy of the block table: `head` may be a view into a read buffer with the body.
    else known = { ...head, crcs: Buffer.from(head.crcs) }
    if (this.#index.peek(key) === indexed) this.#known.set(indexed, known)
    return 'bodyOffset' in known ? undefined : known
  }

  #bodyOf(key: string, indexed: IndexEntry, head: EntryHead): DiskBody {
    return new DiskBody({
      file: indexed.handle,
      bodyOffset: head.bodyOffset,
      length: head.size,
      blockSize: head.blockSize,
      crcs: head.crcs,
      onDamage: () => this.#drop(key, indexed),
    })
  }

  /**
   * Removes `key`, unless its index entry is no longer `indexed` (replaced since: keep the new one).
   * On a worker, an entry whose file another worker wrote again since it was indexed is only
   * forgotten: the file there now is not the one that failed.
   */
  #drop(key: string, indexed: IndexEntry): void {
    if (this.#index.peek(key) !== indexed) return
    if (indexed.handle.replaced) this.forget([key])
    else this.#index.delete(key)
  }

  #evictForBudget(key: string): void {
    // A worker's view forgets; the ledger keeps the budget of the files.
    if (this.#ledger !== undefined) return this.forget([key])
    if (this.#index.delete(key)) this.#counters.evictions++
  }

  /**
   * Deletes `file`; with the `identity` its entry was read with, only while it is that file (a
   * worker that drops an entry must not delete the copy another worker just renamed into place).
   */
  #unlink(file: string, identity?: FileIdentity): Promise<void> {
    // A copy renamed there between the stat and the unlink is still deleted: POSIX has no unlink of
    // one inode. The ledger then stops counting it (`dropped` checks the file).
    const unlinked =
      identity === undefined ? unlink(file) : stat(file).then((now) => (sameFile(identity, now) ? unlink(file) : undefined))
    const done: Promise<void> = unlinked
      .catch(() => {})
      .finally(() => this.#unlinking.delete(done))
    this.#unlinking.add(done)
    return done
  }

  /**
   * A purge or drop covering a key being looked up by name: that lookup must not index it (or,
   * `rewritten`, must read the file again: it may have read the copy that was replaced).
   */
  #invalidate(target: PurgeTarget, rewritten = false): void {
    if (this.#discovering.size === 0) return
    for (const [key, lookup] of this.#discovering) {
      if (!purgeCovers(target, key)) continue
      if (rewritten) lookup.reread = true
      else lookup.valid = false
    }
  }

  /**
   * A worker sharing the directory: `key`'s file, written by another worker (or before this
   * process started), read, checked and indexed here. Lookups of one key at once share one read.
   */
  #discover(key: string): Promise<IndexEntry | undefined> {
    if (this.#purgeCovers(key)) return Promise.resolve(undefined)
    const running = this.#discovering.get(key)
    if (running !== undefined) return running.found
    const lookup = { found: this.#findFile(key), valid: true, reread: false }
    this.#discovering.set(key, lookup)
    const done = () => {
      if (this.#discovering.get(key) === lookup) this.#discovering.delete(key)
    }
    void lookup.found.then(done, done)
    return lookup.found
  }

  #purgeCovers(key: string): boolean {
    for (const target of this.#purging) if (purgeCovers(target, key)) return true
    return false
  }

  async #findFile(key: string): Promise<IndexEntry | undefined> {
    const file = this.#fileOf(key)
    // The header is read through the entry's own descriptor, so what is learned of the file and
    // the file later reads use are one file, whatever is renamed under the name meanwhile.
    const handle = this.#files.handleOf(file)
    const head = await headOf(handle).catch(() => undefined)
    const size = handle.identity?.size
    const found = head !== undefined && head.key === key && size === head.bodyOffset + head.size
    // Purged or dropped while it was read, or written here meanwhile (that copy is the one to use).
    const lookup = this.#discovering.get(key)
    const written = this.#index.peek(key)
    if (!found || lookup?.valid !== true || lookup.reread || written !== undefined) {
      handle.retire()
      if (!found || lookup?.valid !== true) return undefined
      if (!lookup.reread) return written
      lookup.reread = false
      return this.#findFile(key)
    }
    const indexed = { file, handle, size, bodyOffset: head.bodyOffset }
    if (this.#budgets?.track(key, sizeOf(indexed)) === false) {
      handle.retire()
      return undefined
    }
    this.#index.set(key, indexed)
    this.#derived.add(key)
    this.#ledger?.held(key, indexed.size)
    this.#learn(key, indexed, head)
    return indexed
  }

  #fileOf(key: string): string {
    return join(this.#dir, `${createHash('sha256').update(key).digest('hex')}${SUFFIX}`)
  }

  async #rebuild(): Promise<void> {
    const found: Array<{ key: string; index: IndexEntry; mtime: number }> = []
    for (const name of await readdir(this.#dir)) {
      const file = join(this.#dir, name)
      if (name.endsWith('.tmp')) {
        await rm(file, { force: true })
        continue
      }
      if (!name.endsWith(SUFFIX)) continue
      const info = await stat(file).catch(() => undefined)
      let head: EntryHead | undefined
      try {
        head = info === undefined ? undefined : await readHead(file, info.size)
      } catch {
        // Out of descriptors or memory: left alone (not indexed, not deleted) until the next start.
        continue
      }
      // Another format (format 1 included), a damaged header, a wrong name or a truncated body.
      if (info === undefined || head === undefined || file !== this.#fileOf(head.key) || info.size !== head.bodyOffset + head.size) {
        await rm(file, { force: true })
        continue
      }
      if (head.freshUntil + this.#staleMs <= Date.now()) {
        await rm(file, { force: true })
        continue
      }
      found.push({ key: head.key, index: { file, handle: this.#files.handleOf(file), size: info.size, bodyOffset: head.bodyOffset }, mtime: info.mtimeMs })
    }
    found.sort((a, b) => a.mtime - b.mtime)
    for (const { key, index } of found) {
      // Budgets that shrank since the files were written keep each bucket's newest files.
      if (this.#budgets?.track(key, sizeOf(index)) === false) await rm(index.file, { force: true })
      else {
        this.#index.set(key, index)
        this.#derived.add(key)
      }
    }
  }
}

/**
 * The first `length` bytes of an entry's file; fewer when it is shorter; undefined when it cannot
 * be read. Rejects when the process, not the file, is to blame (transientFsError).
 */
async function readShared(file: EntryFile, length: number): Promise<Buffer | undefined> {
  // Its own memory: a small body may be kept by the memory tier, and must not pin a pool slab.
  const buffer = Buffer.allocUnsafeSlow(length)
  try {
    const bytesRead = await file.readOnce(buffer, length, 0)
    return bytesRead === length ? buffer : buffer.subarray(0, bytesRead)
  } catch (err) {
    if (transientFsError(err)) throw err
    return undefined
  }
}

/**
 * The checked header of the file `file` opens (its first open: the file the entry will be), or
 * undefined for anything else. Rejects when it cannot be opened or read.
 */
async function headOf(file: EntryFile): Promise<EntryHead | undefined> {
  await file.acquire()
  try {
    return await headFrom((file.identity as FileIdentity).size, (length) => readShared(file, length))
  } finally {
    file.release()
  }
}

/**
 * A small entry's body, read into `body` in one read and checked against its known header;
 * undefined when it cannot be read or is damaged. Rejects as readShared does.
 */
function readSmall(file: EntryFile, head: EntryHead, body: Buffer): Promise<CachedObject | undefined> {
  return file.readOnce(body, head.size, head.bodyOffset).then(
    (bytesRead) => smallEntry(head, body, bytesRead),
    (err: unknown) => {
      if (transientFsError(err)) throw err
      return undefined
    }
  )
}

/** readSmall on the event loop (EntryFile.readNow); false when the read cannot be made there. */
function readSmallInline(file: EntryFile, head: EntryHead, body: Buffer): CachedObject | undefined | false {
  let bytesRead: number | undefined
  try {
    bytesRead = file.readNow(body, head.size, head.bodyOffset)
  } catch {
    return undefined
  }
  return bytesRead === undefined ? false : smallEntry(head, body, bytesRead)
}

/** The entry of a small body read whole: undefined when the file was short or a block is damaged. */
function smallEntry(head: EntryHead, body: Buffer, bytesRead: number): CachedObject | undefined {
  return bytesRead === head.size && blocksIntact(head, body) ? { meta: head.meta, storedAt: head.storedAt, freshUntil: head.freshUntil, body } : undefined
}

/** Whether every block of `body` (the whole body of `head`'s entry) matches its checksum. */
function blocksIntact(head: EntryHead, body: Buffer): boolean {
  for (let i = 0, at = 0; at < body.length; i++, at += head.blockSize) {
    if (!blockIntact(head.crcs, i, body.subarray(at, at + head.blockSize))) return false
  }
  return true
}

/**
 * The checked header of `file` (size `fileSize`), or undefined for anything else. Rejects when the
 * process, not the file, is to blame (transientFsError): the file is then neither read nor deleted.
 */
async function readHead(file: string, fileSize: number): Promise<EntryHead | undefined> {
  try {
    const handle = await open(file, 'r')
    try {
      return await readEntryHead(handle, fileSize)
    } finally {
      await handle.close().catch(() => {})
    }
  } catch (err) {
    if (transientFsError(err)) throw err
    return undefined
  }
}

/**
 * A temp file beside `file`, unique to one write and named with the writing process (start-up
 * deletes any left over; the cluster primary deletes a dead worker's: deleteTempFilesOf).
 */
function tempOf(file: string): string {
  return `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
}

/** Deletes the temp files that process `pid` left in `dir` (it died mid-write); resolves with how many. */
export async function deleteTempFilesOf(dir: string, pid: number): Promise<number> {
  const mark = `${SUFFIX}.${pid}.`
  const names = await readdir(dir).catch(() => [])
  const left = names.filter((name) => name.endsWith('.tmp') && name.includes(mark))
  await Promise.all(left.map((name) => rm(join(dir, name), { force: true }).catch(() => {})))
  return left.length
}
