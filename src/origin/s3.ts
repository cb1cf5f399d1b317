// ObjectSource over @aws-sdk/client-s3: one client per bucket, built once, with a keep-alive
// connection pool. Owns the backend's quirks so the pipeline sees one contract:
// - a ranged GET returns exactly the range asked for (a 206 covering anything else is re-requested
//   once with an explicit range; s3rver, for one, answers `bytes=-5` as `0-5`);
// - a 416 always carries the object size (fetched with HeadObject on that rare path);
// - `s3.timeout` bounds the wait for response headers and any stall of the body mid-transfer, but
//   never the time a slow client takes to read (back-pressure stops reading; it is not a stall);
// - bodies are pulled only as fast as the client reads, and destroyed when the client goes away or
//   the body is not wanted, so no socket is left holding an unread body.
import http from 'node:http'
import https from 'node:https'
import type { Readable } from 'node:stream'
import {
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
} from '@aws-sdk/client-s3'
import { NodeHttpHandler } from '@smithy/node-http-handler'
import type { S3Connection } from '../config/schema.ts'
import { ProxyError } from '../errors.ts'
import { quoteEtag } from '../http/conditional.ts'
import {
  formatRange,
  parseContentRange,
  resolveRange,
  unsatisfiedRange,
} from '../http/range.ts'
import type { ObjectBody, ObjectSource, ReadOptions } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { ByteRange, ObjectMeta, RangeSpec } from '../types.ts'

/** Readiness probes must answer quickly even when `s3.timeout` is long. */
const PROBE_TIMEOUT_MS = 5000

export class S3Source implements ObjectSource {
  readonly #client: S3Client
  readonly #bucket: string
  readonly #timeoutMs: number

  readonly #observe: ((seconds: number, result: string) => void) | undefined

  readonly #probeKey: string | undefined

  /**
   * `metrics` (when enabled) records each request by bucket and replica. `probeKey`: the object
   * HeadObject'ed by `probe` (HeadBucket when undefined).
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
    const agentOptions = { keepAlive: true, maxSockets: config.max_connections, scheduling: 'lifo' as const }
    this.#bucket = config.bucket
    this.#timeoutMs = config.timeout * 1000
    this.#client = new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.force_path_style ?? config.endpoint !== undefined,
      credentials:
        config.access_key !== undefined && config.secret_key !== undefined
          ? {
              accessKeyId: config.access_key,
              secretAccessKey: config.secret_key,
              sessionToken: config.session_token,
            }
          : undefined,
      maxAttempts: config.max_attempts,
      // Checksum validation wraps every body in a hashing stream; the proxy passes bytes through.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        httpAgent: new http.Agent(agentOptions),
        httpsAgent: new https.Agent(agentOptions),
        connectionTimeout: config.connect_timeout * 1000,
        // No socket idle timeout: it would also fire while a slow client holds back-pressure.
        // Header deadline and body stalls are enforced here instead.
        requestTimeout: 0,
      }),
    })
  }

  async head(key: string, options: ReadOptions): Promise<ObjectMeta> {
    const out = await this.#send(
      (abortSignal) => this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }), { abortSignal }),
      options
    )
    return metaOf(out, out.ContentLength ?? 0)
  }

  async get(key: string, range: RangeSpec | undefined, options: ReadOptions): Promise<ObjectBody> {
    const first = await this.#getObject(key, range, options)
    if (range === undefined || first.$metadata.httpStatusCode !== 206) {
      // No range asked, or the backend ignored it: the whole object (allowed by RFC 9110).
      return this.#body(first, metaOf(first, first.ContentLength ?? 0), undefined, options)
    }
    const got = parseContentRange(first.ContentRange)
    if (got === undefined) {
      destroyBody(first)
      throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'missing_content_range' })
    }
    const wanted = resolveRange(range, got.size)
    if (wanted === undefined) {
      destroyBody(first)
      throw notSatisfiable(got.size)
    }
    if (sameRange(got, wanted)) return this.#body(first, metaOf(first, got.size), wanted, options)

    // The backend answered a different range than asked: ask again, explicitly.
    destroyBody(first)
    const explicit: RangeSpec = { kind: 'bounded', start: wanted.start, end: wanted.end }
    const second = await this.#getObject(key, explicit, options)
    const again = parseContentRange(second.ContentRange)
    if (second.$metadata.httpStatusCode !== 206 || again === undefined || !sameRange(again, wanted)) {
      destroyBody(second)
      throw new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'range_mismatch' })
    }
    return this.#body(second, metaOf(second, again.size), wanted, options)
  }

  async revalidate(key: string, etag: string, options: ReadOptions): Promise<ObjectBody | 'not-modified'> {
    try {
      const out = await this.#send(
        (abortSignal) =>
          this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key, IfNoneMatch: etag }), { abortSignal }),
        options
      )
      return this.#body(out, metaOf(out, out.ContentLength ?? 0), undefined, options)
    } catch (err) {
      if (err instanceof ProxyError && err.reason === 'not_modified') return 'not-modified'
      throw err
    }
  }

  async probe(): Promise<boolean> {
    const key = this.#probeKey
    try {
      await this.#send(
        (abortSignal): Promise<unknown> =>
          key === undefined
            ? this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }), { abortSignal })
            : this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }), { abortSignal }),
        undefined,
        Math.min(this.#timeoutMs, PROBE_TIMEOUT_MS)
      )
      return true
    } catch {
      return false
    }
  }

  close(): void {
    this.#client.destroy()
  }

  async #getObject(
    key: string,
    range: RangeSpec | undefined,
    options: ReadOptions
  ): Promise<GetObjectCommandOutput> {
    const command = new GetObjectCommand({
      Bucket: this.#bucket,
      Key: key,
      Range: range === undefined ? undefined : formatRange(range),
    })
    try {
      return await this.#send((abortSignal) => this.#client.send(command, { abortSignal }), options)
    } catch (err) {
      if (range !== undefined && err instanceof ProxyError && err.reason === 'InvalidRange') {
        const meta = await this.head(key, options)
        throw notSatisfiable(meta.size)
      }
      throw err
    }
  }

  /**
   * Sends a command, bounded by the header deadline (this backend's timeout, or the request's
   * deadline across replicas when that comes first) and cancelled when the client goes away.
   */
  async #send<T>(
    call: (abortSignal: AbortSignal) => Promise<T>,
    options: ReadOptions | undefined,
    probeTimeoutMs?: number
  ): Promise<T> {
    const signal = options?.signal
    const deadlineAt = options?.deadlineAt
    const left = deadlineAt === undefined ? Infinity : deadlineAt - Date.now()
    // When the request's deadline, not this backend's own timeout, sets the limit, a timeout is
    // reported as `deadline`: it says nothing about this backend's health.
    const byDeadline = probeTimeoutMs === undefined && left < this.#timeoutMs
    const timeoutMs = probeTimeoutMs ?? Math.min(this.#timeoutMs, left)
    if (signal?.aborted) throw new ProxyError('ORIGIN_ABORTED')
    if (timeoutMs <= 0) throw new ProxyError('ORIGIN_TIMEOUT', { reason: 'deadline' })
    const controller = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      controller.abort()
    }, timeoutMs)
    const onClientGone = () => controller.abort()
    signal?.addEventListener('abort', onClientGone, { once: true })
    const started = performance.now()
    try {
      const result = await call(controller.signal)
      this.#observe?.((performance.now() - started) / 1000, 'ok')
      return result
    } catch (err) {
      const error =
        timedOut && byDeadline
          ? new ProxyError('ORIGIN_TIMEOUT', { reason: 'deadline', cause: err })
          : toProxyError(err, timedOut, signal?.aborted === true)
      this.#observe?.((performance.now() - started) / 1000, error.reason === 'not_modified' ? 'not_modified' : error.code)
      throw error
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onClientGone)
    }
  }

  #body(
    out: GetObjectCommandOutput,
    meta: ObjectMeta,
    range: ByteRange | undefined,
    options: ReadOptions
  ): ObjectBody {
    const { stream, bytesSent } = watchedStream(out.Body as Readable, this.#timeoutMs, options.abortResponse)
    return { meta, range, stream, bytesSent }
  }
}

function sameRange(a: ByteRange, b: ByteRange): boolean {
  return a.start === b.start && a.end === b.end
}

function notSatisfiable(size: number): ProxyError {
  return new ProxyError('RANGE_NOT_SATISFIABLE', { headers: { 'content-range': unsatisfiedRange(size) } })
}

function destroyBody(out: GetObjectCommandOutput): void {
  ;(out.Body as Readable | undefined)?.destroy()
}

function metaOf(out: GetObjectCommandOutput | HeadObjectCommandOutput, size: number): ObjectMeta {
  const userMetadata: Record<string, string> = {}
  for (const [k, v] of Object.entries(out.Metadata ?? {})) userMetadata[k.toLowerCase()] = v
  return {
    size,
    etag: quoteEtag(out.ETag),
    lastModified: out.LastModified,
    contentType: out.ContentType,
    cacheControl: out.CacheControl,
    contentDisposition: out.ContentDisposition,
    contentEncoding: out.ContentEncoding,
    contentLanguage: out.ContentLanguage,
    expires: out.ExpiresString ?? out.Expires?.toUTCString(),
    userMetadata,
  }
}

/**
 * A pull-based web stream over the SDK body. The stall timer runs only while the stream waits on
 * the backend, never while the client holds back-pressure. A stall or backend error errors the
 * stream, which makes the server cut the connection (the client sees a truncated response, never a
 * clean end). Cancelling (client gone, body unwanted) destroys the backend body and its socket.
 */
function watchedStream(
  body: Readable,
  idleMs: number,
  abortResponse: ReadOptions['abortResponse']
): Pick<ObjectBody, 'stream' | 'bytesSent'> {
  let sent = 0
  let waiting = false
  /** The reader went away (client gone, body unwanted): a failure after that is nobody's news. */
  let cancelled = false
  const timer = setTimeout(() => {
    if (waiting) body.destroy(new ProxyError('ORIGIN_TIMEOUT', { reason: 'body_stalled' }))
  }, idleMs)
  timer.unref()
  const chunks = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        waiting = true
        timer.refresh()
        let next: IteratorResult<Buffer>
        try {
          next = await chunks.next()
        } catch (err) {
          clearTimeout(timer)
          // Destroying the body on cancel rejects the pending read (premature close): not a
          // backend failure, so it is neither reported nor counted against the replica.
          if (cancelled) return
          const error = err instanceof ProxyError ? err : new ProxyError('ORIGIN_ERROR', { reason: 'body_failed', cause: err })
          // A response already streaming to the client is cut (a truncated response, never a
          // clean end), which cancels this stream: nothing more to pull. Any other reader (the
          // cache collecting a body before answering) gets the error.
          if (abortResponse?.(error) !== true) throw error
          return new Promise<void>(() => {})
        } finally {
          waiting = false
        }
        if (next.done === true) {
          clearTimeout(timer)
          controller.close()
        } else {
          sent += next.value.byteLength
          controller.enqueue(next.value)
        }
      },
      cancel() {
        cancelled = true
        clearTimeout(timer)
        body.destroy()
      },
    },
    { highWaterMark: 0 }
  )
  return { stream, bytesSent: () => sent }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ETIMEDOUT',
])

function toProxyError(err: unknown, timedOut: boolean, clientGone: boolean): ProxyError {
  if (err instanceof ProxyError) return err
  if (timedOut) return new ProxyError('ORIGIN_TIMEOUT', { reason: 'no_response_headers', cause: err })
  if (clientGone) return new ProxyError('ORIGIN_ABORTED', { cause: err })
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } }
  const status = e.$metadata?.httpStatusCode
  const name = e.name ?? 'Error'
  if (status === undefined || status === 0) {
    if (name === 'TimeoutError') return new ProxyError('ORIGIN_TIMEOUT', { reason: 'connect_timeout', cause: err })
    if (e.code !== undefined && NETWORK_CODES.has(e.code)) {
      return new ProxyError('ORIGIN_UNREACHABLE', { reason: e.code, cause: err })
    }
    return new ProxyError('ORIGIN_ERROR', { reason: name, cause: err })
  }
  if (status === 304) return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'not_modified' })
  if (name === 'NoSuchBucket') return new ProxyError('ORIGIN_ERROR', { reason: name, cause: err })
  if (status === 404 || name === 'NoSuchKey' || name === 'NotFound') {
    return new ProxyError('ORIGIN_NOT_FOUND', { reason: name, cause: err })
  }
  if (status === 416 || name === 'InvalidRange') return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'InvalidRange' })
  if (status === 401 || status === 403) return new ProxyError('ORIGIN_AUTH_FAILED', { reason: name, cause: err })
  if (status === 503) {
    return new ProxyError('ORIGIN_UNAVAILABLE', { reason: name, headers: { 'retry-after': '1' }, cause: err })
  }
  if (status >= 500) return new ProxyError('ORIGIN_ERROR', { reason: `${status} ${name}`, cause: err })
  return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: `${status} ${name}`, cause: err })
}
