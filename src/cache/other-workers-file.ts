// Another worker's disk fill, read as it grows (a 'growing' claim, disk-cluster.ts): the temp file
// that worker is writing in the shared directory. Its writer writes in order, one write at a time
// (disk-writer.ts), and the kernel moves a file's size only past bytes already copied in, so every
// body byte below the size is the object's. The size is looked at when a reader waits for more:
// soon, then less and less often while the file stands still (a look is an fstat on the thread
// pool, which the disk tier's reads share). The fill's end comes from the primary (`ended`); a file
// that does not grow for `stallMs` before that counts as given up (its readers go on from the
// origin, as from a writer that failed) until it grows again.
import type { FileHandle } from 'node:fs/promises'
import type { GrowingFile } from './growing-body.ts'

/** The first look after a reader caught up; doubled while the file stands still, up to POLL_MAX_MS. */
const POLL_MIN_MS = 4
const POLL_MAX_MS = 32

export class OtherWorkersFile implements GrowingFile {
  readonly #handle: FileHandle
  readonly #bodyOffset: number
  readonly #length: number
  readonly #stallMs: number
  #over = false
  /** Ends the wait before the next look (the fill ended meanwhile). */
  #wake: (() => void) | undefined
  #onFile = 0
  #failed = false
  #delay = POLL_MIN_MS
  #grewAt = performance.now()
  /** The look in progress, shared by every reader waiting. */
  #looking: Promise<void> | undefined

  /** `handle` reads the file; `ended` settles when the other worker's fill is over. */
  constructor(handle: FileHandle, bodyOffset: number, length: number, ended: Promise<unknown>, stallMs: number) {
    this.#handle = handle
    this.#bodyOffset = bodyOffset
    this.#length = length
    this.#stallMs = stallMs
    const over = () => {
      this.#over = true
      this.#wake?.()
    }
    ended.then(over, over)
  }

  get onFile(): number {
    return this.#onFile
  }

  get failed(): boolean {
    return this.#failed
  }

  progress(): Promise<void> {
    this.#looking ??= this.#look().finally(() => {
      this.#looking = undefined
    })
    return this.#looking
  }

  openForReading(): Promise<FileHandle> {
    return Promise.resolve(this.#handle)
  }

  /** Waits a little (not once the fill is over), then reads the file's size. */
  async #look(): Promise<void> {
    if (!this.#over) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#wake?.(), this.#delay)
        this.#wake = () => {
          clearTimeout(timer)
          this.#wake = undefined
          resolve()
        }
      })
    }
    const over = this.#over
    let size: number
    try {
      size = (await this.#handle.stat()).size
    } catch {
      this.#failed = true
      return
    }
    const before = this.#onFile
    this.#onFile = Math.max(before, Math.min(this.#length, size - this.#bodyOffset))
    const now = performance.now()
    if (over) {
      // Looked at after the end: what is not on the file now never will be.
      this.#failed = this.#onFile < this.#length
    } else if (this.#onFile > before) {
      this.#failed = false
      this.#delay = POLL_MIN_MS
      this.#grewAt = now
    } else {
      this.#delay = Math.min(POLL_MAX_MS, this.#delay * 2)
      if (now - this.#grewAt >= this.#stallMs) this.#failed = true
    }
  }
}
