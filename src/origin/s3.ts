// ObjectSource over S3: one per bucket replica, built once. GET and HEAD go out as SigV4-signed
// requests over keep-alive connections (signed-request.ts, origin-pool.ts); @aws-sdk/client-s3,
// loaded only when first needed (s3-client.ts), is kept for what it does well: the credential
// chain (environment, shared config, SSO, instance and task roles, with caching and refresh), the
// endpoint rules that decide where a bucket lives (not needed for a path-style custom endpoint), and
// listings. Owns the backend's quirks so the pipeline sees one contract:
// - a ranged GET returns exactly the range asked for (a 206 covering anything else is re-requested
//   once with an explicit range; s3rver, for one, answers `bytes=-5` as `0-5`);
// - a 416 always carries the object size (fetched with HEAD on that rare path);
// - the size comes from Content-Length (200) or Content-Range (206); a 200 without a length is
//   refused (502 ORIGIN_BAD_RESPONSE), never served as an empty object;
// - `s3.timeout` bounds the wait for response headers and any stall of the body mid-transfer, but
//   never the time a slow client takes to read (back-pressure stops reading; it is not a stall);
// - bodies are pulled only as fast as the client reads, and destroyed when the client goes away or
//   the body is not wanted, so no socket is left holding an unread body;
// - `s3.max_attempts`: a failure that says "try again" (no connection, reset, connect timeout, 5xx,
//   429) is retried before any byte is sent, with the SDK's jittered backoff and retry quota, within
//   the header deadline; a request refused (400/403) by an S3 whose `Date` is more than 5 minutes
//   from ours is signed again with S3's time, once, whatever the method (health probes included).
import { setTimeout as sleep } from 'node:timers/promises'
import type { S3Client } from '@aws-sdk/client-s3'
import type { S3Connection } from '../config/schema.ts'
import { ProxyError } from '../errors.ts'
import { quoteEtag } from '../http/conditional.ts'
import { formatRange, parseContentRange, resolveRange, unsatisfiedRange } from '../http/range.ts'
import type { ListPage, ListPageRequest, ObjectBody, ObjectSource, ReadOptions } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { ByteRange, ObjectMeta, RangeSpec } from '../types.ts'
import { WatchedBody } from './body-stream.ts'
import type { OriginBody } from './origin-body.ts'
import { HeadersTimeoutError, type OriginHeaders, type OriginResponse } from './origin-pool.ts'
import { resolveTarget } from './s3-endpoint.ts'
import { listPage } from './s3-list.ts'
import { answerError, errorCodeOf, isTransientStatus, transportError } from './s3-errors.ts'
import { SignedRequests, type Method } from './signed-request.ts'

/** Readiness probes must answer quickly even when `s3.timeout` is long. */
const PROBE_TIMEOUT_MS = 5000

/** The SDK's retry quota: a retry spends tokens, a success earns one back (or refunds its retry). */
const RETRY_TOKENS = 500
const RETRY_COST = 5
/** The SDK's backoff: a random delay up to base * 2^attempt, capped. */
const RETRY_BASE_MS = 100
const THROTTLED_RETRY_BASE_MS = 500
const RETRY_MAX_DELAY_MS = 20_000
/** S3 refuses a request signed more than 15 minutes off; the SDK corrects from 5 minutes. */
const CLOCK_SKEW_MS = 300_000
/** The share of its own timeout a backend must have had for a timeout to count against it. */
const OWN_TIMEOUT_SHARE = 0.9
/** S3 error bodies are a few hundred bytes; more is not an S3 error. */
const ERROR_BODY_LIMIT = 16 * 1024

export class S3Source implements ObjectSource {
  /** The SDK's client, loaded on first need (s3-client.ts). */
  #client: Promise<S3Client> | undefined
  readonly #sdk: () => Promise<S3Client>
  readonly #bucket: string
  readonly #requests: SignedRequests
  readonly #timeoutMs: number
  readonly #maxAttempts: number
  #retryTokens = RETRY_TOKENS

  readonly #observe: ((seconds: number, result: string) => void) | undefined

  readonly #probeKey: string | undefined

  /**
   * `metrics` (when enabled) records each request by bucket and replica. `probeKey`: the object
   * HEAD'ed by `probe` (the bucket itself when undefined).
   */
  constructor(config: S3Connection, telemetry?: { metrics: Metrics | undefined; bucket: string; probeKey?: string | undefined }) {
    this.#probeKey = telemetry?.probeKey
    const metrics = telemetry?.metrics
    if (telemetry !== undefined && metrics !== undefined) {
      const labels = { bucket: telemetry.bucket, replica: config.name }
      const byResult = new Map<string, { bucket: string; replica: string; result: string }>()
      this.#observe = (seconds, result) => {
        let withResult = byResult.get(result)
        if (withResult === undefined) byResult.set(result, (withResult = { ...labels, result }))
        metrics.originRequests.inc(withResult)
        metrics.originDuration.observe(labels, seconds)
      }
    }
    this.#timeoutMs = config.timeout * 1000
    this.#maxAttempts = Math.max(1, config.max_attempts)
    const forcePathStyle = config.force_path_style ?? config.endpoint !== undefined
    const staticKeys =
      config.access_key !== undefined && config.secret_key !== undefined
        ? { accessKeyId: config.access_key, secretAccessKey: config.secret_key, sessionToken: config.session_token }
        : undefined
    this.#sdk = async () => {
      this.#client ??= import('./s3-client.ts').then((m) => m.createS3Client(config, forcePathStyle))
      return this.#client
    }
    this.#bucket = config.bucket
    const params = { bucket: config.bucket, region: config.region, endpoint: config.endpoint, forcePathStyle }
    this.#requests = new SignedRequests({
      target: () => resolveTarget(params, this.#sdk),
      // Static keys as they are; otherwise the SDK's default chain (cached and refreshed).
      credentials: staticKeys ?? (async () => (await this.#sdk()).config.credentials()),
      connectTimeoutMs: config.connect_timeout * 1000,
      maxSockets: config.max_connections,
    })
  }

  async head(key: string, options: ReadOptions): Promise<ObjectMeta> {
    const res = await this.#send('HEAD', key, undefined, options)
    return metaOf(res, contentLength(res))
  }

  async get(key: string, range: RangeSpec | undefined, options: ReadOptions): Promise<ObjectBody> {
    const first = await this.#getObject(key, range, options)
    if (range === undefined || first.statusCode !== 206) {
      // No range asked, or the backend ignored it: the whole object (allowed by RFC 9110).
      return this.#body(first, metaOf(first, contentLength(first)), undefined, options)
    }
    const got = parseContentRange(single(first.headers['content-range']))
    if (got === undefined) {
      first.body.destroy()
      throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'missing_content_range' })
    }
    const wanted = resolveRange(range, got.size)
    if (wanted === undefined) {
      first.body.destroy()
      throw notSatisfiable(got.size)
    }
    if (sameRange(got, wanted)) return this.#body(first, metaOf(first, got.size), wanted, options)

    // The backend answered a different range than asked: ask again, explicitly.
    first.body.destroy()
    const explicit: RangeSpec = { kind: 'bounded', start: wanted.start, end: wanted.end }
    const second = await this.#getObject(key, explicit, options)
    const again = parseContentRange(single(second.headers['content-range']))
    if (second.statusCode !== 206 || again === undefined || !sameRange(again, wanted)) {
      second.body.destroy()
      throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'range_mismatch' })
    }
    return this.#body(second, metaOf(second, again.size), wanted, options)
  }

  async revalidate(key: string, etag: string, options: ReadOptions): Promise<ObjectBody | 'not-modified'> {
    const res = await this.#send('GET', key, { 'if-none-match': etag }, options, true)
    if (res.statusCode === 304) return 'not-modified'
    return this.#body(res, metaOf(res, contentLength(res)), undefined, options)
  }

  /** A listing page (s3-list.ts), bounded by the same header deadline as a GET. */
  async list(page: ListPageRequest, options: ReadOptions): Promise<ListPage> {
    const left = options.deadlineAt === undefined ? Infinity : options.deadlineAt - Date.now()
    const timeoutMs = Math.min(this.#timeoutMs, left)
    if (options.signal?.aborted) throw new ProxyError('ORIGIN_ABORTED')
    if (timeoutMs <= 0) throw new ProxyError('ORIGIN_TIMEOUT', { reason: 'deadline' })
    const timeout = AbortSignal.timeout(timeoutMs)
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
    const started = performance.now()
    try {
      const result = await listPage(await this.#sdk(), this.#bucket, page, signal)
      this.#observe?.((performance.now() - started) / 1000, 'ok')
      return result
    } catch (err) {
      let error = err as ProxyError
      if (timeout.aborted) error = new ProxyError('ORIGIN_TIMEOUT', { reason: left < this.#timeoutMs ? 'deadline' : 'no_response_headers', cause: err })
      else if (options.signal?.aborted === true) error = new ProxyError('ORIGIN_ABORTED', { cause: err })
      this.#observe?.((performance.now() - started) / 1000, error.code)
      throw error
    }
  }

  async probe(): Promise<boolean> {
    try {
      await this.#send('HEAD', this.#probeKey ?? '', undefined, undefined, false, Math.min(this.#timeoutMs, PROBE_TIMEOUT_MS))
      return true
    } catch {
      return false
    }
  }

  close(): void {
    this.#requests.close()
    void this.#client?.then((client) => client.destroy())
  }

  #getObject(key: string, range: RangeSpec | undefined, options: ReadOptions): Promise<OriginResponse> {
    const ifMatch = options.ifMatch
    // A plain GET has no answer to reinterpret: straight to the wire (one async frame less on a miss).
    if (range === undefined && ifMatch === undefined) return this.#send('GET', key, undefined, options)
    return this.#getObjectWith(key, range, ifMatch, options)
  }

  /** A ranged or conditional GET, whose failures say something about the range or the version. */
  async #getObjectWith(key: string, range: RangeSpec | undefined, ifMatch: string | undefined, options: ReadOptions): Promise<OriginResponse> {
    const headers = range === undefined ? undefined : { range: formatRange(range) }
    try {
      return await this.#send('GET', key, ifMatch === undefined ? headers : { ...headers, 'if-match': ifMatch }, options)
    } catch (err) {
      // The object is no longer the version the caller holds (S3 answers 412 PreconditionFailed).
      if (ifMatch !== undefined && err instanceof ProxyError && err.reason === '412 PreconditionFailed') {
        throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'etag_changed', cause: err })
      }
      if (range !== undefined && err instanceof ProxyError && err.reason === 'InvalidRange') {
        const meta = await this.head(key, options)
        throw notSatisfiable(meta.size)
      }
      throw err
    }
  }

  /**
   * Sends a request and resolves with a 2xx response (or a 304 when `notModified` is an answer),
   * bounded by the header deadline (this backend's timeout, or the request's deadline across
   * replicas when that comes first) and cancelled when the client goes away. Up to
   * `s3.max_attempts` tries (one async frame for all of them: it lives as long as the request
   * waits); one observation per call, retries included.
   */
  async #send(
    method: Method,
    key: string,
    headers: Readonly<Record<string, string>> | undefined,
    options: ReadOptions | undefined,
    notModified = false,
    probeTimeoutMs?: number
  ): Promise<OriginResponse> {
    const clientSignal = options?.signal
    const deadlineAt = options?.deadlineAt
    const left = deadlineAt === undefined ? Infinity : deadlineAt - Date.now()
    // When the request's deadline, not this backend's own timeout, sets the limit, a timeout is
    // reported as `deadline`: it says nothing about this backend's health. A deadline equal to the
    // timeout (a single backend) is this backend's own, though the request started a moment earlier.
    const byDeadline = probeTimeoutMs === undefined && left < this.#timeoutMs * OWN_TIMEOUT_SHARE
    const timeoutMs = probeTimeoutMs ?? Math.min(this.#timeoutMs, left)
    if (clientSignal?.aborted) throw new ProxyError('ORIGIN_ABORTED')
    if (timeoutMs <= 0) throw new ProxyError('ORIGIN_TIMEOUT', { reason: 'deadline' })
    // One deadline for every attempt, error body and pause between them; the client's signal is
    // passed down as it is (no controller of our own: the connection's exchange listens to it).
    const deadline = Date.now() + timeoutMs
    let timedOut = false
    const started = performance.now()
    let spent = 0
    let resigned = false
    try {
      for (let attempt = 1; ; attempt++) {
        let failure: ProxyError
        let again: boolean
        let throttled = false
        try {
          const res = await this.#requests.send(method, key, headers, clientSignal, deadline - Date.now())
          const status = res.statusCode
          if ((status >= 200 && status < 300) || (status === 304 && notModified)) {
            this.#retryTokens = Math.min(RETRY_TOKENS, this.#retryTokens + (spent > 0 ? spent : 1))
            // A bodiless answer still has to be read to its end before its connection is reused.
            if (method === 'HEAD' || status === 304) discard(res.body)
            this.#observe?.((performance.now() - started) / 1000, status === 304 ? 'not_modified' : 'ok')
            return res
          }
          const code = await errorCodeOfBody(method, res.body, clientSignal, deadline - Date.now())
          failure = answerError(status, code)
          throttled = status === 429 || code === 'SlowDown' || code === 'Throttling'
          // S3's Date says our clock is off (a HEAD's 403 has no body to name the cause): the
          // request is signed again with S3's time, once and at once, outside the retry budget, as
          // it never had a fair try.
          if (this.#correctClock(res) && !resigned && (status === 400 || status === 403)) {
            resigned = true
            attempt--
            continue
          }
          again = isTransientStatus(status)
        } catch (err) {
          timedOut = err instanceof HeadersTimeoutError
          if (timedOut || clientSignal?.aborted === true) throw err
          failure = transportError(err)
          // No answer at all (refused, reset, connect timeout): worth another try.
          again = failure.code === 'ORIGIN_UNREACHABLE' || failure.code === 'ORIGIN_TIMEOUT'
        }
        if (!again || attempt >= this.#maxAttempts || this.#retryTokens < RETRY_COST) throw failure
        this.#retryTokens -= RETRY_COST
        spent += RETRY_COST
        const base = throttled ? THROTTLED_RETRY_BASE_MS : RETRY_BASE_MS
        const pause = Math.floor(Math.min(RETRY_MAX_DELAY_MS, Math.random() * 2 ** attempt * base))
        // A pause that would outlast the deadline ends it now.
        if (pause >= deadline - Date.now()) {
          timedOut = true
          throw failure
        }
        await sleep(pause, undefined, clientSignal === undefined ? undefined : { signal: clientSignal })
      }
    } catch (err) {
      let error: ProxyError
      if (timedOut) {
        error = new ProxyError('ORIGIN_TIMEOUT', { reason: byDeadline ? 'deadline' : 'no_response_headers', cause: err })
      } else if (clientSignal?.aborted === true) {
        error = new ProxyError('ORIGIN_ABORTED', { cause: err })
      } else {
        error = transportError(err)
      }
      this.#observe?.((performance.now() - started) / 1000, error.code)
      throw error
    }
  }

  /** Adopts S3's clock (the `Date` of any error answer) when ours is off by more than 5 minutes. */
  #correctClock(res: OriginResponse): boolean {
    const serverTime = Date.parse(single(res.headers.date) ?? '')
    if (Number.isNaN(serverTime)) return false
    if (Math.abs(Date.now() + this.#requests.clockOffsetMs - serverTime) < CLOCK_SKEW_MS) return false
    this.#requests.clockOffsetMs = serverTime - Date.now()
    return true
  }

  #body(res: OriginResponse, meta: ObjectMeta, range: ByteRange | undefined, options: ReadOptions): ObjectBody {
    return new WatchedBody(res.body, meta, range, this.#timeoutMs, options.abortResponse)
  }
}

/** The `<Code>` of an error answer's XML body (HEAD answers have none). */
async function errorCodeOfBody(method: Method, body: OriginBody, signal: AbortSignal | undefined, timeoutMs: number): Promise<string | undefined> {
  if (method === 'HEAD') {
    discard(body)
    return undefined
  }
  // Still within the header deadline: an error body that stalls is cut with it.
  const text = await new Promise<string>((resolve, reject) => {
    let text = ''
    const giveUp = (reason: Error) => {
      settle()
      body.destroy(reason)
      reject(reason)
    }
    const onAbort = () => giveUp(signal?.reason as Error)
    const timer = setTimeout(() => giveUp(new HeadersTimeoutError(timeoutMs)), timeoutMs)
    const settle = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    body.consume(
      {
        data(chunk) {
          text += chunk.toString('utf8')
          if (text.length <= ERROR_BODY_LIMIT) return
          settle()
          body.destroy()
          resolve(text)
        },
        end: () => {
          settle()
          resolve(text)
        },
        error(err) {
          settle()
          reject(err)
        },
      },
      true
    )
    if (signal?.aborted === true) onAbort()
  })
  return errorCodeOf(text)
}

/** Reads a body nobody wants to its end (HEAD and 304 have none), so its connection can be reused. */
function discard(body: OriginBody): void {
  body.consume({ data() {}, end() {}, error() {} }, true)
}

function sameRange(a: ByteRange, b: ByteRange): boolean {
  return a.start === b.start && a.end === b.end
}

function notSatisfiable(size: number): ProxyError {
  return new ProxyError('RANGE_NOT_SATISFIABLE', { headers: { 'content-range': unsatisfiedRange(size) } })
}

/**
 * The object size a 200 announces. S3 always sends it; a gateway that streams chunked leaves the
 * size unknown, and the pipeline cannot serve that (its Content-Length, cache admission and ranges
 * all start from the size), so such an answer is refused rather than served as an empty object.
 */
function contentLength(res: OriginResponse): number {
  const value = res.headers['content-length']
  const size = typeof value === 'string' ? Number(value) : NaN
  if (Number.isSafeInteger(size) && size >= 0) return size
  res.body.destroy()
  throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'missing_content_length' })
}

/** A header that has one value: the first, when the backend repeated it. */
function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

function metaOf(res: OriginResponse, size: number): ObjectMeta {
  const headers: OriginHeaders = res.headers
  const userMetadata: Record<string, string> = {}
  for (const name in headers) {
    if (!name.startsWith('x-amz-meta-')) continue
    const value = headers[name]
    userMetadata[name.slice(11)] = Array.isArray(value) ? value.join(', ') : (value ?? '')
  }
  const lastModified = single(headers['last-modified'])
  const modifiedAt = lastModified === undefined ? NaN : Date.parse(lastModified)
  return {
    size,
    etag: quoteEtag(single(headers.etag)),
    lastModified: Number.isNaN(modifiedAt) ? undefined : new Date(modifiedAt),
    contentType: single(headers['content-type']),
    cacheControl: single(headers['cache-control']),
    contentDisposition: single(headers['content-disposition']),
    contentEncoding: single(headers['content-encoding']),
    contentLanguage: single(headers['content-language']),
    expires: single(headers.expires),
    userMetadata,
  }
}
