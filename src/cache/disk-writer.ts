// Writes one disk entry file (disk-format.ts) whose body arrives in pieces: each piece is written
// at its place as it comes and the block checksums are computed on the way, so a body is never
// held whole in memory; at the end the header (with the real block table) goes in front and the
// file is synced. The header's length does not depend on the checksums' values, so the body's
// place is known before its first byte. The caller renames the file into place and indexes it.
import { open, rm, type FileHandle } from 'node:fs/promises'
import { crc32 } from '@node-rs/crc32'
import { Progress } from '../http/growing-bytes.ts'
import type { CachedObject, EntryWriter, GrowingFileShare } from '../ports.ts'
import { BLOCK_SIZE } from './disk-format.ts'
import type { WritePause } from './disk-write-pause.ts'
import { GrowingFileBody, type GrowingFile } from './growing-body.ts'

/**
 * Bytes a writer holds before `write` makes its caller wait: pieces queued meanwhile go to the
 * disk together, in one writev. (Awaiting each 64 KiB piece's own write, a thread-pool round trip
 * each, made a cold 4 MiB slice ~4x slower to fetch.)
 */
const HIGH_WATER = 1024 * 1024
/**
 * How long a caller waits on the disk before the writer gives up (the entry is not stored): the
 * body's reader, and so a client, waits while the writer holds HIGH_WATER bytes, and a disk that
 * takes no write for this long is failing or hung (a healthy one writes 1 MiB in milliseconds).
 * The time counts the write's wait for a thread-pool thread too: a disk so slow that other file
 * work holds every thread that long is treated the same way.
 */
export const WRITE_STALL_MS = 2000
/**
 * How long a commit (the last writes, the header, fsync, rename) may take before it is given up
 * (the entry is not stored): a HEAD or Range miss and a cold slice wait for it, and requests
 * joined to a fill wait until it settles. Longer than WRITE_STALL_MS: an fsync on a healthy but
 * busy disk can take seconds.
 */
export const COMMIT_STALL_MS = 10_000
/**
 * A commit's fsync flushes what the page cache still holds of the file: on a slow but healthy
 * disk (an HDD, a throttled cloud volume) a large entry's takes a while. A commit counts as the
 * disk failing (disk-write-pause.ts) only past COMMIT_STALL_MS plus its size at this rate.
 */
const SLOW_DISK_BYTES_PER_MS = 20_000

/**
 * Copies of lent pieces (an origin body's read buffers are reused as soon as a piece is handed
 * on): written from 64 KiB buffers that are reused once their bytes are on the disk. A fresh copy
 * per piece was garbage that V8 collected late and the allocator kept: four 10 MiB fills left the
 * process ~30 MB larger.
 */
const COPY_BYTES = 64 * 1024
/** Copies kept between writes (2 MiB: two fills' HIGH_WATER). */
const COPIES_KEPT = 32
const copies: Buffer[] = []

/** Copies whose bytes are written (or never will be): reused by the next writeCopy. */
function giveBack(written: Buffer[]): void {
  for (const copy of written) if (copies.length < COPIES_KEPT) copies.push(copy)
}

/** How long committing `size` bytes may take before it counts as the disk failing. */
export function commitFailureMs(size: number): number {
  return COMMIT_STALL_MS + Math.ceil(size / SLOW_DISK_BYTES_PER_MS)
}

export class EntryFileWriter implements GrowingFile {
  readonly #temp: string
  /** Where the body starts in the file. */
  readonly bodyOffset: number
  /** Body bytes. */
  readonly size: number
  readonly #table: Buffer
  readonly #file: Promise<FileHandle>
  /** Pieces not yet handed to the disk, and their bytes. */
  #queue: Uint8Array[] = []
  #queued = 0
  /** The reused copies (writeCopy) whose bytes are in #queue: back to the pool once written. */
  #queuedCopies: Buffer[] = []
  /** Bytes handed to the disk so far (written or being written), and those being written now. */
  #flushed = 0
  #inFlight = 0
  /** The write in flight (never rejects: a failure is kept in #failure), or undefined. */
  #writing: Promise<void> | undefined
  #failure: Error | undefined
  /** Bytes received (checksummed) so far. */
  #written = 0
  #crc = 0
  #closed = false
  readonly #pause: WritePause | undefined
  /** Body bytes on the file (their writes done), from the body's start. */
  #onFile = 0
  /** Moves when more is on the file, and when the writer fails. */
  readonly #progress = new Progress()

  /**
   * Creates `temp` for a body of `size` bytes starting at `bodyOffset`. `pause` hears of a write
   * the disk failed (stalled, full, I/O error), not of a body that ended early or a writer given up.
   */
  constructor(temp: string, bodyOffset: number, size: number, pause?: WritePause) {
    this.#temp = temp
    this.bodyOffset = bodyOffset
    this.size = size
    this.#pause = pause
    this.#table = Buffer.alloc(4 * Math.ceil(size / BLOCK_SIZE))
    this.#file = open(temp, 'w')
    this.#file.catch((err: Error) => this.#fail(err))
  }

  /**
   * Appends the body's next bytes (kept by reference until written: not to be reused meanwhile).
   * True while the writer holds less than HIGH_WATER bytes; else a promise of that, settled when
   * the write in flight is done (false after WRITE_STALL_MS without it). False, now and at every
   * later call, once a write failed or stalled, or the body grew past its size.
   */
  write(chunk: Uint8Array): boolean | Promise<boolean> {
    if (this.#refuses(chunk)) return false
    this.#queue.push(chunk)
    return this.#queuedMore(chunk)
  }

  /**
   * As `write`, for a piece the caller reuses once this returns: the writer keeps a copy, in a
   * reused 64 KiB buffer, packed behind the pieces copied before it while they wait for the disk
   * (an HTTPS origin's pieces are 16 KiB TLS records or less: not a buffer each).
   */
  writeCopy(chunk: Uint8Array): boolean | Promise<boolean> {
    if (chunk.length > COPY_BYTES) return this.write(Buffer.from(chunk))
    if (this.#refuses(chunk)) return false
    // The queue's last piece, when it is the start of the last copy (not yet being written: a
    // flush empties the queue), takes this one behind it.
    const last = this.#queue.at(-1)
    const copy = this.#queuedCopies.at(-1)
    if (copy !== undefined && last?.buffer === copy.buffer && last.length + chunk.length <= COPY_BYTES) {
      copy.set(chunk, last.length)
      this.#queue[this.#queue.length - 1] = copy.subarray(0, last.length + chunk.length)
    } else {
      const fresh = copies.pop() ?? Buffer.allocUnsafeSlow(COPY_BYTES)
      fresh.set(chunk)
      this.#queuedCopies.push(fresh)
      this.#queue.push(fresh.subarray(0, chunk.length))
    }
    return this.#queuedMore(chunk)
  }

  /** Body bytes on the file so far, from the body's start (what a reader of the growing file may read). */
  get onFile(): number {
    return this.#onFile
  }

  /** Whether the writer failed or gave up: what is not on the file now never will be. */
  get failed(): boolean {
    return this.#failure !== undefined
  }

  /** Settles when more is on the file, or the writer stops. */
  progress(): Promise<void> {
    return this.#progress.wait()
  }

  /** A descriptor of its own for reading the file as it grows (readable after the file is renamed or removed). */
  async openForReading(): Promise<FileHandle> {
    await this.#file
    return open(this.#temp, 'r')
  }

  /** Where other processes read the file as it grows: once it exists (undefined when it never will). */
  async whereGrowing(): Promise<GrowingFileShare | undefined> {
    const created = await this.#file.then(
      () => true,
      () => false
    )
    return created && this.#failure === undefined ? { path: this.#temp, bodyOffset: this.bodyOffset } : undefined
  }

  /** Whether `chunk` is refused: the writer failed, or fails now because the body grew past its size. */
  #refuses(chunk: Uint8Array): boolean {
    if (this.#failure === undefined && this.#written + chunk.length > this.size) this.#fail(new Error('the body is longer than its size'))
    return this.#failure !== undefined
  }

  /** `chunk` was queued: checksummed and counted, and written now unless a write is in flight. */
  #queuedMore(chunk: Uint8Array): boolean | Promise<boolean> {
    this.#checksum(chunk)
    this.#queued += chunk.length
    this.#flush()
    const held = this.#inFlight + this.#queued
    if (held <= HIGH_WATER || this.#writing === undefined) return true
    return this.#drained(this.#writing)
  }

  /** Whether the writer can take more once `writing` is done; false, failed, when the disk takes longer than WRITE_STALL_MS. */
  #drained(writing: Promise<void>): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#stalled()
        resolve(false)
      }, WRITE_STALL_MS)
      void writing.then(() => {
        clearTimeout(timer)
        resolve(this.#failure === undefined)
      })
    })
  }

  /**
   * Writes the header `headOf(table)` makes in front of the whole body and syncs the file; resolves
   * with that header. Rejects when the body fell short of its size or any write failed (the temp
   * file is then removed).
   */
  async finish(headOf: (table: Buffer) => Buffer): Promise<Buffer> {
    try {
      while (this.#writing !== undefined) await this.#writing
      if (this.#failure !== undefined) throw this.#failure
      if (this.#written !== this.size) throw new Error('the body ended early')
      const head = headOf(this.#table)
      if (head.length !== this.bodyOffset) throw new Error('the header changed length')
      const handle = await this.#file
      await writeAll(handle, [head], 0)
      await handle.sync()
      await this.#close()
      return head
    } catch (err) {
      this.#fail(err as Error)
      await this.abort()
      throw err
    }
  }

  /** Fails the writer for good; what is still queued is let go (a hung write may never return). */
  #fail(error: Error): void {
    if (this.#failure === undefined) this.#pause?.failedWith(error)
    this.#failure ??= error
    this.#progress.moved()
    this.#queue = []
    this.#queued = 0
    // Not being written: reusable at once.
    giveBack(this.#queuedCopies)
    this.#queuedCopies = []
  }

  /** Gives up: closes and removes the temp file (also after a failure). */
  async abort(): Promise<void> {
    this.#fail(new Error('given up'))
    await this.#close().catch(() => {})
    await rm(this.#temp, { force: true }).catch(() => {})
  }

  async #close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    // After the write in flight, failed or not.
    while (this.#writing !== undefined) await this.#writing
    const handle = await this.#file.catch(() => undefined)
    await handle?.close()
  }

  /** Hands everything queued to the disk in one writev, unless a write is in flight already. */
  #flush(): void {
    if (this.#writing !== undefined || this.#queue.length === 0 || this.#failure !== undefined) return
    const pieces = this.#queue
    const written = this.#queuedCopies
    const at = this.bodyOffset + this.#flushed
    this.#queue = []
    this.#queuedCopies = []
    this.#flushed += this.#queued
    const upTo = this.#flushed
    this.#inFlight = this.#queued
    this.#queued = 0
    // Readers of the growing file wait on every write: one the disk does not finish in time fails
    // the writer (as a body waiting on it does, #drained), so they go on without it.
    const stalled = setTimeout(() => this.#stalled(), WRITE_STALL_MS)
    this.#writing = this.#file
      .then((handle) => writeAll(handle, pieces, at))
      .then(
        () => {
          clearTimeout(stalled)
          giveBack(written)
          this.#writing = undefined
          this.#inFlight = 0
          this.#onFile = upTo
          this.#progress.moved()
          this.#flush()
        },
        (err: Error) => {
          clearTimeout(stalled)
          // The failed write is over (a hung one never settles: its copies are never reused).
          giveBack(written)
          this.#fail(err)
          this.#writing = undefined
          this.#inFlight = 0
        }
      )
  }

  /** A write took longer than WRITE_STALL_MS: the disk is failing or hung. */
  #stalled(): void {
    const reason = `the disk took no write in ${WRITE_STALL_MS} ms`
    if (this.#failure === undefined) this.#pause?.failed(reason)
    this.#fail(new Error(reason))
  }

  /** Folds `chunk` into the running block checksums, closing each block's entry in the table. */
  #checksum(chunk: Uint8Array): void {
    for (let at = 0; at < chunk.length; ) {
      const part = chunk.subarray(at, at + BLOCK_SIZE - (this.#written % BLOCK_SIZE))
      this.#crc = crc32(part, this.#crc)
      at += part.length
      this.#written += part.length
      if (this.#written % BLOCK_SIZE === 0 || this.#written === this.size) {
        this.#table.writeUInt32BE(this.#crc, 4 * Math.floor((this.#written - 1) / BLOCK_SIZE))
        this.#crc = 0
      }
    }
  }
}

/**
 * Writes `buffers` at `position`, going on after a short write: the disk then says why it took
 * less (ENOSPC on a full disk), which a short write alone does not.
 */
export async function writeAll(handle: FileHandle, buffers: Uint8Array[], position: number): Promise<void> {
  let pending = buffers
  let at = position
  for (;;) {
    const total = pending.reduce((sum, b) => sum + b.length, 0)
    const { bytesWritten } = await handle.writev(pending, at)
    if (bytesWritten === total) return
    if (bytesWritten === 0) throw new Error('the disk took no bytes')
    at += bytesWritten
    pending = afterFirst(pending, bytesWritten)
  }
}

/** `buffers` without their first `bytes` bytes. */
function afterFirst(buffers: Uint8Array[], bytes: number): Uint8Array[] {
  let skip = bytes
  let i = 0
  while (skip >= (buffers[i]?.length ?? 0) && i < buffers.length) skip -= buffers[i++]!.length
  const rest = buffers.slice(i)
  if (skip > 0 && rest[0] !== undefined) rest[0] = rest[0].subarray(skip)
  return rest
}

/**
 * The EntryWriter (ports.ts) over a file writer: `headOf` makes the header from the block table,
 * `install` moves the finished file into place and indexes it. A commit that takes longer than
 * `commitStallMs` resolves undefined (nothing stored; the file is removed if it ever finishes);
 * one whose file is not finished (written, synced) within commitFailureMs pauses the writes.
 */
export function entryWriterOf(
  out: EntryFileWriter,
  headOf: (table: Buffer) => Buffer,
  install: (head: Buffer) => Promise<CachedObject | undefined>,
  commitStallMs = COMMIT_STALL_MS,
  pause?: WritePause
): EntryWriter {
  const writer: EntryWriter = {
    write: (chunk) => out.write(chunk),
    writeCopy: (chunk) => out.writeCopy(chunk),
    writeAll: async (stream) => {
      const reader = stream.getReader()
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>
        try {
          next = await reader.read()
        } catch (err) {
          writer.abort()
          throw err
        }
        if (next.done) return writer.commit()
        if (!(await writer.write(next.value))) {
          writer.abort()
          await reader.cancel().catch(() => {})
          return undefined
        }
      }
    },
    commit: async () => {
      let late = false
      // Watched: the file's own writes and sync, not its installing (which may wait on other processes).
      const finish = () => out.finish(headOf)
      const finished = pause === undefined ? finish() : pause.watch(Math.max(commitStallMs, commitFailureMs(out.size)), finish)
      const committed = finished.then(
        // Finished after its deadline: not installed, the temp file goes.
        (head) => (late ? void out.abort() : install(head)),
        () => undefined
      )
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => {
          late = true
          // Readers of the growing file still waiting for its last bytes go on without them.
          void out.abort()
          resolve(undefined)
        }, commitStallMs)
      })
      try {
        return await Promise.race([committed.catch(() => undefined), deadline])
      } finally {
        clearTimeout(timer)
      }
    },
    abort: () => void out.abort(),
    growing: (rest) => new GrowingFileBody(out, out.bodyOffset, out.size, rest),
    whereGrowing: () => out.whereGrowing(),
  }
  return writer
}
