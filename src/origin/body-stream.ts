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
import type { ServerResponse } from 'node:http'
import { ProxyError } from '../errors.ts'
import { offerDirectPipe, type DirectPipe } from '../http/direct-body.ts'
import type { ObjectBody, ReadOptions } from '../ports.ts'
import type { BodyConsumer, OriginBody } from './origin-body.ts'

const PIPE_HIGH_WATER = 256 * 1024

export function watchedStream(body: OriginBody, idleMs: number, abortResponse: ReadOptions['abortResponse']): Pick<ObjectBody, 'stream' | 'bytesSent'> {
  let sent = 0
  /** Ended, failed, or cancelled by the reader: nothing more happens. */
  let over = false
  /** Who takes the bytes: nobody yet, the web stream's reader, or the response it is piped into. */
  let reader: 'none' | 'web' | ServerResponse = 'none'
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined
  /** Settles the web read waiting on the backend; undefined while nobody waits. */
  let wake: (() => void) | undefined
  /** The body is awaited from the backend: a stall counts. */
  let awaiting = false
  /** Armed once, refreshed at every wait; fires harmlessly when nothing is awaited. */
  let timer: NodeJS.Timeout | undefined

  const awaitBackend = () => {
    awaiting = true
    if (timer === undefined) {
      timer = setTimeout(() => {
        if (!awaiting || over) return
        const stalled = new ProxyError('ORIGIN_TIMEOUT', { reason: 'body_stalled' })
        body.destroy(stalled)
        fail(stalled)
      }, idleMs)
      timer.unref()
    } else {
      timer.refresh()
    }
  }
  /** Moves the next waiting chunk to the web reader; false when there is none (or the end came). */
  const deliver = (): boolean => {
    const chunk = body.read()
    if (chunk === null) return false
    sent += chunk.byteLength
    controller?.enqueue(chunk)
    return true
  }
  /** Settles the waiting read (the stream pulls again only after a chunk, a close or an error). */
  const settle = () => {
    awaiting = false
    const resolve = wake
    wake = undefined
    resolve?.()
  }
  const finish = () => {
    over = true
    awaiting = false
    clearTimeout(timer)
  }
  function fail(err: unknown): void {
    if (over) return
    finish()
    const error = err instanceof ProxyError ? err : new ProxyError('ORIGIN_ERROR', { reason: 'body_failed', cause: err })
    // A response already streaming to the client is cut, which cancels this stream: nothing more
    // to read, and the waiting read stays pending. Any other reader (the cache collecting a body
    // before answering) gets the error.
    if (abortResponse?.(error) === true) return
    if (typeof reader === 'object') {
      reader.destroy(error)
      return
    }
    controller?.error(error)
    settle()
  }
  /** The reader went away (client gone, body unwanted): a failure after that is nobody's news. */
  const stop = () => {
    finish()
    body.destroy()
  }

  const webConsumer: BodyConsumer = {
    readable() {
      if (wake !== undefined && !over && deliver()) settle()
    },
    end() {
      if (over) return
      finish()
      controller?.close()
      settle()
    },
    error: fail,
  }

  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c
      },
      pull(): Promise<void> | undefined {
        if (reader === 'none') {
          reader = 'web'
          body.consume(webConsumer, false)
        }
        // `deliver` may report the end (the stream is then closed) instead of a chunk.
        if (over || reader !== 'web' || deliver() || over) return undefined
        // Nothing waiting: wait for the backend.
        awaitBackend()
        return new Promise<void>((resolve) => (wake = resolve))
      },
      cancel: stop,
    },
    { highWaterMark: 0 }
  )

  const pipe: DirectPipe = (response) => {
    if (reader !== 'none' || over) return undefined
    reader = response
    if (body.complete) {
      // All of it is here already (a small object): written with the head, in one go. A lent
      // chunk's buffer is held until the response is done with it.
      let empty = true
      body.drain((chunk, from, last) => {
        empty = false
        sent += chunk.byteLength
        from?.hold()
        if (last) response.end(chunk, from?.release)
        else response.write(chunk, from?.release)
      })
      finish()
      if (empty) response.end()
      return stop
    }
    const resume = () => {
      if (over) return
      awaitBackend()
      body.resume()
    }
    response.once('close', stop)
    awaitBackend()
    body.consume(
      {
        data(chunk, from) {
          sent += chunk.byteLength
          // A lent chunk is held until the socket took it: its buffer is then read into again.
          from?.hold()
          if (!response.write(chunk, from?.release) && response.writableLength >= PIPE_HIGH_WATER) {
            // The client holds back: not a stall.
            awaiting = false
            body.pause()
            response.once('drain', resume)
          } else {
            awaitBackend()
          }
        },
        end() {
          if (over) return
          finish()
          response.end()
        },
        error: fail,
      },
      true
    )
    return stop
  }
  offerDirectPipe(stream, pipe)
  return { stream, bytesSent: () => sent }
}
