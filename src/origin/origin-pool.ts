// Keep-alive HTTP/1.1 connections to one origin, each an undici `Client` (one request at a time),
// used most-recently-freed first so a light load keeps few sockets warm. undici's parser hands
// each body chunk over as a view of the socket read, without the copy node:http's client makes,
// and its request path allocates less: a miss costs less CPU, most of all for large bodies.
// - At most `maxConnections` connections; further requests wait in arrival order for one to free.
// - `signal` aborting before the answer rejects at once with its reason, whatever the request is
//   waiting for (a connection, the connect, the answer); a request already sent is cut (its
//   connection closed), one still waiting is just dropped. After the answer, the body is the
//   caller's to consume or destroy (origin-body.ts).
// - `connectTimeoutMs` bounds the TCP (and TLS) connect of a new connection (ConnectTimeoutError).
// - A connection the origin closed while it sat idle fails the next request before any answer;
//   such a request is sent once more (GET and HEAD are idempotent), on a connection that served
//   no answer yet, so a backend that resets every new connection is not asked twice per attempt.
// - Failures keep Node's codes (ECONNREFUSED, ECONNRESET...): a connection the origin closed
//   before answering is ECONNRESET, as Node's "socket hang up" is.
// - Header and body deadlines are the caller's (s3.ts, body-stream.ts): undici's are off.
import { createRequire } from 'node:module'
import type { Dispatcher, Client as UndiciClient } from 'undici'

// The Client alone: undici's index also loads fetch, WebSocket, EventSource, mocks and the cache
// store, ~12 MB of RSS an idle proxy never uses (the Client costs ~3 MB).
const Client = createRequire(import.meta.url)('undici/lib/dispatcher/client.js') as typeof UndiciClient
type Client = UndiciClient
import { OriginBody } from './origin-body.ts'
import { ConnectTimeoutError } from './s3-errors.ts'

export type Method = 'GET' | 'HEAD'

/** Lower-case names; a repeated header is a list. */
export type OriginHeaders = Record<string, string | string[] | undefined>

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
}

interface Connection {
  readonly client: Client
  /** Answers received on its current socket (0 = a new socket, or none yet). */
  answers: number
}

const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE'])

export class OriginPool {
  readonly #options: OriginPoolOptions
  readonly #all = new Set<Connection>()
  /** Free connections, the most recently freed last. */
  readonly #idle: Connection[] = []
  /** Requests waiting for a connection, in arrival order. */
  readonly #waiting: Exchange[] = []
  #closed = false

  constructor(options: OriginPoolOptions) {
    this.#options = options
  }

  /**
   * Sends the request and resolves with the response once its headers arrive, whatever the
   * status. `headers` is a flat [name, value, ...] list and holds `host`.
   */
  request(method: Method, path: string, headers: string[], signal: AbortSignal): Promise<OriginResponse> {
    if (signal.aborted) return Promise.reject(signal.reason as Error)
    return new Promise((resolve, reject) => {
      const exchange = new Exchange(this, method, path, headers, signal, resolve, reject)
      this.start(exchange)
    })
  }

  /** Closes every connection; requests in flight fail. */
  close(): void {
    this.#closed = true
    for (const waiting of this.#waiting.splice(0)) waiting.onResponseError(undefined, new Error('origin connections closed'))
    for (const connection of this.#all) void connection.client.destroy().catch(() => undefined)
    this.#all.clear()
    this.#idle.length = 0
  }

  /** Sends `exchange` on a free connection, or queues it. */
  start(exchange: Exchange): void {
    if (this.#closed) {
      exchange.onResponseError(undefined, new Error('origin connections closed'))
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
  release(connection: Connection): void {
    if (this.#closed) return
    const next = this.#waiting.shift()
    if (next === undefined) this.#idle.push(connection)
    // Not from inside the client's own callbacks, which are still unwinding.
    else process.nextTick(() => next.send(connection))
  }

  connectTimeoutMs(): number {
    return this.#options.connectTimeoutMs
  }

  #open(): Connection {
    const client = new Client(this.#options.origin, {
      pipelining: 1,
      connectTimeout: this.#options.connectTimeoutMs,
      headersTimeout: 0,
      bodyTimeout: 0,
      allowH2: false,
      autoSelectFamily: true,
    })
    const connection: Connection = { client, answers: 0 }
    client.on('disconnect', () => {
      connection.answers = 0
    })
    // Failures reach the request; the event only says the socket is gone.
    client.on('connectionError', () => undefined)
    this.#all.add(connection)
    return connection
  }
}

/** One request: undici's handler for it, and its answer to the caller. */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #pool: OriginPool
  readonly #method: Method
  readonly #path: string
  readonly #headers: string[]
  readonly #signal: AbortSignal
  readonly #resolve: (response: OriginResponse) => void
  readonly #reject: (err: Error) => void
  #connection: Connection | undefined
  #controller: Dispatcher.DispatchController | undefined
  #body: OriginBody | undefined
  /** The caller has its answer (response or failure): later events go to the body or nowhere. */
  #settled = false
  #reused = false
  #mayResend = true

  constructor(
    pool: OriginPool,
    method: Method,
    path: string,
    headers: string[],
    signal: AbortSignal,
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
    signal.addEventListener('abort', this.#onAbort, { once: true })
  }

  send(connection: Connection): void {
    if (this.#settled) {
      this.#pool.release(connection)
      return
    }
    this.#connection = connection
    this.#reused = connection.answers > 0
    // `reset: false` keeps the connection after a HEAD too (undici closes it by default).
    connection.client.dispatch({ method: this.#method, path: this.#path, headers: this.#headers, reset: false }, this)
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#settled && this.#body === undefined) controller.abort(this.#signal.reason as Error)
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: OriginHeaders): void {
    // 1xx answers are interim; the final answer follows.
    if (statusCode < 200 || this.#settled) return
    this.#settled = true
    this.#signal.removeEventListener('abort', this.#onAbort)
    this.#body = new OriginBody(controller)
    this.#resolve({ statusCode, headers, body: this.#body })
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#body?.push(chunk)
  }

  onResponseEnd(): void {
    const connection = this.#connection as Connection
    this.#connection = undefined
    connection.answers++
    this.#pool.release(connection)
    this.#body?.finish()
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    const connection = this.#connection
    this.#connection = undefined
    if (connection !== undefined) this.#pool.release(connection)
    const failure = originFailure(error, this.#pool.connectTimeoutMs())
    if (this.#body !== undefined) {
      this.#body.fail(failure)
      return
    }
    if (this.#settled) return
    const code = (failure as NodeJS.ErrnoException).code ?? ''
    if (this.#reused && this.#mayResend && STALE_SOCKET_CODES.has(code)) {
      this.#mayResend = false
      // Not from inside the client's own callbacks, which are still unwinding.
      process.nextTick(() => this.#pool.start(this))
      return
    }
    this.#settled = true
    this.#signal.removeEventListener('abort', this.#onAbort)
    this.#reject(failure)
  }

  readonly #onAbort = (): void => {
    if (this.#settled) return
    this.#settled = true
    const reason = this.#signal.reason as Error
    if (this.#connection === undefined) this.#pool.unqueue(this)
    else this.#controller?.abort(reason)
    this.#reject(reason)
  }
}

/** undici's failures as the rest of the proxy knows them (s3-errors.ts reads Node's codes). */
function originFailure(error: Error, connectTimeoutMs: number): Error {
  const code = (error as { code?: unknown }).code
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new ConnectTimeoutError(connectTimeoutMs)
  if (code === 'UND_ERR_SOCKET') {
    return Object.assign(new Error(`the backend closed the connection (${error.message})`, { cause: error }), { code: 'ECONNRESET' })
  }
  return error
}
