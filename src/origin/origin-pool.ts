// Keep-alive HTTP/1.1 connections to one origin (http1-connection.ts, one request at a time each),
// used most-recently-freed first so a light load keeps few sockets warm.
// - At most `maxConnections` connections; further requests wait in arrival order for one to free.
// - `signal` aborting before the answer rejects at once with its reason, whatever the request is
//   waiting for (a connection, the connect, the answer); so does `timeoutMs` running out, with a
//   HeadersTimeoutError. A request already sent is cut (its connection closed), one still waiting
//   is just dropped. After the answer, the body is the caller's to consume or destroy
//   (origin-body.ts).
// - `connectTimeoutMs` bounds the TCP (and TLS) connect of a new connection (ConnectTimeoutError).
// - A connection the origin closed while it sat idle fails the next request before any answer;
//   such a request is sent once more (GET and HEAD are idempotent). Only a connection that had
//   answered before counts as stale, and only once per request, so a backend that resets every
//   new connection is not asked twice per attempt.
// - Failures keep Node's codes (ECONNREFUSED, ECONNRESET...): a connection the origin closed
//   before answering is ECONNRESET, as Node's "socket hang up" is.
// - The header deadline is the caller's `timeoutMs`; a body's stall deadline is body-stream.ts's.
import { Http1Connection, type ExchangeSink, type Method } from './http1-connection.ts'
import type { OriginHeaders } from './http1-response.ts'
import { OriginBody, type Transfer } from './origin-body.ts'
import type { ReadBuffer } from './read-buffers.ts'

export type { Method } from './http1-connection.ts'
export type { OriginHeaders } from './http1-response.ts'

export interface OriginResponse {
  statusCode: number
  headers: OriginHeaders
  body: OriginBody
}

export interface OriginPoolOptions {
  /** `http://host[:port]` or `https://...`: only protocol, host and port are used. */
  origin: string
  maxConnections: number
  connectTimeoutMs: number
  /** The certificate authorities an https origin is checked against instead of Node's (tests). */
  ca?: string | Buffer
}

/** No answer (its headers) within the time the caller gave. */
export class HeadersTimeoutError extends Error {
  readonly code = 'ORIGIN_HEADERS_TIMEOUT'
  constructor(ms: number) {
    super(`no answer from the backend within ${ms} ms`)
    this.name = 'HeadersTimeoutError'
  }
}

const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE'])

export class OriginPool {
  readonly #options: OriginPoolOptions
  readonly #endpoint: { protocol: 'http:' | 'https:'; hostname: string; port: number }
  readonly #all = new Set<Http1Connection>()
  /** Free connections, the most recently freed last. */
  readonly #idle: Http1Connection[] = []
  /** Requests waiting for a connection, in arrival order. */
  readonly #waiting: Exchange[] = []
  readonly #tlsSession: { current?: Buffer } = {}
  #closed = false

  constructor(options: OriginPoolOptions) {
    this.#options = options
    const url = new URL(options.origin)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`an origin is http: or https:, not ${url.protocol}`)
    // An IPv6 literal is bracketed in a URL, not in a connect call.
    const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
    this.#endpoint = { protocol: url.protocol, hostname, port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)) }
  }

  /**
   * Sends the request and resolves with the response once its headers arrive, whatever the
   * status. `headers` is a flat [name, value, ...] list and holds `host`.
   */
  request(method: Method, path: string, headers: string[], signal: AbortSignal | undefined, timeoutMs?: number): Promise<OriginResponse> {
    if (signal?.aborted === true) return Promise.reject(signal.reason as Error)
    return new Promise((resolve, reject) => {
      this.start(new Exchange(this, method, path, headers, signal, timeoutMs, resolve, reject))
    })
  }

  /** Closes every connection; requests in flight fail. */
  close(): void {
    this.#closed = true
    for (const waiting of this.#waiting.splice(0)) waiting.fail(new Error('origin connections closed'))
    for (const connection of this.#all) connection.destroy()
    this.#all.clear()
    this.#idle.length = 0
  }

  /** Sends `exchange` on a free connection, or queues it. */
  start(exchange: Exchange): void {
    if (this.#closed) {
      exchange.fail(new Error('origin connections closed'))
      return
    }
    const connection = this.#idle.pop() ?? (this.#all.size < this.#options.maxConnections ? this.#open() : undefined)
    if (connection === undefined) this.#waiting.push(exchange)
    else exchange.send(connection)
  }

  /** A request waiting for a connection gave up. */
  unqueue(exchange: Exchange): void {
    const at = this.#waiting.indexOf(exchange)
    if (at !== -1) this.#waiting.splice(at, 1)
  }

  /** The connection's request is over (answered to its end, or failed): it takes the next one. */
  release(connection: Http1Connection): void {
    if (this.#closed) return
    const next = this.#waiting.shift()
    if (next === undefined) this.#idle.push(connection)
    // Not from inside the connection's own callbacks, which are still unwinding.
    else process.nextTick(() => next.send(connection))
  }

  #open(): Http1Connection {
    const connection = new Http1Connection({
      ...this.#endpoint,
      connectTimeoutMs: this.#options.connectTimeoutMs,
      ca: this.#options.ca,
      tlsSession: this.#tlsSession,
    })
    this.#all.add(connection)
    return connection
  }
}

/** One request: its answer to the caller, its body's transfer control. */
class Exchange implements ExchangeSink, Transfer {
  readonly #pool: OriginPool
  readonly #method: Method
  readonly #path: string
  readonly #headers: string[]
  readonly #signal: AbortSignal | undefined
  readonly #resolve: (response: OriginResponse) => void
  readonly #reject: (err: Error) => void
  #connection: Http1Connection | undefined
  #body: OriginBody | undefined
  /** The caller has its answer (response or failure): later events go to the body or nowhere. */
  #settled = false
  #reused = false
  #mayResend = true
  #timer: NodeJS.Timeout | undefined
  #timeoutMs = 0

  constructor(
    pool: OriginPool,
    method: Method,
    path: string,
    headers: string[],
    signal: AbortSignal | undefined,
    /** Gives up with a HeadersTimeoutError when no answer came within it. */
    timeoutMs: number | undefined,
    resolve: (response: OriginResponse) => void,
    reject: (err: Error) => void
  ) {
    this.#pool = pool
    this.#method = method
    this.#path = path
    this.#headers = headers
    this.#signal = signal
    this.#resolve = resolve
    this.#reject = reject
    signal?.addEventListener('abort', this.#onAbort, { once: true })
    if (timeoutMs !== undefined) {
      this.#timer = setTimeout(this.#onTimeout, timeoutMs)
      this.#timeoutMs = timeoutMs
    }
  }

  send(connection: Http1Connection): void {
    if (this.#settled) {
      this.#pool.release(connection)
      return
    }
    this.#connection = connection
    this.#reused = connection.answers > 0
    connection.send(this.#method, this.#path, this.#headers, this)
  }

  // --- The connection's side (ExchangeSink) ---------------------------------------------------

  head(statusCode: number, headers: OriginHeaders): void {
    if (this.#settled) return
    this.#settle()
    this.#body = new OriginBody(this)
    this.#resolve({ statusCode, headers, body: this.#body })
  }

  data(chunk: Buffer, from?: ReadBuffer): void {
    this.#body?.push(chunk, from)
  }

  end(): void {
    const connection = this.#connection as Http1Connection
    this.#connection = undefined
    this.#pool.release(connection)
    this.#body?.finish()
  }

  fail(error: Error): void {
    const connection = this.#connection
    this.#connection = undefined
    if (connection !== undefined) this.#pool.release(connection)
    if (this.#body !== undefined) {
      this.#body.fail(error)
      return
    }
    if (this.#settled) return
    const code = (error as NodeJS.ErrnoException).code ?? ''
    if (this.#reused && this.#mayResend && STALE_SOCKET_CODES.has(code)) {
      this.#mayResend = false
      // Not from inside the connection's own callbacks, which are still unwinding.
      process.nextTick(() => this.#pool.start(this))
      return
    }
    this.#settle()
    this.#reject(error)
  }

  // --- The body's side (Transfer) -------------------------------------------------------------

  pause(): void {
    this.#connection?.pause(this)
  }

  resume(): void {
    this.#connection?.resume(this)
  }

  abort(reason: Error): void {
    this.#connection?.abort(this, reason)
  }

  readonly #onAbort = (): void => {
    this.#giveUp(this.#signal?.reason as Error)
  }

  readonly #onTimeout = (): void => {
    this.#giveUp(new HeadersTimeoutError(this.#timeoutMs))
  }

  #giveUp(reason: Error): void {
    if (this.#settled) return
    this.#settle()
    if (this.#connection === undefined) this.#pool.unqueue(this)
    else this.#connection.abort(this, reason)
    this.#reject(reason)
  }

  #settle(): void {
    this.#settled = true
    clearTimeout(this.#timer)
    this.#signal?.removeEventListener('abort', this.#onAbort)
  }
}
