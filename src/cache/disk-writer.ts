// Writes one disk entry file (disk-format.ts) whose body arrives in pieces: each piece is written
// at its place as it comes and the block checksums are computed on the way, so a body is never
// held whole in memory; at the end the header (with the real block table) goes in front and the
// file is synced. The header's length does not depend on the checksums' values, so the body's
// place is known before its first byte. The caller renames the file into place and indexes it.
import { open, rm, type FileHandle } from 'node:fs/promises'
import { crc32 } from 'node:zlib'
import { BLOCK_SIZE } from './disk-format.ts'

export class EntryFileWriter {
  readonly #temp: string
  readonly #bodyOffset: number
  readonly #size: number
  readonly #table: Buffer
  readonly #file: Promise<FileHandle>
  /** Every write in order: each starts when the one before is done; rejected after a failure. */
  #writes: Promise<void>
  #written = 0
  #crc = 0
  #closed = false

  /** Creates `temp` for a body of `size` bytes starting at `bodyOffset`. */
  constructor(temp: string, bodyOffset: number, size: number) {
    this.#temp = temp
    this.#bodyOffset = bodyOffset
    this.#size = size
    this.#table = Buffer.alloc(4 * Math.ceil(size / BLOCK_SIZE))
    this.#file = open(temp, 'w')
    this.#writes = this.#file.then(() => undefined)
    this.#writes.catch(() => {})
  }

  /**
   * Appends the body's next bytes (kept by reference until written: not to be reused meanwhile).
   * Resolves once they are written; rejects, and so does every later call, when a write fails or
   * the body grows past its size.
   */
  write(chunk: Uint8Array): Promise<void> {
    if (this.#written + chunk.length > this.#size) {
      this.#writes = Promise.reject(new Error('the body is longer than its size'))
    } else {
      const at = this.#bodyOffset + this.#written
      this.#checksum(chunk)
      this.#writes = this.#writes.then(async () => writeAll(await this.#file, [chunk], at))
    }
    this.#writes.catch(() => {})
    return this.#writes
  }

  /**
   * Writes the header `headOf(table)` makes in front of the whole body and syncs the file; resolves
   * with that header. Rejects when the body fell short of its size or any write failed (the temp
   * file is then removed).
   */
  async finish(headOf: (table: Buffer) => Buffer): Promise<Buffer> {
    try {
      await this.#writes
      if (this.#written !== this.#size) throw new Error('the body ended early')
      const head = headOf(this.#table)
      if (head.length !== this.#bodyOffset) throw new Error('the header changed length')
      const handle = await this.#file
      await writeAll(handle, [head], 0)
      await handle.sync()
      await this.#close()
      return head
    } catch (err) {
      await this.abort()
      throw err
    }
  }

  /** Gives up: closes and removes the temp file (also after a failure). */
  async abort(): Promise<void> {
    await this.#close().catch(() => {})
    await rm(this.#temp, { force: true }).catch(() => {})
  }

  async #close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    // After the writes in flight, failed or not.
    await this.#writes.catch(() => {})
    const handle = await this.#file.catch(() => undefined)
    await handle?.close()
  }

  /** Folds `chunk` into the running block checksums, closing each block's entry in the table. */
  #checksum(chunk: Uint8Array): void {
    for (let at = 0; at < chunk.length; ) {
      const part = chunk.subarray(at, at + BLOCK_SIZE - (this.#written % BLOCK_SIZE))
      this.#crc = crc32(part, this.#crc)
      at += part.length
      this.#written += part.length
      if (this.#written % BLOCK_SIZE === 0 || this.#written === this.#size) {
        this.#table.writeUInt32BE(this.#crc, 4 * Math.floor((this.#written - 1) / BLOCK_SIZE))
        this.#crc = 0
      }
    }
  }
}

export async function writeAll(handle: FileHandle, buffers: Uint8Array[], position: number): Promise<void> {
  const total = buffers.reduce((sum, b) => sum + b.length, 0)
  const { bytesWritten } = await handle.writev(buffers, position)
  if (bytesWritten !== total) throw new Error('short write')
}
