// An S3 response body (origin-body.ts) as the pull-based web stream the pipeline reads (high-water
// mark 0), which can also be piped straight from the connection into the client's response when it
// goes there untouched (http/direct-body.ts: no reader promise per chunk). Either way bytes are
// taken from the socket only as fast as the client takes them, so a slow client holds back the
// backend instead of filling memory.
// - Read as a web stream, a chunk is handed over only when the reader asks for one (origin-body.ts
//   holds a little read-ahead). Piped, the connection pauses once the response holds
//   PIPE_HIGH_WATER unsent bytes and resumes when it drained (more than Node's 16-64 KiB default:
//   pausing and resuming at every chunk cost more than the copy it saved).
// - A body that arrived whole before it is piped (a small object) is written with the head, in one
//   go (`end(chunk)`: one socket write for head and body).
// - The stall timer runs only while the body is awaited from the backend, never while the client
//   holds back-pressure. When it fires (`s3.timeout`) the body is destroyed and fails with
//   ORIGIN_TIMEOUT (reason body_stalled).
// - A stall or backend failure goes to `abortResponse` (the server cuts the client connection: a
//   truncated response, never a clean end); without one, or when it declines, the web stream
//   errors (piped: the response is destroyed).
// - Cancelling (client gone, body unwanted) destroys the body, which closes its connection unless
//   every byte had arrived.
// - The web stream is built only when something asks for it: a piped body never builds one (see
//   http/direct-body.ts). One object per body; the closures a path needs are made on that path.
// - A tap (the cache filling) sees each chunk as it goes to the reader, whichever way it is read,
//   then the end, or a failure when the body fails or its reader leaves first. A tap that holds
//   too much (a disk slower than the client) holds the backend back like a slow client does.
import type { ServerResponse } from 'node:http'
import { ProxyError } from '../errors.ts'
import type { BodyTap, ObjectBody, ReadOptions } from '../ports.ts'
import type { ByteRange, ObjectMeta } from '../types.ts'
import type { BodyConsumer, OriginBody } from './origin-body.ts'

const PIPE_HIGH_WATER = 256 * 1024

/** An S3 response body as the pipeline takes it (ObjectBody): piped, or read as a web stream. */
export class WatchedBody implements ObjectBody {
  readonly meta: ObjectMeta
  readonly range: ByteRange | undefined
  readonly #body: OriginBody
  readonly #idleMs: number
  readonly #abortResponse: ReadOptions['abortResponse']
  #sent = 0
  /** Ended, failed, or cancelled by the reader: nothing more happens. */
  #over = false
  /** Who takes the bytes: nobody yet, the web stream's reader, a sink (drainInto), or the response it is piped into. */
  #reader: 'none' | 'web' | 'sink' | ServerResponse = 'none'
  /** A sink's read (drainInto): settled at the end, when the sink stops, or when the body fails. */
  #drained: PromiseWithResolvers<boolean> | undefined
  #stream: ReadableStream<Uint8Array> | undefined
  #controller: ReadableStreamDefaultController<Uint8Array> | undefined
  /** Settles the web read waiting on the backend; undefined while nobody waits. */
  #wake: (() => void) | undefined
  /** The body is awaited from the backend: a stall counts. */
  #awaiting = false
  /** Armed once, refreshed at every wait; fires harmlessly when nothing is awaited. */
  #timer: NodeJS.Timeout | undefined
  /** Sees the bytes go by; hears the end or a failure once, then is dropped. */
  #tap: BodyTap | undefined
  /** Web reads: the tap's wait after the chunk just delivered, for the next read to wait on. */
  #tapped: Promise<void> | undefined

  constructor(body: OriginBody, meta: ObjectMeta, range: ByteRange | undefined, idleMs: number, abortResponse: ReadOptions['abortResponse']) {
    this.#body = body
    this.meta = meta
    this.range = range
    this.#idleMs = idleMs
    this.#abortResponse = abortResponse
  }

  bytesSent(): number {
    return this.#sent
  }

  tap(tap: BodyTap): void {
    if (this.#reader !== 'none' || this.#over || this.#tap !== undefined) throw new Error('a body is tapped once, before it is read')
    this.#tap = tap
  }

  /** The body as a pull-based web stream (high-water mark 0), built on first use. */
  get stream(): ReadableStream<Uint8Array> {
    return (this.#stream ??= this.#webStream())
  }

  /**
   * The whole body, copied, when every byte has arrived already (a small object comes with its
   * head); undefined otherwise, with nothing taken. After it `pipe` declines and `stream` errors.
   */
  whole(): Buffer | undefined {
    const body = this.#body
    if (this.#reader !== 'none' || this.#over || !body.complete) return undefined
    // Memory of its own (not a slice of Node's shared pool): the bytes are kept by the cache. Each
    // chunk is copied during the call it is lent for.
    const bytes = Buffer.allocUnsafeSlow(body.waitingBytes)
    let at = 0
    body.drain((chunk) => {
      bytes.set(chunk, at)
      at += chunk.byteLength
    })
    this.#sent = bytes.byteLength
    this.#finish()
    // All here already: the tap's wait, if any, holds nothing back.
    void this.#tap?.chunk(bytes)
    this.#untap()?.end()
    return bytes
  }

  /** Writes the body into `response` (see DirectPipe); undefined when it was read or cancelled. */
  pipe(response: ServerResponse): (() => void) | undefined {
    if (this.#reader !== 'none' || this.#over) return undefined
    this.#reader = response
    const body = this.#body
    const stop = () => this.#stop()
    if (body.complete) {
      // All of it is here already (a small object): written with the head, in one go. A lent
      // chunk's buffer is held until the response is done with it.
      let empty = true
      body.drain((chunk, from, last) => {
        empty = false
        this.#sent += chunk.byteLength
        void this.#tap?.chunk(chunk)
        from?.hold()
        if (last) response.end(chunk, from?.release)
        else response.write(chunk, from?.release)
      })
      this.#finish()
      this.#untap()?.end()
      if (empty) response.end()
      return stop
    }
    // What holds the backend back: the client (its unsent bytes) and the tap (its unwritten ones).
    // Neither is a stall.
    let holds = 0
    const hold = () => {
      if (holds++ > 0) return
      this.#awaiting = false
      body.pause()
    }
    const release = () => {
      if (--holds > 0 || this.#over) return
      this.#awaitBackend()
      body.resume()
    }
    response.once('close', stop)
    this.#awaitBackend()
    body.consume(
      {
        data: (chunk, from) => {
          this.#sent += chunk.byteLength
          const tapped = this.#tap?.chunk(chunk)
          // A lent chunk is held until the socket took it: its buffer is then read into again.
          from?.hold()
          if (!response.write(chunk, from?.release) && response.writableLength >= PIPE_HIGH_WATER) {
            hold()
            response.once('drain', release)
          }
          if (tapped !== undefined) {
            hold()
            void tapped.then(release)
          }
          if (holds === 0) this.#awaitBackend()
        },
        end: () => {
          if (this.#over) return
          this.#finish()
          this.#untap()?.end()
          response.end()
        },
        error: (err) => this.#fail(err),
      },
      true
    )
    return stop
  }

  drainInto(sink: (chunk: Uint8Array) => boolean | Promise<boolean>): Promise<boolean> {
    if (this.#reader !== 'none' || this.#over) return Promise.reject(new ProxyError('INTERNAL_ERROR', { reason: 'origin body already taken' }))
    this.#reader = 'sink'
    const drained = Promise.withResolvers<boolean>()
    this.#drained = drained
    let holds = 0
    const release = (more: boolean) => {
      if (!more) return this.#sinkStopped()
      if (--holds > 0 || this.#over) return
      this.#awaitBackend()
      this.#body.resume()
    }
    this.#awaitBackend()
    this.#body.consume(
      {
        data: (chunk) => {
          if (this.#over) return
          this.#sent += chunk.byteLength
          void this.#tap?.chunk(chunk)
          let taken: boolean | Promise<boolean>
          try {
            taken = sink(chunk)
          } catch (err) {
            return this.#fail(err)
          }
          if (taken === false) return this.#sinkStopped()
          if (taken === true) {
            if (holds === 0) this.#awaitBackend()
          } else {
            // The sink's wait holds the backend back; it is not a stall.
            if (holds++ === 0) {
              this.#awaiting = false
              this.#body.pause()
            }
            taken.then(release, (err: unknown) => this.#fail(err))
          }
        },
        end: () => {
          if (this.#over) return
          this.#finish()
          this.#untap()?.end()
          drained.resolve(true)
        },
        error: (err) => this.#fail(err),
      },
      true
    )
    return drained.promise
  }

  /** The sink took no more: the body is cancelled. */
  #sinkStopped(): void {
    if (this.#over) return
    this.#stop()
  }

  #webStream(): ReadableStream<Uint8Array> {
    const webConsumer: BodyConsumer = {
      readable: () => {
        if (this.#wake === undefined || this.#over || !this.#deliver()) return
        const tapped = this.#takeTapped()
        if (tapped === undefined) return this.#settle()
        // The next read waits for the tap (not a stall); chunks arriving meanwhile wait here.
        this.#awaiting = false
        const wake = this.#wake
        this.#wake = undefined
        void tapped.then(wake)
      },
      end: () => {
        if (this.#over) return
        this.#finish()
        this.#untap()?.end()
        this.#controller?.close()
        this.#settle()
      },
      error: (err) => this.#fail(err),
    }
    return new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c
        },
        pull: (controller): Promise<void> | undefined => {
          if (this.#reader === 'none' && !this.#over) {
            this.#reader = 'web'
            this.#body.consume(webConsumer, false)
          } else if (this.#reader !== 'web') {
            // Piped, taken whole or cancelled before the stream was built: it has nothing to give,
            // and an end would pass for an empty body.
            controller.error(new ProxyError('INTERNAL_ERROR', { reason: 'origin body already taken' }))
            return undefined
          }
          // `deliver` may report the end (the stream is then closed) instead of a chunk. After a
          // chunk, the next pull waits for the tap when it holds too much.
          if (this.#over || this.#deliver() || this.#over) return this.#takeTapped()
          // Nothing waiting: wait for the backend.
          this.#awaitBackend()
          return new Promise<void>((resolve) => (this.#wake = resolve))
        },
        cancel: () => this.#stop(),
      },
      { highWaterMark: 0 }
    )
  }

  #awaitBackend(): void {
    this.#awaiting = true
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        if (!this.#awaiting || this.#over) return
        const stalled = new ProxyError('ORIGIN_TIMEOUT', { reason: 'body_stalled' })
        this.#body.destroy(stalled)
        this.#fail(stalled)
      }, this.#idleMs)
      this.#timer.unref()
    } else {
      this.#timer.refresh()
    }
  }

  /** Moves the next waiting chunk to the web reader; false when there is none (or the end came). */
  #deliver(): boolean {
    const chunk = this.#body.read()
    if (chunk === null) return false
    this.#sent += chunk.byteLength
    this.#tapped = this.#tap?.chunk(chunk)
    this.#controller?.enqueue(chunk)
    return true
  }

  /** Settles the waiting read (the stream pulls again only after a chunk, a close or an error). */
  #settle(): void {
    this.#awaiting = false
    const resolve = this.#wake
    this.#wake = undefined
    resolve?.()
  }

  #finish(): void {
    this.#over = true
    this.#awaiting = false
    clearTimeout(this.#timer)
  }

  /** The tap, taken off: it hears the end or a failure once. */
  #untap(): BodyTap | undefined {
    const tap = this.#tap
    this.#tap = undefined
    return tap
  }

  /** The tap's wait after the chunk just delivered (web reads), taken. */
  #takeTapped(): Promise<void> | undefined {
    const tapped = this.#tapped
    this.#tapped = undefined
    return tapped
  }

  #fail(err: unknown): void {
    if (this.#over) return
    this.#finish()
    const error = err instanceof ProxyError ? err : new ProxyError('ORIGIN_ERROR', { reason: 'body_failed', cause: err })
    this.#untap()?.fail(error)
    this.#drained?.reject(error)
    // A response already streaming to the client is cut, which cancels this stream: nothing more
    // to read, and the waiting read stays pending. Any other reader (the cache collecting a body
    // before answering) gets the error.
    if (this.#abortResponse?.(error) === true) return
    if (typeof this.#reader === 'object') {
      this.#reader.destroy(error)
      return
    }
    this.#controller?.error(error)
    this.#settle()
  }

  /** The reader went away (client gone, body unwanted): a failure after that is nobody's news. */
  #stop(): void {
    this.#finish()
    this.#untap()?.fail(new Error('the reader went away before the body was complete'))
    this.#body.destroy()
    // A sink's read is over too: it did not take every byte.
    this.#drained?.resolve(false)
  }
}
