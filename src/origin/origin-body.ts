// The body of an origin response as the connection delivers it (origin-pool.ts): chunks pushed as
// the parser finds them, then the end or a failure. One consumer takes them, in one of two modes:
// - pulling (`read`, woken by `readable`): chunks wait here, and once HOLD_BYTES wait the
//   connection pauses until the consumer has read below that again; `read` answers null and
//   reports the end once nothing waits and every byte arrived;
// - flowing (`consume(consumer, true)`): what waits is handed over at once, then every chunk as it
//   arrives; the consumer pauses and resumes the connection itself (client back-pressure).
// Before a consumer comes, chunks wait as in pull mode: a small object is usually all here, with its
// end, by the time the response headers are handed out, and can be written out in one go.
// `destroy` (consumer gone, body unwanted) aborts the exchange unless every byte already arrived;
// either way the chunks are dropped and the consumer hears nothing more.
// A chunk lent from a pooled read buffer (read-buffers.ts) that waits here holds that buffer; it
// is lent on to a flowing consumer for the call, and given away to a pulling one, which may keep it.

import type { ReadBuffer } from './read-buffers.ts'

/** What the connection sees: pause, resume, abort (origin-pool.ts's exchange). */
export interface Transfer {
  pause(): void
  resume(): void
  abort(reason: Error): void
}

export interface BodyConsumer {
  /**
   * Flowing mode: the next chunk. With `from`, it is lent for this call only (read-buffers.ts): to
   * keep it, hold `from` until done with it, or copy it.
   */
  data?(chunk: Buffer, from?: ReadBuffer): void
  /** Pull mode: a chunk waits to be read (called when the first one arrives after none). */
  readable?(): void
  /** Every byte was taken. */
  end(): void
  /** The transfer failed (the connection was cut, or it was aborted by something else). */
  error(err: Error): void
}

/** What pull mode lets wait before pausing the connection. */
const HOLD_BYTES = 256 * 1024

export class OriginBody {
  readonly #transfer: Transfer
  readonly #held: Buffer[] = []
  /** The read buffer each held chunk is lent from, held here (undefined: the chunk is ours). */
  readonly #heldFrom: (ReadBuffer | undefined)[] = []
  #heldBytes = 0
  #consumer: BodyConsumer | undefined
  #flowing = false
  /** Pull mode, or before a consumer: too much waits here. */
  #pausedToHold = false
  /** Flowing mode: the consumer holds back. */
  #pausedByConsumer = false
  /** What the connection was last told. */
  #transferPaused = false
  /** Every byte arrived (the end may still wait behind held chunks). */
  #complete = false
  #failure: Error | undefined
  #over = false

  constructor(transfer: Transfer) {
    this.#transfer = transfer
  }

  /** Every byte has been received from the origin (some may still wait to be read). */
  get complete(): boolean {
    return this.#complete
  }

  /** Bytes received and waiting to be read. */
  get waitingBytes(): number {
    return this.#heldBytes
  }

  // --- Connection side -----------------------------------------------------------------------

  /** A chunk from the connection; with `from`, lent for the call (a chunk kept here holds it). */
  push(chunk: Buffer, from?: ReadBuffer): void {
    if (this.#over) return
    const consumer = this.#consumer
    if (this.#flowing && !this.#pausedByConsumer && this.#held.length === 0) {
      consumer?.data?.(chunk, from)
      return
    }
    from?.hold()
    this.#held.push(chunk)
    this.#heldFrom.push(from)
    this.#heldBytes += chunk.byteLength
    // Flowing and paused: the connection stops as this delivery returns; the chunk goes out on resume.
    if (this.#flowing) return
    if (this.#heldBytes >= HOLD_BYTES && !this.#pausedToHold) {
      this.#pausedToHold = true
      this.#update()
    }
    if (this.#held.length === 1 && consumer?.readable !== undefined) consumer.readable?.()
  }

  /** Every byte arrived. */
  finish(): void {
    if (this.#over) return
    this.#complete = true
    if (this.#held.length === 0 && this.#consumer !== undefined) this.#end()
  }

  /** The connection failed before the end. */
  fail(err: Error): void {
    if (this.#over) return
    this.#over = true
    this.#failure = err
    this.#drop()
    const consumer = this.#consumer
    if (consumer !== undefined) consumer.error(err)
  }

  // --- Consumer side -------------------------------------------------------------------------

  /**
   * Pull mode: the next waiting chunk, the reader's own (a read buffer it was lent from is given
   * away with it); or null, after reporting the end when every byte arrived and was read
   * (otherwise `readable` or `error` follows).
   */
  read(): Buffer | null {
    const chunk = this.#held.shift()
    const from = this.#heldFrom.shift()
    if (chunk === undefined) {
      if (this.#complete && !this.#over) this.#end()
      return null
    }
    this.#heldBytes -= chunk.byteLength
    if (this.#pausedToHold && this.#heldBytes < HOLD_BYTES) {
      this.#pausedToHold = false
      this.#update()
    }
    if (from !== undefined) {
      from.donate()
      from.release()
    }
    return chunk
  }

  /**
   * A complete body handed over whole, without a consumer: each waiting chunk goes to `take`, lent
   * for the call (hold `from` to keep it), `last` on the final one; then the body is over.
   */
  drain(take: (chunk: Buffer, from: ReadBuffer | undefined, last: boolean) => void): void {
    if (!this.#complete || this.#over || this.#consumer !== undefined) throw new Error('only a complete body nobody consumes is drained')
    this.#over = true
    while (this.#held.length > 0) {
      const chunk = this.#held.shift() as Buffer
      const from = this.#heldFrom.shift()
      this.#heldBytes -= chunk.byteLength
      take(chunk, from, this.#held.length === 0)
      from?.release()
    }
  }

  /**
   * Becomes the consumer. Flowing: waiting chunks are delivered now (until the consumer pauses),
   * then the end if it came. Pulling: `end` now when nothing waits and everything arrived;
   * otherwise `read` away. A failure that came first is reported now.
   */
  consume(consumer: BodyConsumer, flowing: boolean): void {
    if (this.#consumer !== undefined) throw new Error('an origin body has one consumer')
    this.#consumer = consumer
    if (this.#over) {
      if (this.#failure !== undefined) consumer.error(this.#failure)
      return
    }
    if (flowing) {
      this.#flowing = true
      this.#pausedToHold = false
      this.#flush()
      this.#update()
    } else if (this.#held.length === 0 && this.#complete) {
      this.#end()
    }
  }

  /** Flowing mode: hold the connection back (the consumer cannot take more yet). */
  pause(): void {
    if (this.#pausedByConsumer || this.#over) return
    this.#pausedByConsumer = true
    this.#update()
  }

  /** Flowing mode: the consumer takes chunks again; what waits comes first. */
  resume(): void {
    if (!this.#pausedByConsumer || this.#over) return
    this.#pausedByConsumer = false
    this.#flush()
    this.#update()
  }

  /** The consumer is gone or the body unwanted: aborts the transfer unless it is complete. */
  destroy(reason?: Error): void {
    if (this.#over) return
    this.#over = true
    this.#drop()
    if (!this.#complete) this.#transfer.abort(reason ?? new Error('origin body destroyed'))
  }

  /** Flowing mode: hands over what waits while the consumer takes it, then the end if it came. */
  #flush(): void {
    const consumer = this.#consumer
    while (!this.#pausedByConsumer && !this.#over && this.#held.length > 0) {
      const chunk = this.#held.shift() as Buffer
      const from = this.#heldFrom.shift()
      this.#heldBytes -= chunk.byteLength
      // Lent to the consumer for the call, as a chunk straight from the connection is.
      consumer?.data?.(chunk, from)
      from?.release()
    }
    if (this.#held.length === 0 && this.#complete && !this.#over) this.#end()
  }

  /** Tells the connection to pause or resume when what it should do changed. */
  #update(): void {
    const pause = !this.#over && !this.#complete && (this.#pausedToHold || this.#pausedByConsumer)
    if (pause === this.#transferPaused) return
    this.#transferPaused = pause
    if (pause) this.#transfer.pause()
    // The connection resumes its socket on a later tick, never from inside its own delivery.
    else this.#transfer.resume()
  }

  #end(): void {
    this.#over = true
    this.#consumer?.end()
  }

  #drop(): void {
    for (const from of this.#heldFrom) from?.release()
    this.#held.length = 0
    this.#heldFrom.length = 0
    this.#heldBytes = 0
  }
}
