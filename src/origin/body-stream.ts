// An S3 response body as the pull-based web stream the pipeline reads (high-water mark 0): a chunk
// is taken from the socket only when the reader asks for one, so a slow client holds back the
// backend instead of filling memory.
// - The stall timer runs only while a read waits on the backend, never while the client holds
//   back-pressure. When it fires (`s3.timeout`) the body is destroyed with ORIGIN_TIMEOUT
//   (reason body_stalled).
// - A stall or backend failure goes to `abortResponse` (the server cuts the client connection: a
//   truncated response, never a clean end); without one, or when it declines, the stream errors.
// - Cancelling (client gone, body unwanted) destroys the body and its socket.
import type { Readable } from 'node:stream'
import { ProxyError } from '../errors.ts'
import type { ObjectBody, ReadOptions } from '../ports.ts'

export function watchedStream(
  body: Readable,
  idleMs: number,
  abortResponse: ReadOptions['abortResponse']
): Pick<ObjectBody, 'stream' | 'bytesSent'> {
  let sent = 0
  /** Ended, failed, or cancelled by the reader: nothing more happens. */
  let over = false
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined
  /** Settles the read waiting on the backend; undefined while nobody waits. */
  let wake: (() => void) | undefined
  /** Armed once, refreshed at every wait; fires harmlessly when nobody waits. */
  let timer: NodeJS.Timeout | undefined

  /** Moves what the body has buffered to the reader; false when there is nothing yet. */
  const deliver = (): boolean => {
    const chunk = body.read() as Buffer | null
    if (chunk === null) return false
    sent += chunk.byteLength
    controller?.enqueue(chunk)
    return true
  }
  /** Settles the waiting read (the stream pulls again only after a chunk, a close or an error). */
  const settle = () => {
    const resolve = wake
    wake = undefined
    resolve?.()
  }
  const finish = () => {
    over = true
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
    controller?.error(error)
    settle()
  }
  body.on('readable', () => {
    // A 'readable' with nothing to read announces the end, which 'end' handles.
    if (wake !== undefined && !over && deliver()) settle()
  })
  body.once('end', () => {
    if (over) return
    finish()
    controller?.close()
    settle()
  })
  body.once('error', fail)
  // Node reports a connection cut mid-body as an error; a close without end or error is one too.
  body.once('close', () => fail(new Error('backend body closed before its end')))

  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c
      },
      pull(): Promise<void> | undefined {
        if (over || deliver()) return undefined
        // Nothing buffered: wait for the backend.
        if (timer === undefined) {
          timer = setTimeout(() => {
            if (wake !== undefined) body.destroy(new ProxyError('ORIGIN_TIMEOUT', { reason: 'body_stalled' }))
          }, idleMs)
          timer.unref()
        } else {
          timer.refresh()
        }
        return new Promise<void>((resolve) => (wake = resolve))
      },
      cancel() {
        // The reader went away (client gone, body unwanted): a failure after that is nobody's news.
        finish()
        body.destroy()
      },
    },
    { highWaterMark: 0 }
  )
  return { stream, bytesSent: () => sent }
}
