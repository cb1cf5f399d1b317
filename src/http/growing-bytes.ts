// A fill's body collected in memory as it arrives (a body the disk tier does not keep: 64 KiB or
// less, or no disk tier): cache/growing-body.ts's idea over one buffer of the object's size. The
// fill reads the origin at its own pace, whoever reads; every answer (the request that started it
// and those that join it) reads the bytes that arrived, as views of the buffer, at its own client's
// pace, and waits for more. When the body stops short (it broke, or ran past its size), an answer
// goes on from `rest`, a ranged GET of the same version.
import type { BodyRest, GrowingBody, StoredBodyStreamOptions } from '../ports.ts'
import type { ByteRange } from '../types.ts'

/** A body that grows (a fill's buffer, or its writer's file): its readers wait for the next change. */
export class Progress {
  #next = Promise.withResolvers<void>()
  /** Settles at the next `moved`. */
  wait(): Promise<void> {
    return this.#next.promise
  }
  /** More arrived, or the growing stopped: every reader waiting looks again. */
  moved(): void {
    const moved = this.#next
    this.#next = Promise.withResolvers<void>()
    moved.resolve()
  }
}

/**
 * The reader of `range` from `rest` (the bytes a growing body stopped short of); undefined when
 * `signal` aborted meanwhile (the stream was cancelled: that body is cancelled too).
 */
export async function restReader(rest: BodyRest, range: ByteRange, signal: AbortSignal): Promise<ReadableStreamDefaultReader<Uint8Array> | undefined> {
  const stream = await rest(range, signal)
  if (!signal.aborted) return stream.getReader()
  await stream.cancel().catch(() => {})
  return undefined
}

/** The next chunk of a rest reader: it must not end before the range does. */
export async function restChunk(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array> {
  const chunk = await reader.read()
  if (chunk.done) throw new Error('the rest of the body ended early')
  return chunk.value
}

/** Every byte of `stream`, in one buffer. */
export async function collect(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const chunk of stream) chunks.push(chunk)
  return Buffer.concat(chunks)
}

export class GrowingBytes implements GrowingBody {
  readonly length: number
  /** Its own memory (not a slice of Node's shared pool): the cache keeps it once it is whole. */
  readonly #bytes: Buffer
  readonly #rest: BodyRest
  #filled = 0
  #failed = false
  /** Moves when more arrived, and when the body failed. */
  readonly #progress = new Progress()

  constructor(length: number, rest: BodyRest) {
    this.length = length
    this.#bytes = Buffer.allocUnsafeSlow(length)
    this.#rest = rest
  }

  /** Copies the body's next bytes in (they are lent for the call); false, failed, once the body runs past its size. */
  append(chunk: Uint8Array): boolean {
    if (this.#failed) return false
    if (this.#filled + chunk.length > this.length) {
      this.fail()
      return false
    }
    this.#bytes.set(chunk, this.#filled)
    this.#filled += chunk.length
    this.#progress.moved()
    return true
  }

  /** Every byte, once all arrived (the buffer itself); undefined before, or after a failure. */
  get whole(): Buffer | undefined {
    return this.#filled === this.length && !this.#failed ? this.#bytes : undefined
  }

  /** The body stopped short: what has not arrived never will. */
  fail(): void {
    this.#failed = true
    this.#progress.moved()
  }

  release(): void {
    // Nothing to close: the buffer goes with the last view of it.
  }

  stream(range?: ByteRange, _options?: StoredBodyStreamOptions): ReadableStream<Uint8Array> {
    const end = (range?.end ?? this.length - 1) + 1
    let next = range?.start ?? 0
    const left = new AbortController()
    let rest: ReadableStreamDefaultReader<Uint8Array> | undefined
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          if (next >= end) return controller.close()
          if (rest === undefined) {
            while (this.#filled <= next && !this.#failed) await this.#progress.wait()
            if (left.signal.aborted) return
            if (this.#filled > next) {
              // A view: the bytes that arrived never change.
              const to = Math.min(this.#filled, end)
              controller.enqueue(this.#bytes.subarray(next, to))
              next = to
              return
            }
            rest = await restReader(this.#rest, { start: next, end: end - 1 }, left.signal)
            if (rest === undefined) return
          }
          const chunk = await restChunk(rest)
          next += chunk.length
          controller.enqueue(chunk)
        },
        cancel: async (reason) => {
          left.abort()
          await rest?.cancel(reason).catch(() => {})
        },
      },
      { highWaterMark: 0 }
    )
  }

  bytes(): Promise<Buffer> {
    return collect(this.stream())
  }
}
