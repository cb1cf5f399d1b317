// One keep-alive HTTP/1.1 connection to the origin, one request at a time (origin-pool.ts keeps
// several). Written here rather than taken from undici: on this path a library's generality is the
// cost. Measured side by side (a node:http relay of 1 KiB and 10 MiB objects from s3rver, 64
// clients), undici's Client cost ~2x the CPU of this socket-and-parser pair per 1 KiB answer and
// ~1.5-2.5x per 10 MiB answer (its wasm parser copies every read; its dispatch machinery allocates
// per request). node:http's client copies each body chunk as well.
// - The socket (TCP, or TLS with SNI for an https origin) opens on the first request, and again
//   after the origin closed it; the request is written at once (queued until connected).
// - `connectTimeoutMs` bounds the TCP (and TLS) connect: ConnectTimeoutError.
// - The answer goes to the exchange's sink as http1-response.ts reads it; body chunks are views of
//   the socket's reads, which over plain TCP land in pooled buffers lent for the call
//   (read-buffers.ts). `pause`/`resume` hold the socket back for the current exchange only.
// - A failure before the answer ended goes to `fail` once, with Node's codes: a socket error as it
//   is, an origin that closed the connection mid-answer as ECONNRESET (as Node's "socket hang
//   up"), a broken answer as OriginProtocolError; the socket is closed.
// - After an answer the socket stays open for the next request unless the answer said otherwise;
//   an idle socket is closed after the origin's `Keep-Alive: timeout` less a second (4 s when it
//   gives none, as undici does), before the origin would close it under a request.
import net from 'node:net'
import tls from 'node:tls'
import { INVALID_FIELD_VALUE, ResponseReader, type ResponseSink } from './http1-response.ts'
import { ConnectTimeoutError } from './s3-errors.ts'
import { LENT_READ_BYTES, ReadBuffer } from './read-buffers.ts'

export type Method = 'GET' | 'HEAD'

/** An exchange on a connection: its answer, or its failure. */
export interface ExchangeSink extends ResponseSink {
  /**
   * A body chunk. With `from`, the chunk is a view of a pooled read buffer (read-buffers.ts), lent
   * for this call only: keep it by holding `from`, or copy it. Without, the chunk is the taker's.
   */
  data(chunk: Buffer, from?: ReadBuffer): void
  fail(err: Error): void
}

export interface ConnectionOptions {
  protocol: 'http:' | 'https:'
  hostname: string
  port: number
  connectTimeoutMs: number
  /** The certificate authorities an https origin is checked against instead of Node's (tests; in production Node's, plus NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer
  /** The last TLS session an https origin gave, shared by the pool's connections: a new one resumes it. */
  tlsSession?: { current?: Buffer }
}

const DEFAULT_IDLE_MS = 4000
const MAX_IDLE_MS = 600_000
// What may be written, as the latin1 bytes a head is sent as (a character above U+00FF would be
// sent as its low byte: U+010D as CR). A target is visible characters; a value may hold spaces
// and tabs too (INVALID_FIELD_VALUE). Anything else could end a line and start a header or
// request of its own.
const INVALID_TARGET = /[^\x21-\x7e\x80-\xff]/

export class Http1Connection {
  readonly #options: ConnectionOptions
  readonly #reader = new ResponseReader()
  #socket: net.Socket | undefined
  #sink: ExchangeSink | undefined
  #connectTimer: NodeJS.Timeout | undefined
  #idleTimer: NodeJS.Timeout | undefined
  #idleMs = DEFAULT_IDLE_MS
  #paused = false
  /** The buffer of the read being fed to the reader (plain TCP; TLS reads are Node's own). */
  #reading: ReadBuffer | undefined
  /** Answers completed on the current socket (0: a new socket, or none yet). */
  answers = 0
  /** What the reader tells: passed on to the exchange's sink, the end seen here first. */
  readonly #relay: ResponseSink = {
    head: (statusCode, headers) => this.#sink?.head(statusCode, headers),
    data: (chunk) => this.#sink?.data(chunk, this.#reading),
    end: () => this.#answered(),
  }

  constructor(options: ConnectionOptions) {
    this.#options = options
  }

  /**
   * Sends a request; `headers` is a flat [name, value, ...] list holding `host`. The head is built
   * for every request (under a microsecond). Kept by header list in a WeakMap, every list and head
   * outlived young-generation GCs and was promoted to the old one (measured: weak-map keys do).
   */
  send(method: Method, target: string, headers: readonly string[], sink: ExchangeSink): void {
    if (this.#sink !== undefined) throw new Error('an origin connection carries one request at a time')
    const head = requestHead(method, target, headers)
    if (head === undefined) {
      sink.fail(new TypeError('a request target or header value holds a character HTTP/1.1 does not allow'))
      return
    }
    this.#sink = sink
    this.#reader.start(this.#relay, method === 'HEAD')
    const socket = this.#socket ?? this.#connect()
    socket.write(head, 'latin1')
  }

  /** Holds back the socket while `sink`'s body waits for its consumer. */
  pause(sink: ExchangeSink): void {
    if (sink !== this.#sink || this.#paused) return
    this.#paused = true
    this.#socket?.pause()
  }

  resume(sink: ExchangeSink): void {
    if (sink !== this.#sink || !this.#paused) return
    this.#paused = false
    this.#socket?.resume()
  }

  /** Gives up `sink`'s exchange: the socket is closed and `fail(reason)` follows at once. */
  abort(sink: ExchangeSink, reason: Error): void {
    if (sink !== this.#sink) return
    this.#failExchange(reason)
  }

  /** Closes the socket; an exchange in flight fails. */
  destroy(): void {
    this.#failExchange(new Error('origin connections closed'))
    clearTimeout(this.#idleTimer)
  }

  #connect(): net.Socket {
    const { protocol, hostname, port, connectTimeoutMs, ca, tlsSession } = this.#options
    let socket: net.Socket
    if (protocol === 'https:') {
      const servername = net.isIP(hostname) === 0 ? hostname : undefined
      const secure = tls.connect({ host: hostname, port, servername, ALPNProtocols: ['http/1.1'], ca, session: tlsSession?.current })
      // Resuming a session skips most of a full handshake's CPU and one round trip.
      secure.on('session', (session: Buffer) => {
        if (tlsSession !== undefined) tlsSession.current = session
      })
      socket = secure
    } else {
      socket = this.#connectTcp(hostname, port)
    }
    socket.setNoDelay(true)
    // A peer gone without a word (a dropped NAT entry, a dead host) is noticed, as undici does.
    socket.setKeepAlive(true, 60_000)
    this.#socket = socket
    this.answers = 0
    this.#paused = false
    this.#connectTimer = setTimeout(() => socket.destroy(new ConnectTimeoutError(connectTimeoutMs)), connectTimeoutMs)
    this.#connectTimer.unref()
    socket.once(protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(this.#connectTimer))
    if (protocol === 'https:') socket.on('data', (chunk: Buffer) => this.#feed(socket, chunk))
    socket.on('end', () => this.#ended(socket))
    socket.on('error', (err: Error) => {
      if (socket === this.#socket) this.#failExchange(err)
    })
    socket.on('close', () => this.#ended(socket))
    return socket
  }

  /**
   * A TCP connection whose reads land in pooled buffers (read-buffers.ts): the same one again
   * after a read whose bytes nothing kept, another from the pool after one something holds. A
   * read under LENT_READ_BYTES is copied out and its buffer read into again at once.
   */
  #connectTcp(host: string, port: number): net.Socket {
    let current: ReadBuffer | undefined
    const socket: net.Socket = net.connect({
      host,
      port,
      onread: {
        buffer: () => {
          if (current === undefined || current.held) {
            current?.retire()
            current = ReadBuffer.take()
          }
          return current.bytes
        },
        callback: (bytes: number) => {
          const read = current as ReadBuffer
          if (bytes < LENT_READ_BYTES) {
            // A copy, as Node's own small reads are: held, it would keep a whole buffer.
            this.#feed(socket, Buffer.from(read.bytes.subarray(0, bytes)))
          } else {
            this.#reading = read
            this.#feed(socket, read.bytes.subarray(0, bytes))
            this.#reading = undefined
          }
          // Pausing is `pause`'s job (socket.pause works on these reads too).
          return true
        },
      },
    })
    socket.once('close', () => {
      current?.retire()
      current = undefined
    })
    return socket
  }

  #feed(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.#socket) return
    try {
      this.#reader.feed(chunk)
    } catch (err) {
      this.#failExchange(err as Error)
    }
  }

  /** The origin closed the socket (or it broke): a body that runs to the close ends, any other answer fails. */
  #ended(socket: net.Socket): void {
    if (socket !== this.#socket) return
    const sink = this.#sink
    this.#forgetSocket()
    if (sink === undefined) return
    this.#sink = undefined
    if (this.#reader.close()) {
      sink.end()
      return
    }
    this.#reader.reset()
    sink.fail(Object.assign(new Error('the backend closed the connection before the answer ended'), { code: 'ECONNRESET' }))
  }

  /** Closes the socket and fails the exchange in flight, if any, with `err`. */
  #failExchange(err: Error): void {
    const socket = this.#socket
    const sink = this.#sink
    this.#sink = undefined
    this.#reader.reset()
    if (socket !== undefined) {
      this.#forgetSocket()
      socket.destroy()
    }
    sink?.fail(err)
  }

  #forgetSocket(): void {
    clearTimeout(this.#connectTimer)
    this.#socket = undefined
    this.answers = 0
    this.#paused = false
  }

  /** The answer ended: the socket is kept for the next request, or closed; then the sink hears it. */
  #answered(): void {
    const sink = this.#sink
    this.#sink = undefined
    const socket = this.#socket
    if (socket !== undefined) this.#keepOrClose(socket)
    sink?.end()
  }

  #keepOrClose(socket: net.Socket): void {
    if (this.#paused) {
      this.#paused = false
      socket.resume()
    }
    if (!this.#reader.keepAlive) {
      this.#forgetSocket()
      socket.destroy()
      return
    }
    this.answers++
    const hint = this.#reader.keepAliveHintMs
    const idleMs = hint === undefined ? DEFAULT_IDLE_MS : Math.min(Math.max(hint - 1000, 1000), MAX_IDLE_MS)
    // Restarted at every answer: when it fires on an idle socket, the socket has been idle that long.
    if (this.#idleTimer === undefined || idleMs !== this.#idleMs) {
      clearTimeout(this.#idleTimer)
      this.#idleMs = idleMs
      this.#idleTimer = setTimeout(this.#onIdleTimer, idleMs)
      this.#idleTimer.unref()
    } else {
      this.#idleTimer.refresh()
    }
  }

  readonly #onIdleTimer = (): void => {
    const socket = this.#socket
    // Busy: the end of its answer restarts the timer.
    if (socket === undefined || this.#sink !== undefined) return
    this.#forgetSocket()
    socket.destroy()
  }
}

/** The request's head, or undefined when the target or a value holds what it may not. */
function requestHead(method: Method, target: string, headers: readonly string[]): string | undefined {
  if (INVALID_TARGET.test(target)) return undefined
  let head = `${method} ${target} HTTP/1.1\r\n`
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1] as string
    if (INVALID_FIELD_VALUE.test(value)) return undefined
    head += `${headers[i] as string}: ${value}\r\n`
  }
  // HTTP/1.1's default, said anyway for origins behind an HTTP/1.0-minded proxy (as undici does).
  return `${head}connection: keep-alive\r\n\r\n`
}

