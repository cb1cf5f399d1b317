// Open file descriptors of the disk tier's entries, shared by the reads of one entry (its header,
// then each stream of its body) and kept open a while after, so a hit opens nothing and a sliced
// object's slices are not opened twice each (an open and a close cost more CPU than reading a
// 256 KiB block). Reads use positions (pread), so any number of streams share one descriptor.
//
// A read is one callback `fs.read` on the raw descriptor: one thread-pool round trip and one
// promise, which is what a small hit costs (a FileHandle's promise machinery costs ~15% more CPU
// per read, an open and a close two more round trips).
//
// A descriptor belongs to one index entry, so to one file: when the tier drops the entry (evicted,
// purged, deleted, replaced by a newer file or found damaged) it retires the descriptor, which
// closes as soon as no read uses it. Until then the streams using it keep reading the bytes they
// started with (an unlinked file stays readable while open). At most `maxIdle` descriptors are
// kept open unused; the least recently used is closed first.
import { close, open, read } from 'node:fs'

export interface SharedHandle {
  /** Keeps the file open for one more user (opening it if needed). Rejects when it cannot be opened. */
  acquire(): Promise<void>
  /** One user less: call once for each acquire that resolved. */
  release(): void
  /** Reads `length` bytes at `position` into `buffer`; only between an acquire and its release. */
  read(buffer: Uint8Array, length: number, position: number): Promise<number>
}

export class OpenFiles {
  readonly #maxIdle: number
  /** Open and unused, least recently used first. */
  readonly #idle = new Set<EntryFile>()

  constructor(maxIdle: number) {
    this.#maxIdle = maxIdle
  }

  /** The shared descriptor of `file` for one index entry (opened at its first acquire). */
  handleOf(file: string): EntryFile {
    return new EntryFile(file, this)
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
    if (this.#idle.size <= this.#maxIdle) return
    const oldest = this.#idle.values().next().value as EntryFile
    this.#idle.delete(oldest)
    oldest.closeNow()
  }

  /** @internal in use again, or retired. */
  busy(file: EntryFile): void {
    this.#idle.delete(file)
  }
}

export class EntryFile implements SharedHandle {
  readonly file: string
  readonly #files: OpenFiles
  /** The open descriptor, once opened. */
  #fd: number | undefined
  /** The open in flight. */
  #opening: Promise<number> | undefined
  #users = 0
  #retired = false

  constructor(file: string, files: OpenFiles) {
    this.file = file
    this.#files = files
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
        this.#fd = fd
        resolve(fd)
      })
    )
  }
}
