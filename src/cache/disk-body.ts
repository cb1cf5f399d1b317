// A disk entry's body as a StoredBody (ports.ts): read from its file lazily, one checked block per
// pull, only the blocks a range overlaps. The file is opened at the first pull (a HEAD or a 304
// never opens it) and closed at the end, on cancel or on an error. Each stream has its own file
// descriptor, so an entry replaced, evicted or purged while it streams keeps streaming the bytes
// it started with (POSIX keeps an unlinked file readable while it is open).
//
// Every block is checked against the table read with the entry's header before any of its bytes
// are handed on. A block that fails (flipped bits, a truncated file, or a file replaced since the
// header was read) errors the stream and tells the tier, which drops the entry.
import { open, type FileHandle } from 'node:fs/promises'
import type { StoredBody } from '../ports.ts'
import type { ByteRange } from '../types.ts'
import { blockIntact } from './disk-format.ts'

export class DamagedEntryError extends Error {
  override readonly name = 'DamagedEntryError'
}

export interface DiskBodyOptions {
  file: string
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
  readonly #file: string
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

  stream(range?: ByteRange): ReadableStream<Uint8Array> {
    const end = range?.end ?? this.length - 1
    let next = range?.start ?? 0
    let handle: FileHandle | undefined
    const close = async () => {
      const open = handle
      handle = undefined
      await open?.close().catch(() => {})
    }
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          if (next > end) {
            controller.close()
            return
          }
          try {
            handle ??= await open(this.#file, 'r')
            const index = Math.floor(next / this.blockSize)
            const blockStart = index * this.blockSize
            const block = await this.#readBlock(handle, index)
            const from = next - blockStart
            const to = Math.min(end + 1 - blockStart, block.length)
            next = blockStart + to
            controller.enqueue(from === 0 && to === block.length ? block : block.subarray(from, to))
            if (next > end) {
              await close()
              controller.close()
            }
          } catch (err) {
            // Also after a cancel: the read in flight finishes, its enqueue throws, the file closes.
            await close()
            throw err
          }
        },
        cancel: close,
      },
      // No read-ahead: the next block is read when the consumer asks for it.
      { highWaterMark: 0 }
    )
  }

  async bytes(): Promise<Buffer> {
    const body = Buffer.allocUnsafeSlow(this.length)
    if (this.length === 0) return body
    const handle = await open(this.#file, 'r')
    try {
      const { bytesRead } = await handle.read(body, 0, this.length, this.#bodyOffset)
      if (bytesRead !== this.length) throw this.#damaged('the file is shorter than its header says')
      for (let i = 0, at = 0; at < this.length; i++, at += this.blockSize) {
        if (!blockIntact(this.crcs, i, body.subarray(at, at + this.blockSize))) throw this.#damaged(`block ${i} fails its checksum`)
      }
      return body
    } finally {
      await handle.close().catch(() => {})
    }
  }

  async #readBlock(handle: FileHandle, index: number): Promise<Buffer> {
    const position = index * this.blockSize
    const size = Math.min(this.blockSize, this.length - position)
    // Its own memory, not a slice of Node's shared pool: it is written to a socket and dropped.
    const block = Buffer.allocUnsafeSlow(size)
    const { bytesRead } = await handle.read(block, 0, size, this.#bodyOffset + position)
    if (bytesRead !== size) throw this.#damaged('the file is shorter than its header says')
    if (!blockIntact(this.crcs, index, block)) throw this.#damaged(`block ${index} fails its checksum`)
    return block
  }

  #damaged(why: string): DamagedEntryError {
    this.#onDamage()
    return new DamagedEntryError(`disk cache entry damaged: ${why}`)
  }
}
