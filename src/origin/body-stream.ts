// An S3 response body as the pull-based web stream the pipeline reads (high-water mark 0), which
// can also be piped straight from the Node body into the client's response when it goes there
// untouched (http/direct-body.ts: no reader promise per chunk). Either way bytes are taken from the
// socket only as fast as the client takes them, so a slow client holds back the backend instead of
// filling memory.
// - Read as a web stream, a chunk is taken only when the reader asks for one. Piped, the body
//   pauses once the response holds PIPE_HIGH_WATER unsent bytes and resumes when it drained (a
//   64 KiB chunk more than Node's 16-64 KiB default: pausing and resuming the socket at every
//   chunk cost more than the copy it saved).
// - The stall timer runs only while the body is awaited from the backend, never while the client
//   holds back-pressure. When it fires (`s3.timeout`) the body is destroyed with ORIGIN_TIMEOUT
//   (reason body_stalled).
// - A stall or backend failure goes to `abortResponse` (the server cuts the client connection: a
//   truncated response, never a clean end); without one, or when it declines, the web stream
//   errors (piped: the response is destroyed).
// - Cancelling (client gone, body unwanted) destroys the body and its socket.
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { ProxyError } from '../errors.ts'
import { offerDirectPipe, type DirectPipe } from '../http/direct-body.ts'
import type { ObjectBody, ReadOptions } from '../ports.ts'

const PIPE_HIGH_WATER = 256 * 1024

/** The body of an HTTP response: `complete` once all of it has been received. */
type Body = Readable & { readonly complete?: boolean }

export function watchedStream(body: Body, idleMs: number, abortResponse: ReadOptions['abortResponse']): Pick<ObjectBody, 'stream' | 'bytesSent'> {
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
        if (awaiting && !over) body.destroy(new ProxyError('ORIGIN_TIMEOUT', { reason: 'body_stalled' }))
      }, idleMs)
      timer.unref()
    } else {
      timer.refresh()
    }
  }
  /** Moves what the body has buffered to the web reader; false when there is nothing yet. */
  const deliver = (): boolean => {
    const chunk = body.read() as Buffer | null
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
  const fail = (err: unknown) => {
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
    if (!body.destroyed) body.destroy()
  }
  const onReadable = () => {
    // A 'readable' with nothing to read announces the end, which 'end' handles.
    if (wake !== undefined && !over && deliver()) settle()
  }
  body.once('end', () => {
    if (over) return
    finish()
    if (typeof reader === 'object') {
      reader.end()
      return
    }
    controller?.close()
    settle()
  })
  body.once('error', fail)
  // Node reports a connection cut mid-body as an error; a close without end or error is one too.
  // (The Error, with its stack, only then: every body closes after its end.)
  body.once('close', () => {
    if (!over) fail(new Error('backend body closed before its end'))
  })

  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c
      },
      pull(): Promise<void> | undefined {
        if (reader === 'none') {
          reader = 'web'
          body.on('readable', onReadable)
        }
        if (over || reader !== 'web' || deliver()) return undefined
        // Nothing buffered: wait for the backend.
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
    if (body.complete === true) {
      // All of it is here already (a small object): written with the head, in one go.
      let chunk = body.read() as Buffer | null
      while (chunk !== null) {
        sent += chunk.byteLength
        const next = body.read() as Buffer | null
        if (next === null) break
        response.write(chunk)
        chunk = next
      }
      finish()
      if (chunk === null) response.end()
      else response.end(chunk)
      return stop
    }
    const resume = () => {
      if (over) return
      awaitBackend()
      body.resume()
    }
    body.on('data', (chunk: Buffer) => {
      sent += chunk.byteLength
      if (!response.write(chunk) && response.writableLength >= PIPE_HIGH_WATER) {
        // The client holds back: not a stall.
        awaiting = false
        body.pause()
        response.once('drain', resume)
      } else {
        awaitBackend()
      }
    })
    response.once('close', stop)
    awaitBackend()
    return stop
  }
  offerDirectPipe(stream, pipe)
  return { stream, bytesSent: () => sent }
}
