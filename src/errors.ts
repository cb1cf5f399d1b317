// The one error type of the proxy and its catalogue. Every failure a client can see has a stable
// code here; `errorAnswer` below is its only rendering as a response. `retryable` is what a
// replica set reads to decide whether another backend may succeed where this one failed.
// docs/errors.md lists every code; test/e2e/errors-doc.test.ts keeps the two in step.
import type { Answer } from './types.ts'

export type ErrorSource = 'client' | 'upstream' | 'internal'

interface ErrorSpec {
  readonly status: number
  readonly source: ErrorSource
  readonly retryable: boolean
  readonly message: string
}

export const ERROR_CATALOGUE = {
  ROUTE_NOT_FOUND: {
    status: 404,
    source: 'client',
    retryable: false,
    message: 'No bucket is configured for this path',
  },
  ROUTE_NO_KEY: {
    status: 404,
    source: 'client',
    retryable: false,
    message: 'The path names a bucket but no object; listing is not supported',
  },
  GUARD_METHOD_NOT_ALLOWED: {
    status: 405,
    source: 'client',
    retryable: false,
    message: 'Only GET, HEAD and OPTIONS are allowed',
  },
  GUARD_BAD_PATH: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'The request path is malformed or tries to leave the bucket',
  },
  GUARD_BAD_REQUEST: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'The request is malformed',
  },
  GUARD_BAD_HOST: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'The Host header is missing, repeated or malformed',
  },
  GUARD_REQUEST_TIMEOUT: {
    status: 408,
    source: 'client',
    retryable: false,
    message: 'The request headers did not arrive in time',
  },
  GUARD_URI_TOO_LONG: {
    status: 414,
    source: 'client',
    retryable: false,
    message: 'The request URI is too long',
  },
  GUARD_HEADERS_TOO_LARGE: {
    status: 431,
    source: 'client',
    retryable: false,
    message: 'The request headers are too large',
  },
  GUARD_BODY_NOT_ALLOWED: {
    status: 413,
    source: 'client',
    retryable: false,
    message: 'Request bodies are not accepted',
  },
  GUARD_CORS_REJECTED: {
    status: 403,
    source: 'client',
    retryable: false,
    message: 'The CORS preflight request is not allowed for this origin, method or headers',
  },
  GUARD_IP_DENIED: {
    status: 403,
    source: 'client',
    retryable: false,
    message: 'Requests from this address are not allowed',
  },
  GUARD_RATE_LIMITED: {
    status: 429,
    source: 'client',
    retryable: false,
    message: 'Too many requests; retry after the time in Retry-After',
  },
  GUARD_OVERLOADED: {
    status: 503,
    source: 'internal',
    retryable: false,
    message: 'The proxy is serving as many requests as it is allowed to; retry shortly',
  },
  ADMIN_CONFIG_INVALID: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'The configuration file is invalid; the running configuration is kept',
  },
  ADMIN_PREWARM_RUNNING: {
    status: 409,
    source: 'client',
    retryable: false,
    message: 'A prewarm of this bucket and prefix is already running',
  },
  ADMIN_SCRUB_RUNNING: {
    status: 409,
    source: 'client',
    retryable: true,
    message: 'A scrub of the disk cache is already running',
  },
  AUTH_TOKEN_MISSING: {
    status: 401,
    source: 'client',
    retryable: false,
    message: 'A bearer token is required',
  },
  AUTH_TOKEN_INVALID: {
    status: 401,
    source: 'client',
    retryable: false,
    message: 'The token is invalid',
  },
  AUTHZ_DENIED: {
    status: 403,
    source: 'client',
    retryable: false,
    message: 'The token does not grant access to this object',
  },
  HTTP_PRECONDITION_FAILED: {
    status: 412,
    source: 'client',
    retryable: false,
    message: 'A precondition in If-Match or If-Unmodified-Since failed',
  },
  RANGE_NOT_SATISFIABLE: {
    status: 416,
    source: 'client',
    retryable: false,
    message: 'The requested range is not satisfiable',
  },
  ORIGIN_NOT_FOUND: {
    status: 404,
    source: 'client',
    retryable: false,
    message: 'The object does not exist',
  },
  ORIGIN_AUTH_FAILED: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The storage backend refused the proxy’s credentials',
  },
  ORIGIN_TIMEOUT: {
    status: 504,
    source: 'upstream',
    retryable: true,
    message: 'The storage backend did not answer in time',
  },
  ORIGIN_UNREACHABLE: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The storage backend cannot be reached',
  },
  ORIGIN_UNAVAILABLE: {
    status: 503,
    source: 'upstream',
    retryable: true,
    message: 'The storage backend is temporarily unavailable',
  },
  ORIGIN_ERROR: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The storage backend failed',
  },
  ORIGIN_BAD_RESPONSE: {
    status: 502,
    source: 'upstream',
    retryable: false,
    message: 'The storage backend sent a response the proxy cannot use',
  },
  ORIGIN_ABORTED: {
    status: 499,
    source: 'client',
    retryable: false,
    message: 'The client closed the request before the backend answered',
  },
  IMAGE_BAD_PARAMS: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'The image parameters are invalid or not allowed on this bucket',
  },
  IMAGE_BAD_SIGNATURE: {
    status: 403,
    source: 'client',
    retryable: false,
    message: 'The image URL signature is missing or wrong',
  },
  IMAGE_WATERMARK_EMPTY: {
    status: 403,
    source: 'client',
    retryable: false,
    message: 'The watermark this image must carry has no text for this request',
  },
  IMAGE_NOT_AN_IMAGE: {
    status: 415,
    source: 'client',
    retryable: false,
    message: 'Image parameters were given for an object that is not an image the proxy renders',
  },
  IMAGE_UNPROCESSABLE: {
    status: 422,
    source: 'client',
    retryable: false,
    message: 'The image cannot be rendered (corrupt, too large, too many pixels or frames)',
  },
  IMAGE_BUSY: {
    status: 503,
    source: 'internal',
    retryable: false,
    message: 'The image renderer is at its queue limit; retry after the time in Retry-After',
  },
  IMAGE_RENDER_TIMEOUT: {
    status: 503,
    source: 'internal',
    retryable: false,
    message: 'Rendering the image took longer than allowed',
  },
  INTERNAL_ERROR: {
    status: 500,
    source: 'internal',
    retryable: false,
    message: 'Internal error',
  },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERROR_CATALOGUE

export interface ProxyErrorOptions {
  /** Extra response headers (Allow, WWW-Authenticate, Content-Range, Retry-After). */
  headers?: Record<string, string>
  /** Precise reason for logs and audit; never sent to the client. */
  reason?: string
  cause?: unknown
}

export class ProxyError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly source: ErrorSource
  readonly retryable: boolean
  readonly headers: Record<string, string> | undefined
  readonly reason: string | undefined

  constructor(code: ErrorCode, options: ProxyErrorOptions = {}) {
    const spec: ErrorSpec = ERROR_CATALOGUE[code]
    super(spec.message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ProxyError'
    this.code = code
    this.status = spec.status
    this.source = spec.source
    this.retryable = spec.retryable
    this.headers = options.headers
    this.reason = options.reason
  }
}

export function isProxyError(value: unknown): value is ProxyError {
  return value instanceof ProxyError
}

/**
 * The one JSON rendering of an error: `{"error":{"code","message","request_id"}}`, never stored
 * by a cache, plus the error's own headers (Allow, Retry-After, ...).
 */
export function errorAnswer(error: ProxyError, requestId: string): Answer & { body: string } {
  const body = JSON.stringify({ error: { code: error.code, message: error.message, request_id: requestId } })
  return {
    status: error.status,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
      ...error.headers,
    },
    body,
  }
}
