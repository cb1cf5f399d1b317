// The S3 front end's steps of the object pipeline (app.ts places them): it parses the S3 request
// into the facts every stage reads (route, principal) and renders answers and errors as S3 does.
//   s3Classify  operation, bucket and key from the request; writes, sub-resources and unknown
//               operations refused here (AccessDenied, MethodNotAllowed, NotImplemented)
//   s3Admit     SigV4 (header or presigned) -> the credential; its bucket and prefix scope; the
//               bucket's claim rules on its claims -> route + principal. Anonymous only on buckets
//               whose auth is off, and never with response-* overrides.
// A bucket the credential may not read answers as one that does not exist (NoSuchBucket).
import { createHmac, randomBytes } from 'node:crypto'
import { ProxyError, isProxyError, type ErrorCode } from '../../errors.ts'
import { rawPathOf } from '../../http/path.ts'
import type { Answer, BucketRoute, Principal } from '../../types.ts'
import type { Exchange } from '../../pipeline/exchange.ts'
import { canSeeBucket, mayReadKey, type CredentialTable, type S3Identity } from './credentials.ts'
import { S3Error, s3ErrorAnswer } from './errors.ts'
import type { S3Exchange } from './exchange.ts'
import type { ListPageCache } from './list.ts'
import { overrideValue } from './override-value.ts'
import { expectationOf, parseS3Request } from './request.ts'
import type { SessionSealer } from './session-token.ts'
import { hasAwsAuth, SigV4Error, verifySigV4, type SigningKeyCache } from './sigv4.ts'
import type { StsRuntime } from './sts.ts'

/** The S3 listener's live parts, built per generation by runtime.ts. */
export interface S3ApiRuntime {
  region: string
  domain: string | undefined
  credentials: CredentialTable
  keys: SigningKeyCache
  /** Backend listing pages, kept `s3_api.list_cache_seconds`. */
  pages: ListPageCache
  /** The web-identity exchange and its temporary credentials; null when `s3_api.sts` is off. */
  sts: StsRuntime | null
}

/** The query parameters that override response headers (S3 honours them on signed requests only). */
export const RESPONSE_OVERRIDES: Readonly<Record<string, string>> = {
  'response-content-type': 'content-type',
  'response-content-language': 'content-language',
  'response-expires': 'expires',
  'response-cache-control': 'cache-control',
  'response-content-disposition': 'content-disposition',
  'response-content-encoding': 'content-encoding',
}

const CLOSE = { connection: 'close' }

/** S3's answer to a header asking for what it does not do; any body is left unread. */
export const UNMET_EXPECTATION = () =>
  new S3Error('NotImplemented', 501, 'A header you provided implies functionality that is not implemented: Expect supports only 100-continue.', 'expectation', CLOSE)

export function s3Classify(options: { domain: string | undefined }): (x: Exchange) => void {
  const { domain } = options
  return function s3Classify(exchange) {
    const x = exchange as S3Exchange
    // 100-continue needs nothing here: no 100 is sent (server.ts), the answer comes first.
    if (expectationOf(x.header('expect'), x.incoming.httpVersion) === 'unmet') throw UNMET_EXPECTATION()
    const parsed = parseS3Request(x.method, x.target, x.header('host'), domain)
    x.s3 = parsed
    if (!parsed.ok) {
      // A refused write may still be sending its body: the connection closes rather than read it.
      throw new S3Error(parsed.code, statusOf(parsed.code), parsed.message, `s3:${parsed.code}`, parsed.code === 'AccessDenied' || parsed.code === 'MethodNotAllowed' ? CLOSE : undefined)
    }
  }
}

function statusOf(code: string): number {
  if (code === 'AccessDenied') return 403
  if (code === 'MethodNotAllowed') return 405
  if (code === 'NotImplemented') return 501
  return 400
}

export interface S3AdmitOptions {
  s3: S3ApiRuntime
  buckets: readonly BucketRoute[]
}

export function s3Admit(options: S3AdmitOptions): (x: Exchange) => void {
  const { s3, buckets } = options
  const byName = new Map(buckets.map((b) => [b.name, b]))
  const verifyOptions = {
    region: s3.region,
    secretOf: (id: string, token: string | undefined) => s3.credentials.secretOf(id, token),
    keys: s3.keys,
  }
  return function s3Admit(exchange) {
    const x = exchange as S3Exchange
    const request = x.s3
    if (request === undefined || !request.ok) throw new Error('s3Classify has not run')
    const signed = { method: x.method, target: x.target, rawHeaders: x.incoming.rawHeaders }
    let identity: S3Identity | null = null
    if (hasAwsAuth(signed)) {
      // A temporary credential: its session token opens (or the request is refused as S3 refuses
      // a bad or expired token), and the signature is checked against the secret derived from it.
      const sessionToken = s3.sts === null ? undefined : sessionTokenOf(signed.rawHeaders, request.query)
      const temporary = sessionToken === undefined ? undefined : openSession((s3.sts as StsRuntime).sealer, sessionToken)
      let accessKeyId: string
      try {
        const options = temporary === undefined ? verifyOptions : { ...verifyOptions, secretOf: (id: string) => (id === temporary.accessKeyId ? temporary.secret : undefined) }
        accessKeyId = verifySigV4(signed, options).accessKeyId
      } catch (err) {
        if (err instanceof SigV4Error) throw new S3Error(err.code, err.status, err.message, err.reason)
        throw err
      }
      identity =
        temporary !== undefined
          ? { accessKeyId, buckets: temporaryBuckets(s3.sts as StsRuntime, temporary.buckets), prefixes: [], claims: temporary.claims, temporary: true }
          : (s3.credentials.identity(accessKeyId) ?? null)
      if (identity === null) throw new S3Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.', 'no_identity')
      x.signed = true
      // Only listings issue and read tokens: an object read does not pay for the HMAC.
      const listing = request.operation === 'ListObjects' || request.operation === 'ListObjectsV2'
      const secret = !listing ? undefined : temporary !== undefined ? temporary.secret : s3.credentials.secretOf(accessKeyId, undefined)
      if (secret !== undefined) x.listTokenKey = createHmac('sha256', secret).update('yatagarasu-list-token-key').digest()
    } else if (Object.keys(RESPONSE_OVERRIDES).some((name) => request.query.has(name))) {
      throw new S3Error('InvalidRequest', 400, 'Request specific response headers cannot be used for anonymous GET requests.', 'anonymous_overrides')
    }
    for (const [name, header] of Object.entries(RESPONSE_OVERRIDES)) {
      const value = request.query.get(name)
      if (value !== null && overrideValue(header, value) === undefined) {
        throw new S3Error('InvalidArgument', 400, `${name} cannot be sent as a header value (a control character, or non-ASCII outside a filename).`, 'override_value')
      }
    }
    x.identity = identity
    if (request.bucket === undefined) return // ListBuckets: answered from the credential alone.

    const bucket = byName.get(request.bucket)
    if (identity === null) {
      // Anonymous: public buckets only; any other name (configured or not) is refused alike.
      if (bucket === undefined || bucket.verifier !== null) throw new S3Error('AccessDenied', 403, 'Access Denied', 'anonymous')
      x.principal = null
    } else {
      if (bucket === undefined || !canSeeBucket(identity, bucket)) throw new ProxyError('ROUTE_NOT_FOUND', { reason: 's3_bucket_not_visible' })
      x.principal = principalOf(identity)
    }
    const objectKey = request.operation === 'GetObject' || request.operation === 'HeadObject' ? request.key : undefined
    if (identity !== null && objectKey !== undefined && !mayReadKey(identity, objectKey)) {
      throw new S3Error('AccessDenied', 403, 'Access Denied', 'outside_prefixes')
    }
    // The bucket's claim rules (and path scope, for an object) decide on the credential's claims.
    if (identity !== null && bucket.verifier !== null) bucket.verifier.admitClaims(identity.claims, objectKey)
    const listPrefix = request.operation === 'ListObjects' || request.operation === 'ListObjectsV2' ? (request.query.get('prefix') ?? '') : ''
    x.route = { bucket, key: objectKey ?? listPrefix }
  }
}

/** The session token of a signed request (header, or the presigned query's), if any. */
function sessionTokenOf(rawHeaders: readonly string[], query: URLSearchParams): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === 'x-amz-security-token') return rawHeaders[i + 1] as string
  }
  return query.get('X-Amz-Security-Token') ?? undefined
}

/** Opens a temporary credential's session, or refuses the request as S3 refuses a bad or expired token. */
function openSession(sealer: SessionSealer, token: string): { accessKeyId: string; secret: string; claims: Readonly<Record<string, unknown>>; buckets: readonly string[] } {
  const opened = sealer.open(token)
  if (opened.ok) return { accessKeyId: opened.session.accessKeyId, secret: opened.secret, claims: opened.session.claims, buckets: opened.session.buckets }
  if (opened.reason === 'expired') throw new S3Error('ExpiredToken', 400, 'The provided token has expired.', 'session_expired')
  throw new S3Error('InvalidToken', 400, 'The provided token is malformed or otherwise invalid.', 'session_invalid')
}

/** The buckets without auth, and those sealed in the token that this generation still checks so. */
function temporaryBuckets(sts: StsRuntime, sealed: readonly string[]): ReadonlySet<string> {
  const names = new Set(sts.open)
  for (const name of sealed) if (sts.checked.some((b) => b.name === name)) names.add(name)
  return names
}

function principalOf(identity: S3Identity): Principal {
  const sub = identity.claims.sub
  return {
    subject: typeof sub === 'string' ? sub : identity.accessKeyId,
    claims: identity.claims,
    keyId: undefined,
    tokenSource: 's3',
  }
}

/** GetObject/HeadObject: the serve stage's answer, with the response-* overrides of a signed request. */
export function s3ObjectAnswer(x: S3Exchange, answer: Answer): Answer {
  const request = x.s3
  if (!x.signed || request === undefined || !request.ok || (answer.status !== 200 && answer.status !== 206)) return answer
  let headers: Record<string, string> | undefined
  for (const [param, header] of Object.entries(RESPONSE_OVERRIDES)) {
    const value = request.query.get(param)
    if (value === null) continue
    headers ??= { ...answer.headers }
    headers[header] = overrideValue(header, value) as string // s3Admit refused any it cannot send
  }
  return headers === undefined ? answer : { ...answer, headers }
}

/** The S3 request id headers, on every answer of the listener (errors included). */
export function s3Stamp(x: Exchange): void {
  const stamp = x.outgoing.stamp ?? {}
  x.outgoing.stamp = { ...stamp, 'x-amz-request-id': x.requestId, 'x-amz-id-2': amzId2() }
}

/**
 * An x-amz-id-2 (an opaque random token, 24 bytes as base64), cut from a pooled random buffer:
 * randomBytes(24) per request costs ~6 µs (a system call each time), the pool ~0.1 µs.
 */
const ID2_BYTES = 24
let id2Pool = Buffer.alloc(0)
let id2At = 0
function amzId2(): string {
  if (id2At + ID2_BYTES > id2Pool.length) {
    id2Pool = randomBytes(ID2_BYTES * 512)
    id2At = 0
  }
  const id = id2Pool.toString('base64', id2At, id2At + ID2_BYTES)
  id2At += ID2_BYTES
  return id
}

/** The S3 XML answer for any failure; the error kept on the exchange (a ProxyError) for the logs. */
export function s3Failed(x: Exchange, err: unknown, onInternal: (err: unknown) => void): Answer {
  const resource = safeResource(x.target)
  const head = x.method === 'HEAD'
  if (err instanceof S3Error) {
    x.error = new ProxyError(logCodeOf(err), { reason: `${err.code}:${err.reason}` })
    return s3ErrorAnswer(err, resource, x.requestId, head)
  }
  const error = isProxyError(err) ? err : new ProxyError('INTERNAL_ERROR', { cause: err })
  if (error.source === 'internal') onInternal(err)
  x.error = error
  return s3ErrorAnswer(error, resource, x.requestId, head)
}

/** The nearest catalogue code of an S3 refusal, for the access log, metrics and audit. */
function logCodeOf(err: S3Error): ErrorCode {
  if (err.code === 'SignatureDoesNotMatch' || err.code === 'RequestTimeTooSkewed' || err.code === 'InvalidAccessKeyId' || err.code === 'InvalidToken' || err.code === 'ExpiredToken') return 'AUTH_TOKEN_INVALID'
  if (err.code === 'AccessDenied') return err.reason === 's3:AccessDenied' ? 'GUARD_METHOD_NOT_ALLOWED' : 'AUTHZ_DENIED'
  if (err.code === 'MethodNotAllowed' || err.code === 'NotImplemented') return 'GUARD_METHOD_NOT_ALLOWED'
  if (err.status >= 500) return 'INTERNAL_ERROR'
  return 'GUARD_BAD_REQUEST'
}

/** The request path, decoded for display when it decodes. */
function safeResource(target: string): string {
  const raw = rawPathOf(target)
  try {
    return decodeURIComponent(raw)
  } catch {
    return raw
  }
}
