// The disk tier stops writing for a while after the disk failed a write: a write or commit that
// stalled (disk-writer.ts deadlines), a full disk, an I/O error, a read-only file system. Without
// it, every fill tries the same disk again: on a hung disk each one costs its client up to
// WRITE_STALL_MS (a HEAD or Range miss up to COMMIT_STALL_MS) and ties up a thread-pool thread,
// which the hits' reads need too. While writes are paused, misses stream through without a disk
// copy and hits are still read. After the pause one write at a time goes through (the probe): the
// pause doubles while the disk keeps failing, and starts over once a write is committed.

/** The first pause after the disk failed a write. */
export const WRITES_PAUSE_MS = 30_000
/** The longest pause, reached by doubling while the disk keeps failing. */
export const WRITES_PAUSE_MAX_MS = 5 * 60_000
/**
 * After a pause, how long the one write let through (the probe) has to say whether the disk
 * works before another is let through (it may have ended without a verdict: a client that left).
 */
export const PROBE_MS = 15_000

export type WritesEvent = { paused: true; reason: string; seconds: number } | { paused: false }

export class WritePause {
  readonly #initialMs: number
  readonly #onChange: ((event: WritesEvent) => void) | undefined
  /** Failing since the last committed write: paused, or letting one probe through at a time. */
  #failing = false
  #until = 0
  #probeUntil = 0
  #nextMs: number

  constructor(onChange?: (event: WritesEvent) => void, initialMs = WRITES_PAUSE_MS) {
    this.#onChange = onChange
    this.#initialMs = initialMs
    this.#nextMs = initialMs
  }

  /** Whether writes are paused (or only a probe at a time goes through) now. */
  get paused(): boolean {
    return this.#failing
  }

  /**
   * Whether a new write may start: always while the disk works; after a failure, none during the
   * pause, then one at a time (each the probe of the disk) until a write is committed.
   */
  mayWrite(): boolean {
    if (!this.#failing) return true
    const now = performance.now()
    if (now < this.#until || now < this.#probeUntil) return false
    this.#probeUntil = now + PROBE_MS
    return true
  }

  /** The disk failed a write: new writes stop for a while (writes already failing in the same pause are one failure). */
  failed(reason: string): void {
    const now = performance.now()
    if (now < this.#until) return
    this.#failing = true
    this.#until = now + this.#nextMs
    this.#probeUntil = 0
    this.#onChange?.({ paused: true, reason, seconds: this.#nextMs / 1000 })
    this.#nextMs = Math.min(this.#nextMs * 2, Math.max(WRITES_PAUSE_MAX_MS, this.#initialMs))
  }

  /** The disk's error for a write: pauses the writes when it says the disk failed (full, I/O error...). */
  failedWith(err: unknown): void {
    const code = diskWriteFailure(err)
    if (code !== undefined) this.failed(`a write failed: ${code}`)
  }

  /**
   * Runs `write` (a file's writes and sync), which the disk must finish within `withinMs`: slower,
   * or failing as failedWith says, it pauses the writes. Resolves or rejects as `write` does.
   */
  async watch<T>(withinMs: number, write: () => Promise<T>): Promise<T> {
    const stalled = setTimeout(() => this.failed(`a commit took longer than ${withinMs} ms`), withinMs)
    try {
      return await write()
    } catch (err) {
      this.failedWith(err)
      throw err
    } finally {
      clearTimeout(stalled)
    }
  }

  /** A write was committed after its pause ended: the disk works again. */
  worked(): void {
    if (!this.#failing || performance.now() < this.#until) return
    this.#failing = false
    this.#nextMs = this.#initialMs
    this.#onChange?.({ paused: false })
  }
}

/** The code of an error that says the disk failed a write (not the process, not the body); else undefined. */
function diskWriteFailure(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOSPC' || code === 'EIO' || code === 'EROFS' || code === 'EDQUOT' ? code : undefined
}
