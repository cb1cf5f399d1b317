// The disk tier stops writing for a while after the disk failed a write: a write or commit that
// stalled (disk-writer.ts deadlines), a full disk, an I/O error, a read-only file system. Without
// it, every fill tries the same disk again: on a hung disk each one costs its client up to
// WRITE_STALL_MS (a HEAD or Range miss up to COMMIT_STALL_MS) and ties up a thread-pool thread,
// which the hits' reads need too. While writes are paused, misses stream through without a disk
// copy and hits are still read. The pause doubles while the disk keeps failing (the first write
// after a pause is the probe) and starts over once a write is committed.

/** The first pause after the disk failed a write. */
export const WRITES_PAUSE_MS = 30_000
/** The longest pause, reached by doubling while the disk keeps failing. */
export const WRITES_PAUSE_MAX_MS = 5 * 60_000

export type WritesEvent = { paused: true; reason: string; seconds: number } | { paused: false }

export class WritePause {
  readonly #initialMs: number
  readonly #onChange: ((event: WritesEvent) => void) | undefined
  #until = 0
  #nextMs: number
  /** Paused since the last committed write. */
  #failing = false

  constructor(onChange?: (event: WritesEvent) => void, initialMs = WRITES_PAUSE_MS) {
    this.#onChange = onChange
    this.#initialMs = initialMs
    this.#nextMs = initialMs
  }

  /** Whether new writes are refused now. */
  get active(): boolean {
    return this.#until > Date.now()
  }

  /** The disk failed a write: new writes stop for a while (writes already failing in the same pause are one failure). */
  failed(reason: string): void {
    const now = Date.now()
    if (this.#until > now) return
    this.#until = now + this.#nextMs
    this.#failing = true
    this.#onChange?.({ paused: true, reason, seconds: this.#nextMs / 1000 })
    this.#nextMs = Math.min(this.#nextMs * 2, Math.max(WRITES_PAUSE_MAX_MS, this.#initialMs))
  }

  /** A write was committed after its pause ended: the disk works again. */
  worked(): void {
    if (!this.#failing || this.active) return
    this.#failing = false
    this.#nextMs = this.#initialMs
    this.#onChange?.({ paused: false })
  }
}

/** The code of an error that says the disk failed a write (not the process, not the body); else undefined. */
export function diskWriteFailure(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOSPC' || code === 'EIO' || code === 'EROFS' || code === 'EDQUOT' ? code : undefined
}
