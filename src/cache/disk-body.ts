// A disk entry's body as a StoredBody (ports.ts): read from its file lazily, up to two checked
// blocks per pull, only the blocks a range overlaps. The file is opened at the first pull (a HEAD
// or a 304 never opens it) and released at the end, on cancel or on an error. The descriptor is the
// entry's, shared with its other reads (disk-handles.ts), and stays open while a stream uses it,
// so an entry replaced, evicted or purged while it streams keeps streaming the bytes it started
// with (POSIX keeps an unlinked file readable while it is open).
//
// Every block is checked against the table read with the entry's header before any of its bytes
// are handed on. A block that fails (flipped bits, a truncated file, or a file replaced since the
// header was read) errors the stream and tells the tier, which drops the entry; the good blocks
// read before it in the same read are handed on first.
import type { StoredBody, StoredBodyStreamOptions } from '../ports.ts'
import type { ByteRange } from '../types.ts'
import { blockIntact } from './block-crcs.ts'
import { BLOCK_SIZE } from './disk-format.ts'
import type { SharedHandle } from './disk-handles.ts'

/**
 * Blocks read at a time (512 KiB of 256 KiB blocks): what a stream holds. Measured on 10 MiB hits
 * at 64 connections: 2 blocks cost the CPU of 4 (within noise) for half the memory per stream;
 * 1 block costs ~40% more CPU per request.
 */
const READ_BLOCKS = 2

/**
 * Read buffers of `reuseChunks` streams, kept between streams: a fresh 512 KiB buffer costs ~128
 * page faults when first written and, freed, waits for a garbage collection (V8 collects only once
 * external memory grew by tens of MB), so streams beyond the pool pile up garbage: 64 clients of
 * 10 MiB hits with a pool of 32 peaked at ~175-190 MB RSS, with 64 at ~155 MB. A buffer is in the
 * pool only while no stream holds it; the pool holds at most 32 MiB.
 */
const POOLED_BYTES = READ_BLOCKS * BLOCK_SIZE
const POOL_LIMIT = 64
const pool: Buffer[] = []

/** A buffer of at least `size` bytes: a pooled one when the standard size fits (also for growing-body.ts). */
export function takeBuffer(size: number): Buffer {
  if (size > POOLED_BYTES) return Buffer.allocUnsafeSlow(size)
  return pool.pop() ?? Buffer.allocUnsafeSlow(POOLED_BYTES)
}

/** A buffer from takeBuffer that no read writes into any more, and no consumer holds. */
export function giveBack(buffer: Buffer): void {
  if (buffer.length === POOLED_BYTES && pool.length < POOL_LIMIT) pool.push(buffer)
}

export class DamagedEntryError extends Error {
  override readonly name = 'DamagedEntryError'
}

export interface DiskBodyOptions {
  /** The entry's file, opened at the first read (shared with other reads of the entry). */
  file: SharedHandle
  /** Where the body starts in the file. */
  bodyOffset: number
  length: number
  blockSize: number
  /** The block table from the entry's header (disk-format.ts). */
  crcs: Buffer
  /** Told when a block fails its check: the tier drops the entry (once is enough; may repeat). */
  onDamage: () => void
}

export class DiskBody implements StoredBody {
  readonly length: number
  readonly blockSize: number
  readonly crcs: Buffer
  readonly #file: SharedHandle
  readonly #bodyOffset: number
  readonly #onDamage: () => void

  constructor(options: DiskBodyOptions) {
    this.length = options.length
    this.blockSize = options.blockSize
    this.crcs = options.crcs
    this.#file = options.file
    this.#bodyOffset = options.bodyOffset
    this.#onDamage = options.onDamage
  }

  stream(range?: ByteRange, options: StoredBodyStreamOptions = {}): ReadableStream<Uint8Array> {
    const { blockSize } = this
    const end = range?.end ?? this.length - 1
    let next = range?.start ?? 0
    /** The file is acquired (from the first pull to the end, a cancel or an error). */
    let open = false
    /** The one buffer of a `reuseChunks` stream (pooled: see takeBuffer). */
    let reused: Buffer | undefined
    /** A read into `reused` is in flight: the buffer goes back to the pool only after it. */
    let reading = false
    let finished = false
    /** A damaged block found after good ones in the same read: the next pull fails with it. */
    let failure: Error | undefined
    const close = () => {
      if (!open) return
      open = false
      this.#file.release()
    }
    // The last chunk handed on may still be on its way to the socket until the consumer asks for
    // more (or cancels): the buffer is given back then, never while a read may write into it.
    const finish = () => {
      finished = true
      if (reused !== undefined && !reading) {
        giveBack(reused)
        reused = undefined
      }
    }
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          try {
            if (failure !== undefined) throw failure
            if (next > end) {
              close()
              finish()
              controller.close()
              return
            }
            if (!open) {
              await this.#file.acquire().catch((err: NodeJS.ErrnoException) => {
                // The file is gone under its index entry (deleted while it was being installed):
                // dropped like a damaged entry, so the next request is a miss, not another failure.
                if (err.code === 'ENOENT') this.#onDamage()
                throw err
              })
              if (finished) return this.#file.release() // cancelled meanwhile
              open = true
            }
            // The blocks from `next` on, at most READ_BLOCKS of them, none past the range.
            const first = Math.floor(next / blockSize)
            const last = Math.min(Math.floor(end / blockSize), first + READ_BLOCKS - 1)
            const start = first * blockSize
            const size = Math.min((last + 1) * blockSize, this.length) - start
            let bytes: Buffer
            if (options.reuseChunks === true) {
              reused ??= takeBuffer(Math.min(READ_BLOCKS * blockSize, Math.min((Math.floor(end / blockSize) + 1) * blockSize, this.length) - start))
              bytes = reused.subarray(0, size)
            } else {
              // Its own memory, not a slice of Node's shared pool.
              bytes = Buffer.allocUnsafeSlow(size)
            }
            let bytesRead: number
            reading = true
            try {
              bytesRead = await this.#file.read(bytes, size, this.#bodyOffset + start)
            } finally {
              reading = false
              if (finished) finish()
            }
            if (finished) return close() // cancelled meanwhile
            const intact = this.#intactPrefix(bytes, bytesRead, first)
            if (intact.failure !== undefined) failure = intact.failure
            const from = next - start
            const to = Math.min(end + 1 - start, intact.bytes)
            // Nothing good to hand on: fail now; else the good blocks go first, the failure next.
            if (to <= from) throw failure ?? new DamagedEntryError('disk cache entry: nothing to read')
            next = start + to
            // The file is released with the last chunk; the stream ends at the next pull.
            if (next > end) close()
            controller.enqueue(bytes.subarray(from, to))
          } catch (err) {
            // Also after a cancel: the read in flight finishes, its enqueue throws, the file closes.
            close()
            finish()
            throw err
          }
        },
        cancel: async () => {
          finish()
          // A read in flight releases the file when it is done.
          if (!reading) close()
        },
      },
      // No read-ahead: the next blocks are read when the consumer asks for them.
      { highWaterMark: 0 }
    )
  }

  /**
   * How many of `bytes` (blocks `first`, `first + 1`, ... read from the file, `bytesRead` of them
   * there) are whole blocks that pass their checks, in order; and the failure that stopped it.
   */
  #intactPrefix(bytes: Buffer, bytesRead: number, first: number): { bytes: number; failure: Error | undefined } {
    const { blockSize } = this
    for (let at = 0, index = first; at < bytes.length; at += blockSize, index++) {
      const wanted = Math.min(blockSize, bytes.length - at)
      if (bytesRead < at + wanted) return { bytes: at, failure: this.#damaged('the file is shorter than its header says') }
      if (!blockIntact(this.crcs, index, bytes.subarray(at, at + wanted))) return { bytes: at, failure: this.#damaged(`block ${index} fails its checksum`) }
    }
    return { bytes: bytes.length, failure: undefined }
  }

  async bytes(): Promise<Buffer> {
    const body = Buffer.allocUnsafeSlow(this.length)
    if (this.length === 0) return body
    await this.#file.acquire()
    try {
      const bytesRead = await this.#file.read(body, this.length, this.#bodyOffset)
      if (bytesRead !== this.length) throw this.#damaged('the file is shorter than its header says')
      for (let i = 0, at = 0; at < this.length; i++, at += this.blockSize) {
        if (!blockIntact(this.crcs, i, body.subarray(at, at + this.blockSize))) throw this.#damaged(`block ${i} fails its checksum`)
      }
      return body
    } finally {
      this.#file.release()
    }
  }

  #damaged(why: string): DamagedEntryError {
    this.#onDamage()
    return new DamagedEntryError(`disk cache entry damaged: ${why}`)
  }
}
