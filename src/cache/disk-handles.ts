// Open file descriptors of the disk tier's entries, shared by the reads of one entry (its header,
// then each stream of its body) and kept open a while after, so a hit opens nothing and a sliced
// object's slices are not opened twice each (an open and a close cost more CPU than reading a
// 256 KiB block). Reads use positions (pread), so any number of streams share one descriptor.
//
// A descriptor belongs to one index entry, so to one file: when the tier drops the entry (evicted,
// purged, deleted, replaced by a newer file or found damaged) it retires the descriptor, which
// closes as soon as no read uses it. Until then the streams using it keep reading the bytes they
// started with (an unlinked file stays readable while open). At most `maxIdle` descriptors are
// kept open unused; the least recently used is closed first.
import { open, type FileHandle } from 'node:fs/promises'

export interface SharedHandle {
  /** The file open for reading (one more user). Rejects when it cannot be opened. */
  acquire(): Promise<FileHandle>
  /** One user less: call once for each acquire that resolved. */
  release(): void
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
  #handle: Promise<FileHandle> | undefined
  #users = 0
  #retired = false

  constructor(file: string, files: OpenFiles) {
    this.file = file
    this.#files = files
  }

  async acquire(): Promise<FileHandle> {
    this.#users++
    this.#files.busy(this)
    const opening = (this.#handle ??= open(this.file, 'r'))
    try {
      return await opening
    } catch (err) {
      if (this.#handle === opening) this.#handle = undefined
      this.release()
      throw err
    }
  }

  release(): void {
    if (--this.#users > 0) return
    if (this.#retired) this.closeNow()
    else if (this.#handle !== undefined) this.#files.idle(this)
  }

  /** The entry left the index: close once unused; later acquires (a late stream) open again. */
  retire(): void {
    this.#retired = true
    this.#files.busy(this)
    if (this.#users === 0) this.closeNow()
  }

  /** @internal */
  closeNow(): void {
    const handle = this.#handle
    this.#handle = undefined
    handle?.then((h) => h.close()).catch(() => {})
  }
}
