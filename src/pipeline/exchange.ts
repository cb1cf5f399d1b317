// One object request and its response, as the pipeline stages see them: the request as Node parsed
// it, the facts the stages hand each other (each field has one writer, named on it), and the
// writing of the answer. Object requests run on this alone, without a web Request, a Hono Context
// or a web Response: those cost ~1.5 µs a request on the cached read path (see docs/architecture.md).
import type { IncomingMessage } from 'node:http'
import { parse as parseCookies } from 'hono/utils/cookie'
import type { ProxyError } from '../errors.ts'
import type { StampedResponse } from '../http/stamped-response.ts'
import type { TraceSpan } from '../ports.ts'
import type { Answer, CacheUse, Principal, RouteMatch, StageMarks, TransferMeter } from '../types.ts'

/**
 * One step of the request pipeline (app.ts runs them in order). Returns nothing to let the request
 * go on, or throws a ProxyError. A promise only when the step really waits for something, so a
 * request that needs no I/O (a cached object, a cached token) runs without extra ticks.
 */
export type Stage = (x: Exchange) => void | Promise<void>

export class Exchange {
  readonly incoming: IncomingMessage
  readonly outgoing: StampedResponse
  readonly method: string
  /** The request target exactly as the client sent it (`/a/b%2Fc?x=1`): routing sees the original bytes. */
  readonly target: string

  /** observe: the client's X-Request-ID when it is a safe token, else a new UUID. */
  requestId = ''
  /** observe: the socket peer, or what trusted proxies forwarded (http/client-address.ts). */
  clientIp = ''
  /** observe: the request's server span, when tracing is on. */
  span: TraceSpan | undefined = undefined
  /** route: the bucket and the decoded key. */
  route: RouteMatch | undefined = undefined
  /** authenticate: the token's principal; null for a public bucket. */
  principal: Principal | null | undefined = undefined
  /** authorize: the reason of the OPA decision, when the bucket has a policy. */
  authzReason: string | undefined = undefined
  /** serve: how the cache took part. */
  cacheUse: CacheUse | undefined = undefined
  /** serve: the replica that answered from the origin (absent for cache hits). */
  replica: string | undefined = undefined
  /** represent: the image variant (preset or parameters) or encoding answered, for the logs and audit. */
  representation: string | undefined = undefined
  /** serve: counts the body bytes delivered, for bodies that are streamed or sliced. */
  transfer: TransferMeter | undefined = undefined
  /** app.ts: performance.now() after each stage, when the slow-request log is on. */
  marks: StageMarks | undefined = undefined
  /** app.ts (or serve, for a failure mid-body): the error the answer reports. */
  error: ProxyError | undefined = undefined
  /** respond: the status and the length of an in-memory body, for the logs and metrics. */
  status = 0
  bodyBytes = 0

  /** observe: called once when the response is over (server.ts calls it; see `ended`). */
  responseEnded: (() => void) | null = null
  /** server.ts: the response is over (its 'close', or its connection's). */
  ended = false

  #abort: AbortController | undefined = undefined
  /** Cancels the body being streamed, if any. */
  #stopBody: (() => void) | undefined = undefined
  #query: URLSearchParams | undefined = undefined

  constructor(incoming: IncomingMessage, outgoing: StampedResponse) {
    this.incoming = incoming
    this.outgoing = outgoing
    this.method = incoming.method ?? 'GET'
    this.target = incoming.url ?? '/'
  }

  /** The route stage's match; only stages that run after it ask. */
  get matched(): RouteMatch {
    const route = this.route
    if (route === undefined) throw new Error('the route stage has not run')
    return route
  }

  /**
   * A request header, read from the headers Node already parsed. A repeated header is joined with
   * commas, as HTTP defines, including the ones Node keeps only the first of: two Authorization
   * headers must not authenticate with the first (the joined value is not a valid credential).
   */
  header(lowerCaseName: string): string | undefined {
    const value = this.incoming.headers[lowerCaseName]
    if (typeof value !== 'string') return undefined
    return FIRST_ONLY.has(lowerCaseName) ? allValues(this.incoming.rawHeaders, lowerCaseName) : value
  }

  /** A query parameter, decoded; parsed on first use. */
  query(name: string): string | undefined {
    if (this.#query === undefined) {
      const start = this.target.indexOf('?')
      this.#query = new URLSearchParams(start === -1 ? '' : this.target.slice(start + 1))
    }
    return this.#query.get(name) ?? undefined
  }

  cookie(name: string): string | undefined {
    const header = this.header('cookie')
    return header === undefined ? undefined : parseCookies(header, name)[name]
  }

  /** Aborted when the client goes away before its response is complete (origin reads follow it). */
  get signal(): AbortSignal {
    if (this.#abort === undefined) {
      this.#abort = new AbortController()
      if (this.ended && !this.outgoing.writableFinished) this.#abort.abort()
    }
    return this.#abort.signal
  }

  /**
   * server.ts, when the response is over: an unfinished one stops what still works for it (the
   * origin read, the body being streamed). Its connection may be gone without the response ever
   * closing (a pipelined request that never started), so this does not wait for the response.
   */
  close(): void {
    this.ended = true
    if (this.outgoing.writableFinished) return
    this.#abort?.abort()
    this.#stopBody?.()
  }

  /**
   * Writes the answer: headers, then the bytes or the stream (with back-pressure). When Node refuses
   * the head (a header value it does not accept), it throws with nothing sent, the body cancelled and
   * the headers set for this answer removed, so an error can be answered instead.
   */
  respond(answer: Answer): void {
    const { outgoing } = this
    const { body } = answer
    this.status = answer.status
    if (outgoing.destroyed || this.ended) {
      // The client left before the answer was ready.
      cancel(body)
      return
    }
    try {
      outgoing.writeHead(answer.status, answer.headers)
    } catch (err) {
      cancel(body)
      for (const name of outgoing.getHeaderNames()) if (name !== 'connection') outgoing.removeHeader(name)
      throw err
    }
    if (body === null) {
      outgoing.end()
    } else if (typeof body === 'string') {
      this.bodyBytes = Buffer.byteLength(body)
      outgoing.end(body)
    } else if (body instanceof Uint8Array) {
      this.bodyBytes = body.length
      outgoing.end(body)
    } else if (body instanceof ReadableStream) {
      this.#stopBody = pipeTo(body, outgoing)
    } else {
      // An origin body nobody read yet goes from its socket to the client's without a web reader.
      this.#stopBody = body.pipe(outgoing) ?? pipeTo(body.stream, outgoing)
    }
  }
}

/** The request headers Node keeps only the first of, among those the proxy reads. */
const FIRST_ONLY = new Set(['authorization', 'content-length', 'if-modified-since', 'if-unmodified-since', 'referer', 'user-agent'])

function allValues(rawHeaders: readonly string[], lowerCaseName: string): string | undefined {
  let joined: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length !== lowerCaseName.length || name.toLowerCase() !== lowerCaseName) continue
    const value = rawHeaders[i + 1] as string
    joined = joined === undefined ? value : `${joined}, ${value}`
  }
  return joined
}

const ignore = () => {}

function cancel(body: Answer['body']): void {
  if (body instanceof ReadableStream) body.cancel().catch(ignore)
  else if (typeof body === 'object' && body !== null && 'pipe' in body) body.stream.cancel().catch(ignore)
}

/**
 * Streams a body to the client at the client's pace: the next chunk is read only once the last one
 * was written out (its write callback) and the response's buffer has room (or drained). A producer
 * may therefore reuse a chunk's memory once the next chunk is asked for (see StoredBody's
 * `reuseChunks`). The body is cancelled when the response closes early (or by the returned
 * function); a body that fails mid-way destroys the response (the client sees a cut connection,
 * never a short "complete" body).
 */
function pipeTo(body: ReadableStream<Uint8Array>, outgoing: StampedResponse): () => void {
  const reader = body.getReader()
  const stop = () => {
    reader.cancel().catch(ignore)
  }
  const fail = (err: unknown) => {
    stop()
    outgoing.destroy(err instanceof Error ? err : undefined)
  }
  const next = () => {
    reader.read().then(flow, fail)
  }
  const flow = (chunk: ReadableStreamReadResult<Uint8Array>) => {
    try {
      if (outgoing.destroyed) {
        stop()
      } else if (chunk.done) {
        outgoing.off('close', stop)
        outgoing.end()
      } else {
        // Two things to wait for: the chunk written out, and room in the buffer.
        let waiting = 2
        const step = () => {
          if (--waiting === 0) next()
        }
        if (outgoing.write(chunk.value, step)) step()
        else outgoing.once('drain', step)
      }
    } catch (err) {
      fail(err)
    }
  }
  outgoing.once('close', stop)
  next()
  return stop
}

/** The Hono environment of the proxy's own endpoints: the exchange is their binding. */
export type HonoEnv = { Bindings: Exchange }
