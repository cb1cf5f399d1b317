// The buffers an origin connection's socket reads into (http1-connection.ts), pooled. Left to
// itself, Node allocates a fresh 64 KiB buffer for every socket read: a 10 MiB answer is 160
// allocations outside V8's heap, and that external memory is what drives V8 into full mark-sweep
// collections of the whole heap (measured: a quarter of the proxy's CPU on a 10 MiB miss, and
// half of it gone with these buffers reused).
// - A body chunk handed on from a read is a view of that read's buffer, lent for the call only
//   (from reads of at least LENT_READ_BYTES; smaller ones are copied out).
//   Whoever keeps it past the call either copies it or `hold`s the buffer and calls `release`
//   when done (http/ServerResponse writes: `release` is their write callback).
// - The connection reads into the same buffer again when nothing holds it after a read, and takes
//   another from the pool when something does; a buffer goes back to the pool when its last hold
//   is released after the connection moved on (`retire`).
// - At most FREE_KEPT buffers wait in the pool; past that, released buffers are left to the GC.

export const READ_BUFFER_BYTES = 64 * 1024
/**
 * Reads at least this large are lent; smaller ones are copied out, so that a buffer is held only
 * for a read that filled a quarter of it (a slow origin's trickle of small reads, held by a slow
 * client, would otherwise keep a whole buffer per few bytes).
 */
export const LENT_READ_BYTES = READ_BUFFER_BYTES / 4
/** 4 MiB: what 64 busy connections churn through between two writes finishing. */
const FREE_KEPT = 64

const free: ReadBuffer[] = []
/** Buffers ever allocated, and those something holds now. */
const counts = { allocated: 0, held: 0 }

export class ReadBuffer {
  readonly bytes = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)
  #holds = 0
  /** The connection may still read into it. */
  #reading = true
  /** Given away for good (`donate`). */
  #donated = false

  /** A buffer from the pool (or a new one), for a connection to read into. */
  static take(): ReadBuffer {
    const buffer = free.pop()
    if (buffer === undefined) {
      counts.allocated++
      return new ReadBuffer()
    }
    buffer.#reading = true
    return buffer
  }

  /** Something kept a view of these bytes past the read: it must not be read into. */
  get held(): boolean {
    return this.#holds > 0 || this.#donated
  }

  /**
   * Gives the bytes away for good, to a reader that may keep a chunk as long as it likes (cheaper
   * than a copy): the buffer is never read into or pooled again, and goes with its last view.
   */
  donate(): void {
    this.#donated = true
  }

  /** Keeps the bytes from being read over until `release`. */
  hold(): void {
    if (this.#holds++ === 0) counts.held++
  }

  /** Ends one `hold` (bound: usable as a write callback, whatever it is called with). */
  readonly release = (): void => {
    if (this.#holds === 0) return
    this.#holds--
    if (this.#holds > 0) return
    counts.held--
    if (!this.#reading && !this.#donated) giveBack(this)
  }

  /** The connection reads into another buffer now: this one goes back once nothing holds it. */
  retire(): void {
    if (!this.#reading) return
    this.#reading = false
    if (this.#holds === 0 && !this.#donated) giveBack(this)
  }
}

function giveBack(buffer: ReadBuffer): void {
  if (free.length < FREE_KEPT) free.push(buffer)
}

/** Buffers allocated so far, held now, and waiting in the pool (tests: reuse, and what a stalled client pins). */
export function readBufferCounts(): { allocated: number; held: number; free: number } {
  return { ...counts, free: free.length }
}
