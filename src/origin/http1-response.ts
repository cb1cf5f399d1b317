// Reads the HTTP/1.1 responses of one origin connection (http1-connection.ts), one at a time, from
// the bytes as the socket delivers them: the head (status and headers), then the body framed by
// Content-Length, chunked transfer coding, or the end of the connection. Body bytes are handed on
// as views of the socket's own reads, never copied; only a head (or a chunk-size line) split
// across reads is joined.
// - 1xx answers are interim and skipped; a HEAD answer, a 204 and a 304 have no body.
// - Header names are lower-cased, values read as latin1 and trimmed, a repeated header is a list.
// - Anything that breaks the framing (a bad status line, a folded or nameless header line, a
//   Content-Length that is not a number or disagrees with itself, a bad chunk size, bytes after the
//   answer, a head over 64 KiB) throws an OriginProtocolError: the connection is not reused.
// - `keepAlive` says whether the connection may carry another request after this answer (HTTP/1.1
//   without `Connection: close`, a body whose end was framed); `keepAliveHintMs` is the origin's
//   `Keep-Alive: timeout=N`, when it gave one.

/** Lower-case names; a repeated header is a list. */
export type OriginHeaders = Record<string, string | string[] | undefined>

/** Where a response goes, in order: its head, its body's chunks, its end. */
export interface ResponseSink {
  head(statusCode: number, headers: OriginHeaders): void
  data(chunk: Buffer): void
  end(): void
}

/** The origin broke HTTP/1.1's framing. */
export class OriginProtocolError extends Error {
  readonly code = 'ORIGIN_PROTOCOL_ERROR'
  constructor(reason: string) {
    super(`the backend's answer is not valid HTTP/1.1: ${reason}`)
    this.name = 'OriginProtocolError'
  }
}

const MAX_HEAD_BYTES = 64 * 1024
const MAX_LINE_BYTES = 8 * 1024
const HEAD_END = Buffer.from('\r\n\r\n')
const STATUS = /^[1-9]\d\d$/
const DECIMAL = /^\d{1,15}$/
/** RFC 9110 token characters: what a header name is made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/**
 * Field values hold visible characters, spaces, tabs and obs-text (as latin1 bytes); no other
 * control character. Checked on what is read here and on what http1-connection.ts writes.
 */
export const INVALID_FIELD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const LINE_END = Buffer.from('\r\n')

// What the reader expects next.
/** No answer is expected: any byte is an error. */
const IDLE = 0
const HEAD = 1
/** Body bytes left: `#remaining`. */
const LENGTH = 2
const CHUNK_SIZE = 3
/** Bytes left in this chunk: `#remaining`. */
const CHUNK_DATA = 4
/** The CRLF after a chunk's data. */
const CHUNK_END = 5
const TRAILERS = 6
/** The body ends with the connection. */
const UNTIL_CLOSE = 7
type State = typeof IDLE | typeof HEAD | typeof LENGTH | typeof CHUNK_SIZE | typeof CHUNK_DATA | typeof CHUNK_END | typeof TRAILERS | typeof UNTIL_CLOSE

export class ResponseReader {
  #state: State = IDLE
  #sink: ResponseSink | undefined
  #noBody = false
  #remaining = 0
  /** Bytes of a head or line not yet complete, as the reads brought them (joined once, when whole). */
  readonly #pending: Buffer[] = []
  #pendingBytes = 0
  /** Trailer bytes read so far (bounded like a head). */
  #trailerBytes = 0
  /** Changes whenever the answer being read does (start, reset, end): a feed stops when it does. */
  #generation = 0
  keepAlive = true
  keepAliveHintMs: number | undefined

  /** Expects the answer to a request just sent (`noBody` for HEAD). */
  start(sink: ResponseSink, noBody: boolean): void {
    this.#generation++
    this.#sink = sink
    this.#noBody = noBody
    this.#state = HEAD
    this.#dropPending()
    this.#trailerBytes = 0
    this.keepAlive = true
    this.keepAliveHintMs = undefined
  }

  /** Forgets the answer being read (the exchange was aborted, the connection is going). */
  reset(): void {
    this.#generation++
    this.#state = IDLE
    this.#sink = undefined
    this.#dropPending()
  }

  /** Reads bytes from the connection; throws OriginProtocolError. */
  feed(chunk: Buffer): void {
    const sink = this.#sink
    if (sink === undefined) throw new OriginProtocolError('bytes outside an answer')
    const generation = this.#generation
    let at = 0
    while (at < chunk.length) {
      // The answer ended (what follows is dropped: keepAlive says so), or a callback aborted it or
      // even started the next one, which these bytes must never reach.
      if (this.#generation !== generation) return
      switch (this.#state) {
        case IDLE:
          throw new OriginProtocolError('bytes outside an answer')
        case HEAD:
          at = this.#readHead(chunk, at, sink)
          break
        case LENGTH:
        case CHUNK_DATA:
        case UNTIL_CLOSE: {
          const available = chunk.length - at
          const take = this.#state === UNTIL_CLOSE ? available : Math.min(this.#remaining, available)
          this.#remaining -= take
          const piece = take === chunk.length ? chunk : chunk.subarray(at, at + take)
          at += take
          if (this.#remaining === 0 && this.#state === CHUNK_DATA) this.#state = CHUNK_END
          sink.data(piece)
          if (this.#remaining === 0 && this.#state === LENGTH && this.#generation === generation) this.#complete(sink, at < chunk.length)
          break
        }
        default:
          at = this.#readLine(chunk, at, sink)
      }
    }
  }

  /**
   * The connection ended. True when that completes the answer (a body that runs to the close) or
   * none was expected; false when an answer is cut short.
   */
  close(): boolean {
    const sink = this.#sink
    if (this.#state === IDLE) return true
    if (this.#state !== UNTIL_CLOSE || sink === undefined) return false
    this.#complete(sink, false)
    return true
  }

  #complete(sink: ResponseSink, bytesFollow: boolean): void {
    this.#generation++
    this.#state = IDLE
    this.#sink = undefined
    this.#dropPending()
    // Bytes after an answer belong to no request: the connection cannot be trusted again.
    if (bytesFollow) this.keepAlive = false
    sink.end()
  }

  /** Reads the head from `at`; answers where the body starts, or the chunk's end if it is not whole. */
  #readHead(chunk: Buffer, at: number, sink: ResponseSink): number {
    const next = this.#through(chunk, at, HEAD_END, MAX_HEAD_BYTES, 'a head over 64 KiB')
    if (next === -1) return chunk.length
    this.#head(this.#take(chunk, at, next, HEAD_END.length), sink, next < chunk.length)
    return next
  }

  /**
   * Where in `chunk` the bytes held plus `chunk[at..]` first end with `end` (the index after it),
   * or -1 after holding `chunk[at..]` for the next read. Only the few held bytes a terminator can
   * start in are searched again, so a head trickling in byte by byte costs linear time.
   */
  #through(chunk: Buffer, at: number, end: Buffer, limit: number, tooLong: string): number {
    if (this.#pendingBytes > 0) {
      const tail = lastBytes(this.#pending, end.length - 1)
      const seam = Buffer.concat([tail, chunk.subarray(at, at + end.length - 1)]).indexOf(end)
      if (seam !== -1) return at + seam + end.length - tail.length
    }
    const found = chunk.indexOf(end, at)
    if (found !== -1) {
      if (this.#pendingBytes + found - at > limit) throw new OriginProtocolError(tooLong)
      return found + end.length
    }
    this.#pendingBytes += chunk.length - at
    if (this.#pendingBytes > limit) throw new OriginProtocolError(tooLong)
    // A copy: the read it came in may be large, and only these bytes are needed.
    this.#pending.push(Buffer.from(chunk.subarray(at)))
    return -1
  }

  /** The text of the held bytes and `chunk[at..next]`, without the terminator's `endLength` bytes. */
  #take(chunk: Buffer, at: number, next: number, endLength: number): string {
    if (this.#pendingBytes === 0) return chunk.toString('latin1', at, next - endLength)
    const whole = Buffer.concat([...this.#pending, chunk.subarray(at, next)])
    this.#dropPending()
    return whole.toString('latin1', 0, whole.length - endLength)
  }

  #dropPending(): void {
    this.#pending.length = 0
    this.#pendingBytes = 0
  }

  #head(text: string, sink: ResponseSink, bytesFollow: boolean): void {
    const lineEnd = text.indexOf('\r\n')
    const statusLine = lineEnd === -1 ? text : text.slice(0, lineEnd)
    // "HTTP/1.x NNN reason"
    if (!statusLine.startsWith('HTTP/1.') || statusLine.charCodeAt(8) !== 32) throw new OriginProtocolError('a bad status line')
    const minor = statusLine.charCodeAt(7) - 48
    const digits = statusLine.slice(9, 12)
    if ((minor !== 0 && minor !== 1) || !STATUS.test(digits) || (statusLine.length > 12 && statusLine.charCodeAt(12) !== 32)) {
      throw new OriginProtocolError('a bad status line')
    }
    const statusCode = Number(digits)
    const headers = parseHeaders(text, lineEnd === -1 ? text.length : lineEnd + 2)
    if (statusCode < 200) {
      // Interim (100 Continue, 103 Early Hints): the final answer follows on the same connection.
      if (statusCode === 101) throw new OriginProtocolError('an upgrade was never asked for')
      return
    }
    const connection = headers.connection
    if (minor === 0 || (connection !== undefined && hasToken(connection, 'close'))) this.keepAlive = false
    const hint = headers['keep-alive']
    if (hint !== undefined) this.keepAliveHintMs = timeoutHint(hint)
    const framing = this.#framing(statusCode, headers)
    sink.head(statusCode, headers)
    if (this.#sink !== sink) return
    if (framing === 'none') this.#complete(sink, bytesFollow)
  }

  /** Sets the state for the body that follows this head. */
  #framing(statusCode: number, headers: OriginHeaders): 'none' | 'body' {
    if (this.#noBody || statusCode === 204 || statusCode === 304) return 'none'
    const coding = headers['transfer-encoding']
    if (coding !== undefined) {
      const codings = (Array.isArray(coding) ? coding.join(',') : coding).toLowerCase().split(',')
      // Both framings at once: chunked wins, and the connection is not trusted again (RFC 9112 6.3).
      if (headers['content-length'] !== undefined) this.keepAlive = false
      if ((codings[codings.length - 1] as string).trim() === 'chunked') {
        this.#state = CHUNK_SIZE
        return 'body'
      }
      this.keepAlive = false
      this.#state = UNTIL_CLOSE
      return 'body'
    }
    const length = headers['content-length']
    if (length === undefined) {
      this.keepAlive = false
      this.#state = UNTIL_CLOSE
      return 'body'
    }
    // Repeated, it must say the same each time.
    const value = typeof length === 'string' ? length : length.every((each) => each === length[0]) ? (length[0] as string) : ''
    if (!DECIMAL.test(value)) throw new OriginProtocolError('a bad Content-Length')
    this.#remaining = Number(value)
    if (this.#remaining === 0) return 'none'
    this.#state = LENGTH
    return 'body'
  }

  /** Reads a chunk-size line, a chunk's closing CRLF or a trailer line; answers where it ends. */
  #readLine(chunk: Buffer, at: number, sink: ResponseSink): number {
    const next = this.#through(chunk, at, LINE_END, MAX_LINE_BYTES, 'a chunk line over 8 KiB')
    if (next === -1) return chunk.length
    const line = this.#take(chunk, at, next, LINE_END.length)
    switch (this.#state) {
      case CHUNK_SIZE: {
        const semicolon = line.indexOf(';')
        const hex = (semicolon === -1 ? line : line.slice(0, semicolon)).trim()
        if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new OriginProtocolError('a bad chunk size')
        this.#remaining = parseInt(hex, 16)
        this.#state = this.#remaining === 0 ? TRAILERS : CHUNK_DATA
        break
      }
      case CHUNK_END:
        if (line !== '') throw new OriginProtocolError('no CRLF after a chunk')
        this.#state = CHUNK_SIZE
        break
      default:
        // Trailers are dropped; the empty line ends the body.
        if (line === '') this.#complete(sink, next < chunk.length)
        else if ((this.#trailerBytes += line.length + 2) > MAX_HEAD_BYTES) throw new OriginProtocolError('trailers over 64 KiB')
    }
    return next
  }
}

/**
 * The prototype of a headers object: nothing, not even Object's members. (A null-prototype object
 * itself would be a slow dictionary: V8 keeps one with this prototype in fast mode.)
 */
const NO_MEMBERS: object = Object.create(null)

function parseHeaders(text: string, from: number): OriginHeaders {
  // A header named like one of Object's members (constructor, toString) is just a header.
  const headers = Object.create(NO_MEMBERS) as OriginHeaders
  let start = from
  while (start < text.length) {
    let end = text.indexOf('\r\n', start)
    if (end === -1) end = text.length
    const first = text.charCodeAt(start)
    if (first === 32 || first === 9) throw new OriginProtocolError('a folded header line')
    const colon = text.indexOf(':', start)
    if (colon <= start || colon > end) throw new OriginProtocolError('a header line without a name')
    const name = headerName(text.slice(start, colon))
    const value = text.slice(colon + 1, end).trim()
    // Passed on to clients, some of them: what node:http would refuse to send is refused here.
    if (INVALID_FIELD_VALUE.test(value)) throw new OriginProtocolError('a control character in a header value')
    start = end + 2
    const known = headers[name]
    if (known === undefined) headers[name] = value
    else if (typeof known === 'string') headers[name] = [known, value]
    else known.push(value)
  }
  return headers
}

/** Names an origin sends, checked and lower-cased once: an origin sends the same dozen every time. */
const knownNames = new Map<string, string>()
const KNOWN_NAMES_LIMIT = 512

function headerName(raw: string): string {
  const known = knownNames.get(raw)
  if (known !== undefined) return known
  if (!TOKEN.test(raw)) throw new OriginProtocolError('a header name that is not a token')
  const name = raw.toLowerCase()
  if (knownNames.size < KNOWN_NAMES_LIMIT) knownNames.set(raw, name)
  return name
}

function hasToken(value: string | string[], token: string): boolean {
  if (value === token) return true
  if (value === 'keep-alive') return false
  const list = Array.isArray(value) ? value.join(',') : value
  return list
    .toLowerCase()
    .split(',')
    .some((item) => item.trim() === token)
}

/** The last `n` bytes held (fewer when fewer are). */
function lastBytes(pieces: readonly Buffer[], n: number): Buffer {
  const tail: Buffer[] = []
  let length = 0
  for (let i = pieces.length - 1; i >= 0 && length < n; i--) {
    const piece = pieces[i] as Buffer
    const take = Math.min(n - length, piece.length)
    tail.unshift(piece.subarray(piece.length - take))
    length += take
  }
  return tail.length === 1 ? (tail[0] as Buffer) : Buffer.concat(tail)
}

let lastHint: { value: string; ms: number | undefined } | undefined

/** `Keep-Alive: timeout=N` in ms, if it says so (an origin repeats the same value: read once). */
function timeoutHint(value: string | string[]): number | undefined {
  const text = Array.isArray(value) ? value.join(',') : value
  if (lastHint?.value === text) return lastHint.ms
  const match = /(?:^|[,\s])timeout=(\d+)/i.exec(text)
  lastHint = { value: text, ms: match === null ? undefined : Number(match[1]) * 1000 }
  return lastHint.ms
}
