// What an S3 answer or a failed exchange with S3 means for the proxy: one ProxyError per case, the
// same codes whatever the backend. Two families:
// - an HTTP answer (status + the `<Code>` of S3's XML error body, or the status alone for HEAD,
//   which has no body): 404 is a missing object, 403 refused credentials, 503 an overloaded backend;
// - no answer at all, classified by the underlying cause: a connection refused, reset or cut
//   (ECONNREFUSED, ECONNRESET, EPIPE, "socket hang up") is ORIGIN_UNREACHABLE (502); only a timer
//   that really ran out is ORIGIN_TIMEOUT (504).
import { ProxyError } from '../errors.ts'

/** Raised by the transport when the TCP connection is not up within `s3.connect_timeout`. */
export class ConnectTimeoutError extends Error {
  readonly code = 'CONNECT_TIMEOUT'
  constructor(ms: number) {
    super(`no connection to the backend within ${ms} ms`)
    this.name = 'ConnectTimeoutError'
  }
}

/** Causes that say the backend cannot be reached (as opposed to being slow). */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET', // also Node's "socket hang up"
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ETIMEDOUT', // the kernel gave up connecting: no route to a live backend
])

/** Names S3 would give an error answer without a body (HEAD), as the SDK reports them. */
const STATUS_NAMES: Record<number, string> = {
  301: 'PermanentRedirect',
  304: 'NotModified',
  400: 'BadRequest',
  403: 'Forbidden',
  404: 'NotFound',
  412: 'PreconditionFailed',
  416: 'InvalidRange',
  500: 'InternalError',
  503: 'ServiceUnavailable',
}

/** The `<Code>` of an S3 XML error body (the first one), without an XML parser. */
export function errorCodeOf(body: string): string | undefined {
  const start = body.indexOf('<Code>')
  if (start === -1) return undefined
  const end = body.indexOf('</Code>', start + 6)
  if (end === -1) return undefined
  const code = body.slice(start + 6, end).trim()
  return code === '' ? undefined : code
}

/** The ProxyError for an answer S3 gave with a status the proxy does not serve. */
export function answerError(status: number, code: string | undefined): ProxyError {
  const name = code ?? STATUS_NAMES[status] ?? String(status)
  if (status === 304) return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'not_modified' })
  if (name === 'NoSuchBucket') return new ProxyError('ORIGIN_ERROR', { reason: name })
  if (status === 404) return new ProxyError('ORIGIN_NOT_FOUND', { reason: name })
  if (status === 416 || name === 'InvalidRange') return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: 'InvalidRange' })
  if (status === 401 || status === 403) return new ProxyError('ORIGIN_AUTH_FAILED', { reason: name })
  if (status === 503) return new ProxyError('ORIGIN_UNAVAILABLE', { reason: name, headers: { 'retry-after': '1' } })
  if (status >= 500) return new ProxyError('ORIGIN_ERROR', { reason: `${status} ${name}` })
  return new ProxyError('ORIGIN_BAD_RESPONSE', { reason: `${status} ${name}` })
}

/** Whether S3 asks for the same request again later: throttling and server-side failures. */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429
}

/** The ProxyError for an exchange that produced no answer, by its underlying cause. */
export function transportError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err
  if (err instanceof ConnectTimeoutError) return new ProxyError('ORIGIN_TIMEOUT', { reason: 'connect_timeout', cause: err })
  const code = causeCode(err)
  if (code !== undefined && UNREACHABLE_CODES.has(code)) return new ProxyError('ORIGIN_UNREACHABLE', { reason: code, cause: err })
  const name = code ?? (err as { name?: unknown } | undefined)?.name
  return new ProxyError('ORIGIN_ERROR', { reason: typeof name === 'string' ? name : 'Error', cause: err })
}

/** The system error code of `err` or of an error it wraps (AggregateError, `cause`). */
function causeCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    const { code, errors, cause } = e as { code?: unknown; errors?: unknown; cause?: unknown }
    if (typeof code === 'string') return code
    // A host with several addresses fails with an AggregateError of per-address errors.
    e = Array.isArray(errors) && errors.length > 0 ? errors[0] : cause
  }
  return undefined
}
