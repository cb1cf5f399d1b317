// The disk tier's scrub: a random sample of its entries is read whole and checked (the header's
// CRC and key, the file's length, every block's CRC-32) at a bounded read rate, so damage the disk
// does to entries nobody reads (bit rot, a write the fsync did not cover, a file changed by hand)
// is found and the entry deleted before a client meets it: a hit that meets a damaged block of a
// large entry must cut its answer mid-body. Modelled on Jay's integrity scrub (sample rate,
// interval, bytes per second, entries per pass), but for a cache: a damaged entry is deleted, not
// quarantined; S3 still has the object.
// A pass reads each file through a descriptor of its own, so it never reads one file's header and
// another's body (a rewrite renames a new file over the name), and leaves the hits' shared
// descriptors alone.
import { open, type FileHandle } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'
import type { ScrubLimits } from '../ports.ts'
import { blockIntact } from './block-crcs.ts'
import { HEADER_PROBE, headFrom, type EntryHead } from './disk-format.ts'
import { transientFsError } from './disk-handles.ts'

/**
 * What reading one entry file found: `gone` when it does not exist, `unread` when the process
 * could not read it (out of descriptors or memory: the file is not to blame).
 */
export type FileCheck = { result: 'intact'; bytes: number } | { result: 'damaged'; bytes: number; reason: string } | { result: 'gone' } | { result: 'unread' }

/** Spaces reads so that they average at most `bytesPerSec` since the pacer was made (0: no limit). */
export class Pacer {
  readonly #bytesPerSec: number
  readonly #signal: AbortSignal | undefined
  readonly #started = performance.now()
  #bytes = 0

  constructor(bytesPerSec: number, signal?: AbortSignal) {
    this.#bytesPerSec = bytesPerSec
    this.#signal = signal
  }

  /** Whether the pass was stopped. */
  get stopped(): boolean {
    return this.#signal?.aborted === true
  }

  /** Counts `bytes` read; resolves when the next read may start. Rejects when the signal aborts. */
  async read(bytes: number): Promise<void> {
    this.#bytes += bytes
    this.#signal?.throwIfAborted()
    if (this.#bytesPerSec <= 0) return
    const wait = this.#started + (this.#bytes / this.#bytesPerSec) * 1000 - performance.now()
    // A timer that does not keep the process alive: a scrub never delays an exit.
    if (wait >= 1) await delay(wait, undefined, { signal: this.#signal, ref: false })
  }
}

/**
 * Reads the entry file `file` whole and checks it is `key`'s intact entry. Rejects only when the
 * pacer's signal stops the pass.
 */
export async function checkEntryFile(file: string, key: string, pacer: Pacer): Promise<FileCheck> {
  try {
    const handle = await open(file, 'r')
    try {
      return await checkOpen(handle, key, pacer)
    } finally {
      await handle.close().catch(() => {})
    }
  } catch (err) {
    if (pacer.stopped) throw err
    return failedRead(err)
  }
}

function failedRead(err: unknown): FileCheck {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return { result: 'gone' }
  if (transientFsError(err)) return { result: 'unread' }
  // A file the disk cannot read back is as lost as a damaged one.
  return { result: 'damaged', bytes: 0, reason: `unreadable (${code ?? String(err)})` }
}

async function checkOpen(handle: FileHandle, key: string, pacer: Pacer): Promise<FileCheck> {
  const { size: fileSize } = await handle.stat()
  const head = await readEntryHead(handle, fileSize)
  let bytes = Math.min(fileSize, head === undefined ? HEADER_PROBE : head.bodyOffset)
  await pacer.read(bytes)
  const damaged = (reason: string): FileCheck => ({ result: 'damaged', bytes, reason })
  if (head === undefined) return damaged('damaged header')
  if (head.key !== key) return damaged('the header names another key')
  if (fileSize !== head.bodyOffset + head.size) return damaged(`${fileSize} bytes, the header says ${head.bodyOffset + head.size}`)
  const block = Buffer.allocUnsafe(Math.min(head.blockSize, head.size))
  for (let index = 0, at = 0; at < head.size; index++, at += head.blockSize) {
    const length = Math.min(head.blockSize, head.size - at)
    const { bytesRead } = await handle.read(block, 0, length, head.bodyOffset + at)
    bytes += bytesRead
    if (bytesRead !== length) return damaged(`truncated in block ${index}`)
    if (!blockIntact(head.crcs, index, block.subarray(0, length))) return damaged(`block ${index} fails its checksum`)
    await pacer.read(bytesRead)
  }
  return { result: 'intact', bytes }
}

/** The checked header of the open entry file `handle` (`fileSize` bytes), or undefined for anything else. */
export function readEntryHead(handle: FileHandle, fileSize: number): Promise<EntryHead | undefined> {
  return headFrom(fileSize, (length) => readAt(handle, 0, length))
}

/** Up to `length` bytes of `handle` from `position`, in memory of their own. */
async function readAt(handle: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafeSlow(length)
  const { bytesRead } = await handle.read(buffer, 0, length, position)
  return bytesRead === length ? buffer : buffer.subarray(0, bytesRead)
}

/** `count` items picked uniformly at random from `items` (reservoir sampling: one pass, `count` held). */
export function sampleOf<T>(items: Iterable<T>, count: number): T[] {
  const picked: T[] = []
  if (count <= 0) return picked
  let seen = 0
  for (const item of items) {
    seen++
    if (picked.length < count) picked.push(item)
    else {
      const slot = Math.floor(Math.random() * seen)
      if (slot < count) picked[slot] = item
    }
  }
  return picked
}

/**
 * Runs `pass` every `everyMs`, one at a time, until stopped. The first pass comes after a random
 * part of the interval: instances and workers started together do not read their disks at once,
 * and a process restarted more often than the interval still scrubs.
 */
export class ScrubSchedule {
  readonly settings: string
  readonly #controller = new AbortController()
  #timer: NodeJS.Timeout | undefined

  constructor(settings: string, everyMs: number, pass: (signal: AbortSignal) => Promise<void>) {
    this.settings = settings
    const next = (delayMs = everyMs): void => {
      this.#timer = setTimeout(() => {
        void pass(this.#controller.signal)
          .catch(() => {})
          .finally(() => {
            if (!this.#controller.signal.aborted) next()
          })
      }, delayMs)
      // A schedule never keeps the process alive.
      this.#timer.unref()
    }
    next(Math.random() * everyMs)
  }

  /** Stops the timer and the pass that runs, if any. */
  stop(): void {
    clearTimeout(this.#timer)
    this.#controller.abort()
  }
}
