// GET and HEAD to S3 without the SDK's command stack: a SigV4-signed request (sigv4.ts, the bytes
// @smithy/signature-v4 produces), sent over keep-alive connections (origin-pool.ts). Through
// the SDK's middleware (serializers, endpoint rules per call, retry and checksum layers,
// deserializers) a GetObject cost ~0.8 ms of CPU; the signature here is ~4 µs.
//
// - Credentials are static keys, or come from a provider (the S3 client's, which caches and
//   refreshes them); a session token is signed as `x-amz-security-token`.
// - `x-amz-date` has a resolution of one second, so identical requests (method, key, headers,
//   credentials) in the same second carry identical signatures: a burst of them (a hot object
//   with no cache, revalidations) is signed once (the signing was ~5% of a 1 KiB miss's CPU).
// - Aborting `signal` before the answer rejects at once with its reason, and so does `timeoutMs`
//   running out (a HeadersTimeoutError), whatever the request is waiting for: credentials or the
//   endpoint (slow providers cannot be cancelled, so the wait is raced), a connection, or the
//   answer (origin-pool.ts).
// - Connect timeouts, and the one resend of a request whose pooled connection the backend had
//   closed, are the pool's; any other failure is the caller's to classify.
import { encodeKey, type OriginTarget } from './s3-endpoint.ts'
import { HeadersTimeoutError, OriginPool, type Method, type OriginResponse } from './origin-pool.ts'
import { SigV4, type Credentials } from './sigv4.ts'

export type { Method } from './origin-pool.ts'

export interface SignedRequestsOptions {
  /** Resolved once, on the first request. */
  target: () => Promise<OriginTarget>
  /** Static keys, or a provider asked before each request (it caches and refreshes them). */
  credentials: Credentials | (() => Promise<Credentials>)
  connectTimeoutMs: number
  maxSockets: number
}

/** The SDK names the operation of a GET in its query; S3 ignores it, access logs show it. */
const GET_QUERY = 'x-id=GetObject'
/**
 * Signed requests kept for reuse within their second, at most: about as many as are in flight, so
 * that with many distinct keys an entry dies young (with 1024 each lived up to a second, long
 * enough for V8 to promote it to the old generation: ~0.5 KB per request).
 */
const MEMO_LIMIT = 64

export class SignedRequests {
  readonly #options: SignedRequestsOptions
  #target: OriginTarget | undefined
  #resolving: Promise<OriginTarget> | undefined
  #signer: SigV4 | undefined
  #pool: OriginPool | undefined
  #closed = false
  /** This second's signed header lists, by request; for `#memoCredentials` only. */
  readonly #memo = new Map<string, string[]>()
  #memoSecond = NaN
  #memoCredentials: Credentials | undefined
  /** Added to the local clock when signing, once S3 has said the clock is off. */
  clockOffsetMs = 0

  constructor(options: SignedRequestsOptions) {
    this.#options = options
  }

  /**
   * Sends a signed request for `key` ('' = the bucket itself) and resolves with the response once
   * its headers arrive, whatever the status. The body is the caller's to read or destroy.
   */
  send(
    method: Method,
    key: string,
    headers: Readonly<Record<string, string>> | undefined,
    signal: AbortSignal | undefined,
    timeoutMs?: number
  ): Promise<OriginResponse> {
    const target = this.#target
    const given = this.#options.credentials
    if (target === undefined || typeof given === 'function') return this.#sendWhenReady(method, key, headers, signal, timeoutMs)
    return this.#dispatch(target, given, method, key, headers, signal, timeoutMs)
  }

  /** `send` once the endpoint is resolved and the credentials fetched. */
  async #sendWhenReady(
    method: Method,
    key: string,
    headers: Readonly<Record<string, string>> | undefined,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined
  ): Promise<OriginResponse> {
    const limit = timeoutMs === undefined ? undefined : { at: Date.now() + timeoutMs, ms: timeoutMs }
    const target = this.#target ?? (await untilAborted(this.#resolve(), signal, limit))
    const given = this.#options.credentials
    // A provider may be fetching them (an instance role, a credential_process): the wait is
    // bounded like the rest.
    const credentials = typeof given === 'function' ? await untilAborted(given(), signal, limit) : given
    if (signal?.aborted === true) throw signal.reason
    const left = limit === undefined ? undefined : limit.at - Date.now()
    if (limit !== undefined && (left as number) <= 0) throw new HeadersTimeoutError(limit.ms)
    return this.#dispatch(target, credentials, method, key, headers, signal, left)
  }

  #dispatch(
    target: OriginTarget,
    credentials: Credentials,
    method: Method,
    key: string,
    headers: Readonly<Record<string, string>> | undefined,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined
  ): Promise<OriginResponse> {
    const path = key === '' ? target.base.slice(0, Math.max(1, target.base.length - 1)) : target.base + encodeKey(key)
    const query = method === 'GET' ? GET_QUERY : ''
    const nowMs = Date.now() + this.clockOffsetMs
    const second = Math.floor(nowMs / 1000)
    if (second !== this.#memoSecond || credentials !== this.#memoCredentials || this.#memo.size >= MEMO_LIMIT) {
      this.#memo.clear()
      this.#memoSecond = second
      this.#memoCredentials = credentials
    }
    let memoKey = `${method} ${path}`
    if (headers !== undefined) for (const name in headers) memoKey += `\n${name}:${headers[name]}`
    let signed = this.#memo.get(memoKey)
    if (signed === undefined) {
      const unsigned = headers === undefined ? { host: target.host } : { host: target.host, ...headers }
      signed = (this.#signer as SigV4).sign(method, path, query, unsigned, credentials, nowMs)
      this.#memo.set(memoKey, signed)
    }
    return (this.#pool as OriginPool).request(method, query === '' ? path : `${path}?${query}`, signed, signal, timeoutMs)
  }

  /** Closes every pooled connection. Requests in flight fail. */
  close(): void {
    this.#closed = true
    this.#pool?.close()
  }

  async #resolve(): Promise<OriginTarget> {
    this.#resolving ??= this.#options.target().then((target) => {
      this.#signer = new SigV4(target.signingRegion, target.signingService)
      this.#pool = new OriginPool({
        origin: `${target.protocol}//${target.host}`,
        maxConnections: this.#options.maxSockets,
        connectTimeoutMs: this.#options.connectTimeoutMs,
      })
      if (this.#closed) this.#pool.close()
      this.#target = target
      return target
    })
    return this.#resolving
  }
}

/**
 * `work`, or the signal's reason as soon as it aborts, or a HeadersTimeoutError when the time
 * `limit` gives runs out (the work itself runs on, unobserved).
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, limit: { at: number; ms: number } | undefined): Promise<T> {
  if (signal?.aborted === true) {
    work.catch(() => undefined)
    return Promise.reject(signal.reason as Error)
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal?.reason as Error)
    const timer = limit === undefined ? undefined : setTimeout(() => reject(new HeadersTimeoutError(limit.ms)), limit.at - Date.now())
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    work.then(
      (value) => {
        done()
        resolve(value)
      },
      (err: unknown) => {
        done()
        reject(err as Error)
      }
    )
  })
}
