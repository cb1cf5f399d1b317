// The S3 rendering of the proxy's errors: each ProxyError code as the S3 error code, status and
// message an S3 client expects (botocore and the SDKs branch on <Code>, and retry on 503 SlowDown
// and 500 InternalError). The one JSON rendering stays in src/errors.ts; this is its S3 twin.
import type { ErrorCode, ProxyError } from '../../errors.ts'
import type { Answer } from '../../types.ts'
import { errorXml } from './xml.ts'

interface S3ErrorSpec {
  code: string
  status: number
  message: string
}

/** A refusal of the S3 front end itself (signature, operation, scope), before or beside the stages. */
export class S3Error extends Error {
  readonly code: string
  readonly status: number
  /** For the logs and audit, never sent. */
  readonly reason: string
  readonly headers: Record<string, string> | undefined
  constructor(code: string, status: number, message: string, reason: string, headers?: Record<string, string>) {
    super(message)
    this.name = 'S3Error'
    this.code = code
    this.status = status
    this.reason = reason
    this.headers = headers
  }
}

// Partial: a code added to the catalogue is shown by its status (fallbackFor) until it gets an entry.
const BY_PROXY_CODE: Partial<Record<ErrorCode, S3ErrorSpec>> = {
  // A bucket the credential may not read answers exactly as one that does not exist.
  ROUTE_NOT_FOUND: { code: 'NoSuchBucket', status: 404, message: 'The specified bucket does not exist' },
  ROUTE_NO_KEY: { code: 'NoSuchKey', status: 404, message: 'The specified key does not exist.' },
  GUARD_METHOD_NOT_ALLOWED: { code: 'MethodNotAllowed', status: 405, message: 'The specified method is not allowed against this resource.' },
  GUARD_BAD_PATH: { code: 'InvalidURI', status: 400, message: "Couldn't parse the specified URI." },
  GUARD_BAD_REQUEST: { code: 'InvalidRequest', status: 400, message: 'The request is malformed.' },
  GUARD_URI_TOO_LONG: { code: 'KeyTooLongError', status: 400, message: 'Your key is too long.' },
  GUARD_HEADERS_TOO_LARGE: { code: 'RequestHeaderSectionTooLarge', status: 400, message: 'Your request header section exceeds the maximum allowed size.' },
  GUARD_BODY_NOT_ALLOWED: { code: 'AccessDenied', status: 403, message: 'Access Denied. This endpoint is read-only.' },
  GUARD_CORS_REJECTED: { code: 'AccessForbidden', status: 403, message: 'CORSResponse: This CORS request is not allowed.' },
  GUARD_IP_DENIED: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  GUARD_RATE_LIMITED: { code: 'SlowDown', status: 503, message: 'Please reduce your request rate.' },
  GUARD_OVERLOADED: { code: 'SlowDown', status: 503, message: 'Please reduce your request rate.' },
  ADMIN_CONFIG_INVALID: { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' },
  AUTH_TOKEN_MISSING: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  AUTH_TOKEN_INVALID: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  AUTHZ_DENIED: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  HTTP_PRECONDITION_FAILED: { code: 'PreconditionFailed', status: 412, message: 'At least one of the pre-conditions you specified did not hold' },
  RANGE_NOT_SATISFIABLE: { code: 'InvalidRange', status: 416, message: 'The requested range is not satisfiable' },
  ORIGIN_NOT_FOUND: { code: 'NoSuchKey', status: 404, message: 'The specified key does not exist.' },
  ORIGIN_AUTH_FAILED: { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' },
  ORIGIN_TIMEOUT: { code: 'ServiceUnavailable', status: 503, message: 'The storage backend did not answer in time. Please try again.' },
  ORIGIN_UNREACHABLE: { code: 'ServiceUnavailable', status: 503, message: 'The storage backend cannot be reached. Please try again.' },
  ORIGIN_UNAVAILABLE: { code: 'SlowDown', status: 503, message: 'Please reduce your request rate.' },
  ORIGIN_ERROR: { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' },
  ORIGIN_BAD_RESPONSE: { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' },
  ORIGIN_ABORTED: { code: 'RequestTimeout', status: 400, message: 'The client closed the request.' },
  // A watermarked object that cannot be marked (no text for the mark, a format the proxy cannot
  // mark) is refused, never sent clean; a full render queue is a retryable slow-down.
  IMAGE_WATERMARK_EMPTY: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  IMAGE_NOT_AN_IMAGE: { code: 'AccessDenied', status: 403, message: 'Access Denied' },
  IMAGE_UNPROCESSABLE: { code: 'InvalidObjectState', status: 403, message: 'The object cannot be served in its marked form.' },
  IMAGE_BUSY: { code: 'SlowDown', status: 503, message: 'Please reduce your request rate.' },
  IMAGE_RENDER_TIMEOUT: { code: 'ServiceUnavailable', status: 503, message: 'Please try again.' },
  INTERNAL_ERROR: { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' },
}

/** Headers of a ProxyError that mean something to an S3 client too. */
const KEPT_HEADERS = ['retry-after', 'content-range', 'allow', 'connection']

/**
 * The S3 XML answer for an error: `resource` is the path the client asked for (bucket and key as
 * it named them). HEAD answers carry no body, as S3's.
 */
export function s3ErrorAnswer(error: ProxyError | S3Error, resource: string, requestId: string, head: boolean): Answer & { body: string | null } {
  const spec: S3ErrorSpec = error instanceof S3Error ? { code: error.code, status: error.status, message: error.message } : specOf(error)
  const body = errorXml(spec.code, spec.message, resource, requestId)
  const headers: Record<string, string> = {
    'content-type': 'application/xml',
    'cache-control': 'no-store',
    'x-amz-request-id': requestId,
  }
  for (const [name, value] of Object.entries(error.headers ?? {})) {
    if (KEPT_HEADERS.includes(name.toLowerCase())) headers[name.toLowerCase()] = value
  }
  if (head) return { status: spec.status, headers, body: null }
  headers['content-length'] = String(Buffer.byteLength(body))
  return { status: spec.status, headers, body }
}

function specOf(error: ProxyError): S3ErrorSpec {
  const spec = BY_PROXY_CODE[error.code]
  if (spec !== undefined) return spec
  if (error.status === 408) return { code: 'RequestTimeout', status: 400, message: 'Your socket connection to the server was not read from or written to within the timeout period.' }
  if (error.status >= 500) return { code: 'InternalError', status: 500, message: 'We encountered an internal error. Please try again.' }
  if (error.status === 403) return { code: 'AccessDenied', status: 403, message: 'Access Denied' }
  return { code: 'InvalidRequest', status: 400, message: error.message }
}
