// A disk fill's body while it is being written (EntryWriter.growing, ports.ts). The fill reads the
// origin at the pace the disk takes it, whoever reads; every answer for the object (the request
// that started the fill and those that joined it) streams from the file as it grows, at its own
// client's pace, and waits at its end for more. So a slow client holds up nobody, the others get
// the bytes as soon as the disk has them, and a stream holds one read buffer.
//
// The bytes are read back from the page cache the writer just filled, unchecked: the block table
// is complete only at the end, and bytes streamed from the origin are not checked either. A stream
// whose bytes the writing stopped short of (the origin body failed, the disk failed, the writer
// gave up) goes on from `rest`, a ranged GET of the same version (If-Match); when that fails too,
// the stream errors and its client sees a truncated answer, never a clean end.
import type { FileHandle } from 'node:fs/promises'
import type { BodyRest, GrowingBody, StoredBodyStreamOptions } from '../ports.ts'
import { collect, restChunk, restReader } from '../http/growing-bytes.ts'
import type { ByteRange } from '../types.ts'
import { giveBack, takeBuffer } from './disk-body.ts'

/** What a growing body reads: the file its writer is writing (disk-writer.ts EntryFileWriter). */
export interface GrowingFile {
  /** Body bytes on the file so far, from the body's start. */
  readonly onFile: number
  /** The writer failed or gave up: what is not on the file now never will be. */
  readonly failed: boolean
  /** Settles when more is on the file, or the writer fails. */
  progress(): Promise<void>
  /** A descriptor of its own, still readable after the file is renamed or removed. */
  openForReading(): Promise<FileHandle>
}

/** The most a stream reads at a time (what it holds): a pooled read buffer of disk-body.ts. */
const READ_BYTES = 512 * 1024
/**
 * How long a stream near the end of what is written waits for a whole read's worth (READ_BYTES)
 * before it reads what there is: a stream woken at every write (a 64 KiB origin piece, say) would
 * read and send each piece on its own, a read and a socket write per piece per client. The first
 * read does not wait (the first byte goes at once).
 */
const GATHER_MS = 20

export class GrowingFileBody implements GrowingBody {
  readonly length: number
  readonly #file: GrowingFile
  readonly #bodyOffset: number
  readonly #rest: BodyRest
  /** The descriptor every stream reads with: opened at once, before the writer renames the file. */
  readonly #handle: Promise<FileHandle | undefined>
  /** Set when #handle settled: the descriptor, or null when it could not be opened. */
  #opened: FileHandle | null | undefined
  /** The writer and the streams reading: the descriptor is closed when none is left. */
  #users = 1

  constructor(file: GrowingFile, bodyOffset: number, length: number, rest: BodyRest) {
    this.#file = file
    this.#bodyOffset = bodyOffset
    this.length = length
    this.#rest = rest
    this.#handle = file.openForReading().then(
      (handle) => (this.#opened = handle),
      () => {
        this.#opened = null
        return undefined
      }
    )
  }

  /** The read descriptor; undefined when it could not be opened, or the writer failed before it was (an open on a hung disk may never return). */
  async #descriptor(): Promise<FileHandle | undefined> {
    while (this.#opened === undefined && !this.#file.failed) await Promise.race([this.#handle, this.#file.progress()])
    return this.#opened ?? undefined
  }

  release(): void {
    this.#unuse()
  }

  #unuse(): void {
    if (--this.#users > 0) return
    void this.#handle.then((handle) => handle?.close()).catch(() => {})
  }

  stream(range?: ByteRange, options: StoredBodyStreamOptions = {}): ReadableStream<Uint8Array> {
    const end = (range?.end ?? this.length - 1) + 1
    let next = range?.start ?? 0
    // A stream that starts once the writing is over and no stream reads any more (the descriptor is
    // closed) gets every byte from `rest`.
    let using = this.#users > 0
    if (using) this.#users++
    const stopUsing = () => {
      if (!using) return
      using = false
      this.#unuse()
    }
    const left = new AbortController()
    let rest: ReadableStreamDefaultReader<Uint8Array> | undefined
    /** The one buffer of a `reuseChunks` stream (pooled), and whether a read writes into it now. */
    let reused: Buffer | undefined
    let reading = false
    let over = false
    /** Whether a read was sent: the next ones may wait to gather more. */
    let started = false
    // Given back once no read writes into it and the consumer asked for more, left or failed (it
    // is done with the last chunk).
    const giveBackBuffer = () => {
      if (reused === undefined || reading) return
      giveBack(reused)
      reused = undefined
    }
    const finish = () => {
      over = true
      stopUsing()
      giveBackBuffer()
    }
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          try {
            if (next >= end) {
              finish()
              controller.close()
              return
            }
            if (rest === undefined) {
              const handle = using ? await this.#descriptor() : undefined
              if (handle !== undefined) {
                while (this.#file.onFile <= next && !this.#file.failed) await this.#file.progress()
                // After the first read, less than a whole read on the file waits to gather more.
                if (started) await this.#gathered(Math.min(end, next + READ_BYTES))
              }
              if (left.signal.aborted) return
              if (handle !== undefined && this.#file.onFile > next) {
                const size = Math.min(this.#file.onFile, end, next + READ_BYTES) - next
                // Its own memory, not a slice of Node's shared pool; one buffer for a reusing consumer.
                reused ??= options.reuseChunks === true ? takeBuffer(Math.min(READ_BYTES, end - next)) : undefined
                const bytes = reused?.subarray(0, size) ?? Buffer.allocUnsafeSlow(size)
                reading = true
                let bytesRead: number
                try {
                  bytesRead = (await handle.read(bytes, 0, size, this.#bodyOffset + next)).bytesRead
                } finally {
                  reading = false
                  if (over) giveBackBuffer()
                }
                if (left.signal.aborted) return
                if (bytesRead === 0) throw new Error('the growing file is shorter than what was written')
                started = true
                next += bytesRead
                controller.enqueue(bytes.subarray(0, bytesRead))
                return
              }
              // The writing stopped short of these bytes (or the file cannot be read): from the origin.
              stopUsing()
              giveBackBuffer()
              rest = await restReader(this.#rest, { start: next, end: end - 1 }, left.signal)
              if (rest === undefined) return
            }
            const chunk = await restChunk(rest)
            next += chunk.length
            controller.enqueue(chunk)
          } catch (err) {
            finish()
            throw err
          }
        },
        cancel: async (reason) => {
          left.abort()
          finish()
          await rest?.cancel(reason).catch(() => {})
        },
      },
      // No read-ahead: the next bytes are read when the consumer asks for them.
      { highWaterMark: 0 }
    )
  }

  bytes(): Promise<Buffer> {
    return collect(this.stream())
  }

  /** Resolves once the file holds `upTo` body bytes, the writing failed, or GATHER_MS passed. */
  async #gathered(upTo: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    let waited = false
    const gathering = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        waited = true
        resolve()
      }, GATHER_MS)
    })
    try {
      while (this.#file.onFile < upTo && !this.#file.failed && !waited) await Promise.race([this.#file.progress(), gathering])
    } finally {
      clearTimeout(timer)
    }
  }
}
