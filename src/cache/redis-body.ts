// The body of a large Redis entry (a value in blocks, codec.ts) as a StoredBody (ports.ts): read
// from Redis by range as the consumer pulls, two blocks per read (GETRANGE under a guard), only
// the blocks a range overlaps, so a large hit holds a few blocks instead of the object, and a Range
// reads no other block. Every block is checked against the CRC-32 table read with the entry's header
// before any of its bytes are handed on.
//
// The value may change under a stream: another instance stores a newer version, a purge deletes
// it, Redis evicts it. Each read is one atomic MULTI of two GETRANGEs, the range and the value's
// guard bytes (its block table's CRC-32, body size and body offset), and the range is used only
// while the guard is the one the stream started with: a stream never hands on bytes of another
// version, it errors instead, saying the value is gone (serve.ts then reads the rest of the same
// version from the origin under If-Match, or answers from the origin when nothing was sent yet).
// A value stored again with the same body (a revalidation) keeps the guard:
// streams read on. A block that fails its check tells the tier, which drops the entry.
import type { StoredBody, StoredBodyStreamOptions } from '../ports.ts'
import type { ByteRange } from '../types.ts'
import { blockIntact } from './block-crcs.ts'
import type { BlockLayout } from './codec.ts'

/** Blocks read at a time (512 KiB of 256 KiB blocks), as the disk tier's streams do. */
const READ_BLOCKS = 2

/**
 * Reads `[start, end]` (inclusive) of the value's body region, as offsets in the value, while its
 * guard is unchanged: the bytes, or undefined when the value changed, is gone, or Redis did not
 * answer in time.
 */
export type GuardedRead = (start: number, end: number) => Promise<Buffer | undefined>

export class RedisBodyError extends Error {
  override readonly name = 'RedisBodyError'
}

/** The value changed, is gone, or Redis did not answer in time: not damage (ports.ts: `gone`). */
export class RedisValueGoneError extends RedisBodyError {
  readonly gone = true
}

export class RedisBody implements StoredBody {
  readonly length: number
  readonly #layout: BlockLayout
  readonly #read: GuardedRead
  readonly #onDamage: () => void

  constructor(layout: BlockLayout, read: GuardedRead, onDamage: () => void) {
    this.length = layout.size
    this.#layout = layout
    this.#read = read
    this.#onDamage = onDamage
  }

  stream(range?: ByteRange, _options?: StoredBodyStreamOptions): ReadableStream<Uint8Array> {
    const end = range?.end ?? this.length - 1
    let next = range?.start ?? 0
    /** A damaged block found after good ones in the same read: the next pull fails with it. */
    let failure: Error | undefined
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          if (failure !== undefined) throw failure
          if (next > end) {
            controller.close()
            return
          }
          const read = await this.#blocks(next, end)
          failure = read.failure
          const to = Math.min(end + 1 - read.start, read.bytes.length)
          // Nothing good to hand on: fail now; else the good blocks go first, the failure next.
          if (to <= next - read.start) throw failure ?? new RedisBodyError('redis cache entry: nothing to read')
          controller.enqueue(read.bytes.subarray(next - read.start, to))
          next = read.start + to
        },
      },
      // No read-ahead: the next blocks are read when the consumer asks for them.
      { highWaterMark: 0 }
    )
  }

  async bytes(): Promise<Buffer> {
    const body = Buffer.allocUnsafeSlow(this.length)
    for (let next = 0; next < this.length; ) {
      const read = await this.#blocks(next, this.length - 1)
      if (read.failure !== undefined) throw read.failure
      body.set(read.bytes, read.start)
      next = read.start + read.bytes.length
    }
    return body
  }

  /**
   * The blocks from the one holding `from` on, at most READ_BLOCKS, none past `end`, and where they
   * start in the body: those that pass their checks, in order, and the failure that stopped them.
   */
  async #blocks(from: number, end: number): Promise<{ bytes: Buffer; start: number; failure: Error | undefined }> {
    const { blockSize, bodyAt, crcs } = this.#layout
    const first = Math.floor(from / blockSize)
    const last = Math.min(Math.floor(end / blockSize), first + READ_BLOCKS - 1)
    const start = first * blockSize
    const stop = Math.min((last + 1) * blockSize, this.length)
    const bytes = await this.#read(bodyAt + start, bodyAt + stop - 1)
    if (bytes === undefined) throw new RedisValueGoneError('redis cache entry: changed, gone or not read in time')
    for (let at = 0, index = first; at < stop - start; at += blockSize, index++) {
      const wanted = Math.min(blockSize, stop - start - at)
      if (bytes.length < at + wanted) return { bytes: bytes.subarray(0, at), start, failure: this.#damaged('the value is shorter than its header says') }
      if (!blockIntact(crcs, index, bytes.subarray(at, at + wanted))) return { bytes: bytes.subarray(0, at), start, failure: this.#damaged(`block ${index} fails its checksum`) }
    }
    return { bytes, start, failure: undefined }
  }

  #damaged(reason: string): Error {
    this.#onDamage()
    return new RedisBodyError(`redis cache entry damaged: ${reason}`)
  }
}
