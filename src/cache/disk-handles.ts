// Open file descriptors of the disk tier's entries, shared by the reads of one entry (its header,
// then each stream of its body) and kept open a while after, so a hit opens nothing and a sliced
// object's slices are not opened twice each (an open and a close cost more CPU than reading a
// 256 KiB block). Reads use positions (pread), so any number of streams share one descriptor.
//
// A read is one callback `fs.read` on the raw descriptor: one thread-pool round trip and one
// promise (a FileHandle's promise machinery costs ~15% more CPU per read, an open and a close two
// more round trips). A small read of an open file (a small hit's body) is instead made on the event
// loop, as nginx reads files without aio: from the page cache a pread of up to 64 KiB costs a few
// µs, where the round trip costs ~8 µs of CPU and two context switches on a one-core server, and
// with 64 reads queued at once the pool's threads and the event loop take turns on that core.
// Inline reads slower than SLOW_INLINE_MS (from an SSD rather than the page cache: ~100 µs and
// more) are added up, and once they have held the loop SLOW_BUDGET_MS within SLOW_WINDOW_MS (the
// entries read are not in memory) inline reads stop for INLINE_PAUSE_MS: entries that do not fit
// in the page cache cost the loop at most ~2% of its time. A lone slow read, more likely the
// process losing its core for a moment on a busy machine, does not stop them.
//
// A descriptor belongs to one index entry, so to one file: when the tier drops the entry (evicted,
// purged, deleted, replaced by a newer file or found damaged) it retires the descriptor, which
// closes as soon as no read uses it. Until then the streams using it keep reading the bytes they
// started with (an unlinked file stays readable while open). At most `maxIdle` descriptors are
// kept open unused; the least recently used is closed first.
//
// With `identities` (a cluster worker, whose directory other workers write too), the file an entry
// was indexed with is the one its first open found, or the one the tier wrote (its inode and
// modification time: an inode number is reused once its file is gone; entries are never
// modified). A later open
// (the descriptor was closed while idle) may find another file under the name: the entry was
// written again (a revalidation, or another worker). It is read all the same, its blocks checked
// against the header the tier knows (a revalidated copy has the same bytes, and passes), and the
// handle says `replaced`: a failed check is then the tier's stale header, not damage, so the tier
// forgets the entry instead of deleting the new file.
import { close, fstatSync, open, read, readSync } from 'node:fs'

/**
 * Whether a failed open or read was the process's trouble (out of descriptors or memory, a signal),
 * not the file's: the entry is not to blame, so it is kept, and read again another time.
 */
export function transientFsError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM' || code === 'EAGAIN' || code === 'EINTR'
}

/** Inline reads slower than this count against SLOW_BUDGET_MS per SLOW_WINDOW_MS; over it, they stop for INLINE_PAUSE_MS. */
export const SLOW_INLINE_MS = 0.1
export const SLOW_BUDGET_MS = 20
export const SLOW_WINDOW_MS = 1000
export const INLINE_PAUSE_MS = 10_000
/** The largest read made inline. */
export const MAX_INLINE_BYTES = 64 * 1024

export interface FileIdentity {
  readonly ino: number
  readonly mtimeMs: number
  readonly size: number
}

/** Whether two stats are of one file (the same inode, not modified: an entry's file never is). */
export function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.size === b.size
}

export interface SharedHandle {
  /** Keeps the file open for one more user (opening it if needed). Rejects when it cannot be opened. */
  acquire(): Promise<void>
  /** One user less: call once for each acquire that resolved. */
  release(): void
  /** Reads `length` bytes at `position` into `buffer`; only between an acquire and its release. */
  read(buffer: Uint8Array, length: number, position: number): Promise<number>
}

export class OpenFiles {
  /** Opens learn the file's identity (FileIdentity), and later opens compare with it. */
  readonly identities: boolean
  readonly #maxIdle: number
  /** Open and unused, least recently used first. */
  readonly #idle = new Set<EntryFile>()
  readonly #now: () => number
  /** Inline reads are off until then (slow ones were seen). */
  #inlineOffUntil = 0
  /** Time spent in slow inline reads since `#slowSince`. */
  #slowMs = 0
  #slowSince = 0

  constructor(maxIdle: number, options: { now?: () => number; identities?: boolean } = {}) {
    this.#maxIdle = maxIdle
    this.#now = options.now ?? (() => performance.now())
    this.identities = options.identities ?? false
  }

  /**
   * The shared descriptor of `file` for one index entry (opened at its first acquire); `identity`:
   * the file the entry is, when known before it is opened (the tier wrote it).
   */
  handleOf(file: string, identity?: FileIdentity): EntryFile {
    return new EntryFile(file, this, identity)
  }

  /** Closes every unused descriptor (the tier is closing). */
  closeIdle(): void {
    for (const file of this.#idle) file.closeNow()
    this.#idle.clear()
  }

  /** @internal an open descriptor with no user. */
  idle(file: EntryFile): void {
    this.#idle.delete(file)
    this.#idle.add(file)
    file.readWhileIdle = false
    if (this.#idle.size <= this.#maxIdle) return
    // The least recently used: a descriptor read inline since it went idle (readNow leaves it in
    // place, a Set reordering per hit costs more than the read) goes to the back instead, once.
    for (const oldest of this.#idle) {
      this.#idle.delete(oldest)
      if (!oldest.readWhileIdle) return oldest.closeNow()
      oldest.readWhileIdle = false
      this.#idle.add(oldest)
    }
  }

  /** @internal in use again, or retired. */
  busy(file: EntryFile): void {
    this.#idle.delete(file)
  }

  /** @internal read inline: `fd` at `position`, timed; undefined when inline reads are off. */
  readInline(fd: number, buffer: Uint8Array, length: number, position: number): number | undefined {
    const started = this.#now()
    if (started < this.#inlineOffUntil) return undefined
    try {
      return readSync(fd, buffer, 0, length, position)
    } finally {
      const ended = this.#now()
      if (ended - started > SLOW_INLINE_MS) this.#slow(ended, ended - started)
    }
  }

  #slow(at: number, took: number): void {
    if (at - this.#slowSince > SLOW_WINDOW_MS) {
      this.#slowSince = at
      this.#slowMs = 0
    }
    this.#slowMs += took
    if (this.#slowMs <= SLOW_BUDGET_MS) return
    this.#inlineOffUntil = at + INLINE_PAUSE_MS
    this.#slowMs = 0
  }
}

export class EntryFile implements SharedHandle {
  readonly file: string
  /** @internal read inline since it last went idle (OpenFiles keeps it open a while longer). */
  readWhileIdle = false
  readonly #files: OpenFiles
  /** The open descriptor, once opened. */
  #fd: number | undefined
  /** The file's inode, modification time and size at its first open: the file this entry is. */
  #identity: FileIdentity | undefined
  #replaced = false
  /** The open in flight. */
  #opening: Promise<number> | undefined
  #users = 0
  #retired = false

  constructor(file: string, files: OpenFiles, identity?: FileIdentity) {
    this.file = file
    this.#files = files
    if (identity !== undefined) this.#identity = { ino: identity.ino, mtimeMs: identity.mtimeMs, size: identity.size }
  }

  async acquire(): Promise<void> {
    this.#users++
    this.#files.busy(this)
    if (this.#fd !== undefined) return
    const opening = (this.#opening ??= this.#open())
    try {
      await opening
    } catch (err) {
      this.release()
      throw err
    }
  }

  release(): void {
    if (--this.#users > 0) return
    if (this.#retired) this.closeNow()
    else if (this.#fd !== undefined) this.#files.idle(this)
  }

  read(buffer: Uint8Array, length: number, position: number): Promise<number> {
    const fd = this.#fd
    if (fd === undefined || this.#users === 0) return Promise.reject(new Error(`${this.file} is not acquired`))
    return new Promise((resolve, reject) => read(fd, buffer, 0, length, position, (err, bytesRead) => (err === null ? resolve(bytesRead) : reject(err))))
  }

  /**
   * Acquires, reads and releases in one go: when the file is already open, one thread-pool round
   * trip and no other promise. Rejects when the file cannot be opened or read.
   */
  readOnce(buffer: Uint8Array, length: number, position: number): Promise<number> {
    const fd = this.#fd
    if (fd === undefined) return this.#readOpening(buffer, length, position)
    this.#users++
    this.#files.busy(this)
    return new Promise((resolve, reject) =>
      read(fd, buffer, 0, length, position, (err, bytesRead) => {
        this.release()
        if (err === null) resolve(bytesRead)
        else reject(err)
      })
    )
  }

  /**
   * Reads on the event loop when the file is open, `length` is at most MAX_INLINE_BYTES and
   * inline reads are on; undefined otherwise (then readOnce). Throws what the read throws.
   */
  readNow(buffer: Uint8Array, length: number, position: number): number | undefined {
    const fd = this.#fd
    if (fd === undefined || length > MAX_INLINE_BYTES) return undefined
    const bytesRead = this.#files.readInline(fd, buffer, length, position)
    // Recently used: not the next idle descriptor to be closed (see OpenFiles.idle).
    this.readWhileIdle = true
    return bytesRead
  }

  /** The file's inode, modification time and size when it was first opened (undefined before). */
  get identity(): FileIdentity | undefined {
    return this.#identity
  }

  /** An open found another file under the name than the first open did (the entry was written again). */
  get replaced(): boolean {
    return this.#replaced
  }

  /** The entry left the index: close once unused; later acquires (a late stream) open again. */
  retire(): void {
    this.#retired = true
    this.#files.busy(this)
    if (this.#users === 0) this.closeNow()
  }

  /** @internal */
  closeNow(): void {
    const fd = this.#fd
    this.#fd = undefined
    if (fd !== undefined) close(fd, () => {})
  }

  async #readOpening(buffer: Uint8Array, length: number, position: number): Promise<number> {
    await this.acquire()
    try {
      return await this.read(buffer, length, position)
    } finally {
      this.release()
    }
  }

  #open(): Promise<number> {
    return new Promise<number>((resolve, reject) =>
      open(this.file, 'r', (err, fd) => {
        this.#opening = undefined
        if (err !== null) return reject(err)
        // Every user left meanwhile (a cancelled read) and the entry was retired: nobody will close it.
        if (this.#users === 0 && this.#retired) {
          close(fd, () => {})
          return reject(new Error(`${this.file} was retired while it opened`))
        }
        if (this.#files.identities) {
          // An fstat of an open descriptor is answered from the inode in memory (on a local file
          // system): made here, on the loop.
          let found: FileIdentity
          try {
            const { ino, mtimeMs, size } = fstatSync(fd)
            found = { ino, mtimeMs, size }
          } catch (err) {
            close(fd, () => {})
            return reject(err as Error)
          }
          if (this.#identity === undefined) this.#identity = found
          else if (!sameFile(this.#identity, found)) this.#replaced = true
        }
        this.#fd = fd
        resolve(fd)
      })
    )
  }
}
