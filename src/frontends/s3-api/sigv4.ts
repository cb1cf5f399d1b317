// AWS Signature Version 4 verification for the S3 front end (reads only): the Authorization header
// form and the presigned query form (X-Amz-*), as specified in
// https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
//
// - The canonical request is built from the raw path exactly as the client sent it (S3 signs the
//   path without normalizing it: `//`, `%2B`, `+` and percent-encoded unicode stay as they are).
// - A read has no payload: the payload hash must be UNSIGNED-PAYLOAD or the empty string's hash.
//   STREAMING-* payloads and SigV2 / SigV4A are refused with a message saying so.
// - Time: ±15 minutes around the request's date; presigned URLs live at most 7 days.
// - Secrets never leave this module's caller: an unknown access key id is verified against a dummy
//   secret, so it costs the same HMAC work as a known (cached) one and fails the same way
//   (SignatureDoesNotMatch), and signatures are compared in constant time.
// - An access key id that no configured or temporary key could have (not 3-128 letters, digits,
//   `.`, `_`, `-`: the config's rule) is refused as malformed before any lookup.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { LRUCache } from 'lru-cache'

/** The request as the client sent it. */
export interface SignedRequest {
  method: string
  /** The request target as sent: raw path and raw query (`/b/a%20b?list-type=2`). */
  target: string
  /** Node's rawHeaders: name, value, name, value... */
  rawHeaders: readonly string[]
}

export interface VerifyOptions {
  /** The region clients must sign for (the listener's `s3_api.region`). */
  region: string
  /**
   * The secret of an access key id, or undefined when there is none. The session token is given for
   * temporary credentials (whose secret derives from it).
   */
  secretOf(accessKeyId: string, sessionToken: string | undefined): string | undefined
  /** Milliseconds since the epoch; Date.now by default. */
  now?: number
  /** Keeps derived signing keys (one per key id, day and region); see SigningKeyCache. */
  keys?: SigningKeyCache
}

/**
 * Derived signing keys, so a request costs one HMAC instead of five. Only known key ids are kept
 * (LRU, keyed by key id, day, region and service); every unknown id shares one dummy key per day,
 * region and service, so spraying unknown ids neither grows the cache nor evicts real keys, and an
 * unknown id costs the one HMAC a cached known id costs.
 */
export class SigningKeyCache {
  readonly #entries: LRUCache<string, { secret: string; key: Buffer }>
  readonly #dummy = new Map<string, Buffer>()
  constructor(max = 10_000) {
    this.#entries = new LRUCache({ max })
  }
  /** Known keys held. */
  get size(): number {
    return this.#entries.size
  }
  /** `secret` undefined: an unknown key id (answered with the dummy key). */
  get(accessKeyId: string, secret: string | undefined, date: string, region: string, service: string): Buffer {
    if (secret === undefined) {
      const scope = `${date}\0${region}\0${service}`
      let key = this.#dummy.get(scope)
      if (key === undefined) {
        if (this.#dummy.size >= 8) this.#dummy.clear()
        key = signingKey(DUMMY_SECRET, date, region, service)
        this.#dummy.set(scope, key)
      }
      return key
    }
    // The id is 3-128 characters (checked before): entries stay small without hashing the key.
    const id = `${accessKeyId}\0${date}\0${region}\0${service}`
    const hit = this.#entries.get(id)
    if (hit !== undefined && hit.secret === secret) return hit.key
    const key = signingKey(secret, date, region, service)
    this.#entries.set(id, { secret, key })
    return key
  }
}

export interface Verified {
  accessKeyId: string
  sessionToken: string | undefined
  /** True for a presigned URL (query authentication). */
  presigned: boolean
}

/** S3's error codes for refused signatures (rendered as S3 XML by the front end). */
export type SigV4Code =
  | 'SignatureDoesNotMatch'
  | 'RequestTimeTooSkewed'
  | 'AccessDenied'
  | 'AuthorizationHeaderMalformed'
  | 'AuthorizationQueryParametersError'
  | 'InvalidRequest'
  | 'InvalidArgument'
  | 'NotImplemented'

const STATUS: Record<SigV4Code, number> = {
  SignatureDoesNotMatch: 403,
  RequestTimeTooSkewed: 403,
  AccessDenied: 403,
  AuthorizationHeaderMalformed: 400,
  AuthorizationQueryParametersError: 400,
  InvalidRequest: 400,
  InvalidArgument: 400,
  NotImplemented: 501,
}

/** A refused signature: the S3 code and message the client sees, and a short reason for the logs. */
export class SigV4Error extends Error {
  readonly code: SigV4Code
  readonly status: number
  readonly reason: string
  constructor(code: SigV4Code, message: string, reason: string) {
    super(message)
    this.name = 'SigV4Error'
    this.code = code
    this.status = STATUS[code]
    this.reason = reason
  }
}

export const ALGORITHM = 'AWS4-HMAC-SHA256'
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD'
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
export const MAX_SKEW_MS = 15 * 60 * 1000
export const MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
/** Verifies unknown access key ids: the same HMAC chain as a real secret, never a match. */
const DUMMY_SECRET = 'yatagarasu-unknown-access-key-0000000000000000'
/** What any access key id the listener accepts looks like (s3_api.credentials' rule; ASIA ids fit). */
const ACCESS_KEY_ID = /^[A-Za-z0-9._-]{3,128}$/

const UNSUPPORTED =
  'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.'

/** Whether the request carries any form of AWS authentication (else it is anonymous). */
export function hasAwsAuth(req: SignedRequest): boolean {
  if (headerOf(req.rawHeaders, 'authorization') !== undefined) return true
  const q = req.target.indexOf('?')
  if (q === -1) return false
  const query = req.target.slice(q + 1)
  return /(?:^|&)(?:X-Amz-Algorithm|X-Amz-Credential|X-Amz-Signature|AWSAccessKeyId|Signature)=/i.test(query)
}

/**
 * Verifies the request's signature and returns who signed it; throws SigV4Error otherwise.
 * The caller has checked the request has AWS authentication at all (`hasAwsAuth`).
 */
export function verifySigV4(req: SignedRequest, options: VerifyOptions): Verified {
  const now = options.now ?? Date.now()
  const q = req.target.indexOf('?')
  const rawPath = q === -1 ? req.target : req.target.slice(0, q)
  const rawQuery = q === -1 ? '' : req.target.slice(q + 1)
  const params = parseQuery(rawQuery)
  const authorization = headerOf(req.rawHeaders, 'authorization')
  const presigned = params.some(([name]) => name === 'X-Amz-Algorithm' || name === 'X-Amz-Credential')
  if (authorization !== undefined && (presigned || params.some(([name]) => name === 'X-Amz-Signature'))) {
    throw new SigV4Error('InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified', 'two_auth_mechanisms')
  }
  if (authorization === undefined && !presigned) {
    if (params.some(([name]) => name === 'AWSAccessKeyId' || name === 'Signature')) {
      throw new SigV4Error('InvalidRequest', UNSUPPORTED, 'sigv2_query')
    }
    throw new SigV4Error('AccessDenied', 'Access Denied', 'no_signature')
  }
  const parts = authorization !== undefined ? fromHeader(authorization, req.rawHeaders, now) : fromQuery(params, now)

  // Scope: <key>/<yyyymmdd>/<region>/s3/aws4_request, the date matching the request's.
  const [accessKeyId, scopeDate, region, service, terminator, ...extra] = parts.credential.split('/')
  const malformed = authorization !== undefined ? 'AuthorizationHeaderMalformed' : 'AuthorizationQueryParametersError'
  if (accessKeyId === undefined || accessKeyId === '' || terminator !== 'aws4_request' || extra.length > 0 || scopeDate === undefined || region === undefined || service === undefined) {
    throw new SigV4Error(malformed, 'The authorization credential is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".', 'bad_credential')
  }
  if (!ACCESS_KEY_ID.test(accessKeyId)) {
    throw new SigV4Error(malformed, 'The access key id is malformed; expecting 3-128 letters, digits, ".", "_" or "-".', 'bad_access_key_id')
  }
  if (scopeDate !== parts.amzDate.slice(0, 8)) {
    throw new SigV4Error(malformed, `Invalid credential date "${scopeDate}". This date is not the same as X-Amz-Date: "${parts.amzDate.slice(0, 8)}".`, 'scope_date')
  }
  if (region !== options.region) {
    throw new SigV4Error(malformed, `The authorization header is malformed; the region '${region}' is wrong; expecting '${options.region}'`, 'wrong_region')
  }
  if (service !== 's3') {
    throw new SigV4Error(malformed, `The authorization header is malformed; incorrect service "${service}". This endpoint belongs to "s3".`, 'wrong_service')
  }

  const signedHeaders = parts.signedHeaders.split(';')
  if (!signedHeaders.includes('host')) {
    throw new SigV4Error(malformed, 'The host header must be signed.', 'host_not_signed')
  }
  if (signedHeaders.some((h, i) => h === '' || h !== h.toLowerCase() || (i > 0 && (signedHeaders[i - 1] as string) >= h))) {
    throw new SigV4Error(malformed, 'SignedHeaders must be lower case, sorted and without repeats.', 'bad_signed_headers')
  }
  const sessionToken = parts.sessionToken
  const canonicalHeaders: string[] = []
  for (const name of signedHeaders) {
    const value = allValues(req.rawHeaders, name)
    if (value === undefined) {
      throw new SigV4Error('AccessDenied', `There were headers present in the signature that were not in the request: ${name}`, 'signed_header_missing')
    }
    canonicalHeaders.push(`${name}:${value}\n`)
  }

  const canonicalRequest = [
    req.method,
    rawPath === '' ? '/' : rawPath,
    canonicalQuery(params, parts.excludeFromQuery),
    canonicalHeaders.join(''),
    parts.signedHeaders,
    parts.payloadHash,
  ].join('\n')
  const stringToSign = [ALGORITHM, parts.amzDate, `${scopeDate}/${region}/${service}/aws4_request`, sha256Hex(canonicalRequest)].join('\n')

  const known = options.secretOf(accessKeyId, sessionToken)
  const secret = known ?? DUMMY_SECRET
  const key = options.keys === undefined ? signingKey(secret, scopeDate, region, service) : options.keys.get(accessKeyId, known, scopeDate, region, service)
  const expected = Buffer.from(createHmac('sha256', key).update(stringToSign).digest('hex'))
  const given = Buffer.from(parts.signature)
  // Same length as the hex digest, so the comparison itself never short-cuts.
  // The signature's length is no secret; equal lengths are compared in constant time.
  const same = given.length === expected.length && timingSafeEqual(given, expected)
  if (!same || known === undefined) {
    throw new SigV4Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', known === undefined ? 'unknown_access_key' : 'bad_signature')
  }
  return { accessKeyId, sessionToken, presigned: authorization === undefined }
}

interface AuthParts {
  credential: string
  signedHeaders: string
  signature: string
  /** The request time in ISO 8601 basic format (20240101T000000Z). */
  amzDate: string
  payloadHash: string
  sessionToken: string | undefined
  /** Query parameters left out of the canonical query (the presigned signature). */
  excludeFromQuery: string | undefined
}

function fromHeader(authorization: string, rawHeaders: readonly string[], now: number): AuthParts {
  const space = authorization.indexOf(' ')
  const algorithm = space === -1 ? authorization : authorization.slice(0, space)
  if (algorithm !== ALGORITHM) {
    // SigV2 ("AWS key:sig"), SigV4A (AWS4-ECDSA-P256-SHA256) or anything else.
    throw new SigV4Error('InvalidRequest', UNSUPPORTED, algorithm === 'AWS' ? 'sigv2' : 'unsupported_algorithm')
  }
  const fields = new Map<string, string>()
  for (const part of authorization.slice(space + 1).split(',')) {
    const item = part.trim()
    const eq = item.indexOf('=')
    if (eq > 0) fields.set(item.slice(0, eq), item.slice(eq + 1))
  }
  const credential = fields.get('Credential')
  const signedHeaders = fields.get('SignedHeaders')
  const signature = fields.get('Signature')
  if (credential === undefined || signedHeaders === undefined || signature === undefined || fields.size !== 3) {
    throw new SigV4Error('AuthorizationHeaderMalformed', 'The authorization header is malformed; it must have Credential, SignedHeaders and Signature.', 'bad_authorization')
  }
  const amzDate = headerDate(rawHeaders)
  checkSkew(amzDate, now)
  const payloadHash = headerOf(rawHeaders, 'x-amz-content-sha256')
  if (payloadHash === undefined) {
    throw new SigV4Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256', 'no_content_sha256')
  }
  checkPayload(payloadHash)
  return { credential, signedHeaders, signature, amzDate, payloadHash, sessionToken: headerOf(rawHeaders, 'x-amz-security-token'), excludeFromQuery: undefined }
}

function fromQuery(params: readonly (readonly [string, string])[], now: number): AuthParts {
  const get = (name: string): string | undefined => params.find(([n]) => n === name)?.[1]
  const algorithm = get('X-Amz-Algorithm')
  if (algorithm !== ALGORITHM) {
    if (algorithm !== undefined && algorithm !== '') throw new SigV4Error('InvalidRequest', UNSUPPORTED, 'unsupported_algorithm')
    throw new SigV4Error('AuthorizationQueryParametersError', 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"', 'bad_algorithm')
  }
  const credential = get('X-Amz-Credential')
  const signedHeaders = get('X-Amz-SignedHeaders')
  const signature = get('X-Amz-Signature')
  const amzDate = get('X-Amz-Date')
  const expires = get('X-Amz-Expires')
  if (credential === undefined || signedHeaders === undefined || signature === undefined || amzDate === undefined || expires === undefined) {
    throw new SigV4Error('AuthorizationQueryParametersError', 'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.', 'missing_query_parameter')
  }
  const time = parseAmzDate(amzDate)
  if (time === undefined) {
    throw new SigV4Error('AuthorizationQueryParametersError', 'X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"', 'bad_date')
  }
  if (!/^\d{1,7}$/.test(expires) || Number(expires) < 1) {
    throw new SigV4Error('AuthorizationQueryParametersError', 'X-Amz-Expires should be a number', 'bad_expires')
  }
  if (Number(expires) > MAX_PRESIGNED_SECONDS) {
    throw new SigV4Error('AuthorizationQueryParametersError', 'X-Amz-Expires must be less than a week (in seconds) that is 604800', 'expires_too_long')
  }
  if (time - now > MAX_SKEW_MS) {
    throw new SigV4Error('AccessDenied', 'Request is not valid yet', 'not_yet_valid')
  }
  if (now > time + Number(expires) * 1000) {
    throw new SigV4Error('AccessDenied', 'Request has expired', 'expired')
  }
  // A presigned URL signs no payload, unless the signer put a hash in the query (or a signed header).
  const payloadHash = params.find(([n]) => n.toLowerCase() === 'x-amz-content-sha256')?.[1] ?? UNSIGNED_PAYLOAD
  checkPayload(payloadHash)
  return { credential, signedHeaders, signature, amzDate, payloadHash, sessionToken: get('X-Amz-Security-Token'), excludeFromQuery: 'X-Amz-Signature' }
}

function checkPayload(hash: string): void {
  if (hash === UNSIGNED_PAYLOAD || hash === EMPTY_SHA256) return
  if (hash.startsWith('STREAMING-')) {
    throw new SigV4Error('NotImplemented', `Streaming payloads (${hash}) are not accepted: this endpoint is read-only.`, 'streaming_payload')
  }
  throw new SigV4Error('InvalidRequest', 'A read request carries no payload: x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the hash of the empty string.', 'payload_hash')
}

/** The request date from x-amz-date, or from Date (RFC 1123) for clients that sign with it. */
function headerDate(rawHeaders: readonly string[]): string {
  const amz = headerOf(rawHeaders, 'x-amz-date')
  if (amz !== undefined) {
    if (parseAmzDate(amz) === undefined) {
      throw new SigV4Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header', 'bad_date')
    }
    return amz
  }
  const date = headerOf(rawHeaders, 'date')
  const ms = date === undefined ? NaN : Date.parse(date)
  if (Number.isNaN(ms)) {
    throw new SigV4Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header', 'no_date')
  }
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')
}

function checkSkew(amzDate: string, now: number): void {
  const time = parseAmzDate(amzDate) as number
  if (Math.abs(time - now) > MAX_SKEW_MS) {
    throw new SigV4Error('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', 'clock_skew')
  }
}

function parseAmzDate(value: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value)
  if (m === null) return undefined
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]))
  return Number.isNaN(ms) ? undefined : ms
}

/** The raw query as name/value pairs, still encoded as the client sent them. */
function parseQuery(rawQuery: string): [string, string][] {
  const out: [string, string][] = []
  if (rawQuery === '') return out
  for (const pair of rawQuery.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const name = decode(eq === -1 ? pair : pair.slice(0, eq))
    const value = eq === -1 ? '' : decode(pair.slice(eq + 1))
    out.push([name, value])
  }
  return out
}

function decode(text: string): string {
  if (!text.includes('%')) return text
  try {
    return decodeURIComponent(text)
  } catch {
    throw new SigV4Error('InvalidArgument', 'The query string has a malformed percent-encoding.', 'bad_query_encoding')
  }
}

/** Sorted, each name and value encoded as SigV4 wants (RFC 3986 unreserved kept, `+` as %2B). */
function canonicalQuery(params: readonly (readonly [string, string])[], exclude: string | undefined): string {
  const encoded: [string, string][] = []
  for (const [name, value] of params) {
    if (name !== exclude) encoded.push([uriEncode(name), uriEncode(value)])
  }
  // By encoded name, then encoded value, in code point order.
  encoded.sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
  return encoded.map(([name, value]) => `${name}=${value}`).join('&')
}

export function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest()
  const kRegion = createHmac('sha256', kDate).update(region).digest()
  const kService = createHmac('sha256', kRegion).update(service).digest()
  return createHmac('sha256', kService).update('aws4_request').digest()
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** One header's value (the first), as sent. */
function headerOf(rawHeaders: readonly string[], lowerCaseName: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === lowerCaseName) return rawHeaders[i + 1] as string
  }
  return undefined
}

/** Every value of a header, trimmed, inner runs of spaces collapsed, joined with ',' (SigV4). */
function allValues(rawHeaders: readonly string[], lowerCaseName: string): string | undefined {
  let joined: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== lowerCaseName) continue
    const value = (rawHeaders[i + 1] as string).trim().replace(/\s+/g, ' ')
    joined = joined === undefined ? value : `${joined},${value}`
  }
  return joined
}
