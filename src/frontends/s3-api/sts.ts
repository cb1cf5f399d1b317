// AssumeRoleWithWebIdentity on the S3 listener: a JWT exchanged for temporary S3 credentials, as
// AWS STS answers it (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html),
// so `aws sts assume-role-with-web-identity --endpoint-url`, boto3 and the SDKs use it unchanged.
//
// The request is `POST /` with a form-encoded body (what the clients send, unsigned), or the same
// parameters in the query of a GET or POST. The one request body the S3 listener reads is this
// form, at most MAX_FORM_BYTES. The token is verified by the configured jwt block (signature, exp,
// issuer, audience, claim rules); the credentials live at most `max_duration_seconds` and never
// past the token's own exp. Errors are STS's `ErrorResponse` XML.
import { ProxyError, isProxyError, type ErrorCode } from '../../errors.ts'
import { hostProblemOf } from '../../http/host.ts'
import { rawPathOf } from '../../http/path.ts'
import type { TokenVerifier } from '../../ports.ts'
import type { Answer } from '../../types.ts'
import type { Exchange } from '../../pipeline/exchange.ts'
import { expectationOf } from './request.ts'
import type { SessionSealer } from './session-token.ts'
import { elements } from './xml.ts'

/** The exchange's live parts, built per generation by runtime.ts. */
export interface StsRuntime {
  sealer: SessionSealer
  /** Verifies the exchanged tokens (no path scope: that applies per bucket, per request). */
  verifier: TokenVerifier
  /** The buckets without auth: any temporary credential may name them. */
  open: ReadonlySet<string>
  /**
   * The buckets with auth whose tokens come from the same issuer and keys as the exchanged ones:
   * a credential may name one only if that bucket's own verifier (required claims, lifetime,
   * algorithms, ...) accepted the exchanged token; its claim rules then decide per request.
   */
  checked: readonly StsBucket[]
  maxDurationSeconds: number
}

export interface StsBucket {
  name: string
  /** The bucket's verifier, without its path scope (that applies per key, per request). */
  verifier: TokenVerifier
  /** The bucket's `max_token_lifetime_seconds`: a credential opening it lives no longer. */
  maxLifetimeSeconds: number | undefined
}

export const MAX_FORM_BYTES = 64 * 1024
const NS = 'https://sts.amazonaws.com/doc/2011-06-15/'
const VERSION = '2011-06-15'
/** AWS's shortest role session. */
const MIN_DURATION_SECONDS = 900
const DEFAULT_DURATION_SECONDS = 3600
const ACCOUNT = '000000000000'

/** An STS refusal: the code, status and message the client sees, a reason for the logs. */
export class StsError extends Error {
  readonly code: string
  readonly status: number
  readonly reason: string
  readonly type: 'Sender' | 'Receiver'
  constructor(code: string, status: number, message: string, reason: string) {
    super(message)
    this.name = 'StsError'
    this.code = code
    this.status = status
    this.reason = reason
    this.type = status >= 500 ? 'Receiver' : 'Sender'
  }
}

const invalid = (message: string, reason: string) => new StsError('ValidationError', 400, message, reason)

/**
 * Whether a request to the S3 listener is an STS call: `POST /` with a form body, or `/` with an
 * `Action` query parameter (a plain `GET /` is ListBuckets).
 */
export function isStsRequest(x: Exchange): boolean {
  const path = rawPathOf(x.target)
  if (path !== '/') return false
  if (x.method === 'POST' && /^application\/x-www-form-urlencoded\b/i.test(x.header('content-type') ?? '')) return true
  return (x.method === 'GET' || x.method === 'POST') && /[?&]Action=/.test(x.target)
}

export interface StsOptions {
  sts: StsRuntime
  maxUriLength: number
}

export function stsExchange(options: StsOptions): (x: Exchange) => Promise<Answer> {
  const { sts, maxUriLength } = options
  return async function stsExchange(x) {
    const host = hostProblemOf(x.incoming)
    if (host !== undefined) throw new ProxyError('GUARD_BAD_HOST', { reason: host, headers: { connection: 'close' } })
    if (x.target.length > maxUriLength) throw new ProxyError('GUARD_URI_TOO_LONG')
    if (expectationOf(x.header('expect'), x.incoming.httpVersion) === 'unmet') {
      throw new StsError('NotImplemented', 501, 'A header you provided implies functionality that is not implemented: Expect supports only 100-continue.', 'expectation')
    }
    const params = new URLSearchParams(x.target.slice(x.target.indexOf('?') + 1 || x.target.length))
    if (x.method === 'POST') for (const [name, value] of new URLSearchParams(await readForm(x))) params.set(name, value)

    const action = params.get('Action')
    if (action !== 'AssumeRoleWithWebIdentity') {
      throw new StsError('InvalidAction', 400, `Could not find operation ${action ?? '(none)'} for version ${params.get('Version') ?? VERSION}`, 'action')
    }
    const version = params.get('Version')
    if (version !== null && version !== VERSION) throw new StsError('InvalidAction', 400, `Could not find operation ${action} for version ${version}`, 'version')
    // A token file's trailing newline is sent as is by some clients (rclone's AWS SDK for Go
    // reads AWS_WEB_IDENTITY_TOKEN_FILE untrimmed); a JWT has no whitespace of its own.
    const token = required(params, 'WebIdentityToken').trim()
    const roleArn = required(params, 'RoleArn')
    const sessionName = required(params, 'RoleSessionName')
    if (!/^arn:[\w+=,.@/:-]{16,2044}$/.test(roleArn)) invalidMember('roleArn', 'Member must have length greater than or equal to 20 and be an ARN')
    if (!/^[\w+=,.@-]{2,64}$/.test(sessionName)) invalidMember('roleSessionName', 'Member must satisfy regular expression pattern: [\\w+=,.@-]*')
    const durationText = params.get('DurationSeconds')
    let duration = Math.min(DEFAULT_DURATION_SECONDS, sts.maxDurationSeconds)
    if (durationText !== null) {
      if (!/^\d{1,9}$/.test(durationText)) invalidMember('durationSeconds', 'Member must be a whole number')
      duration = Number(durationText)
      if (duration < MIN_DURATION_SECONDS) invalidMember('durationSeconds', `Member must have value greater than or equal to ${MIN_DURATION_SECONDS}`)
      if (duration > sts.maxDurationSeconds) {
        throw invalid(`The requested DurationSeconds exceeds the MaxSessionDuration set for this role (${sts.maxDurationSeconds}).`, 'duration_over_max')
      }
    }

    const claims = await verified(sts.verifier, token)
    // The buckets whose own token checks pass, as the HTTP path would hold this token to them.
    const opened: StsBucket[] = []
    for (const bucket of sts.checked) {
      if (await accepts(bucket.verifier, token)) opened.push(bucket)
    }
    const now = Math.floor(Date.now() / 1000)
    const exp = typeof claims.exp === 'number' ? claims.exp : undefined
    // Never past the token's own expiry (a token inside its clock-skew allowance has nothing left),
    // nor longer than the shortest token lifetime a bucket it opens allows.
    const bucketLimit = Math.min(...opened.map((b) => b.maxLifetimeSeconds ?? Infinity))
    const expiresAt = Math.min(now + duration, exp ?? Infinity, now + bucketLimit)
    if (expiresAt <= now) throw new StsError('ExpiredTokenException', 400, 'Token expired: current date/time is past the value of the exp claim.', 'token_expired')

    const { accessKeyId, secret, token: sessionToken } = sts.sealer.seal(claims, expiresAt, opened.map((b) => b.name))
    const subject = typeof claims.sub === 'string' ? claims.sub : ''
    const audience = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud
    const roleName = roleArn.slice(roleArn.lastIndexOf('/') + 1)
    const account = /^arn:[^:]+:iam::(\d{12}):/.exec(roleArn)?.[1] ?? ACCOUNT
    const body =
      `<AssumeRoleWithWebIdentityResponse xmlns="${NS}"><AssumeRoleWithWebIdentityResult>` +
      elements([
        ['SubjectFromWebIdentityToken', subject],
        ['Audience', typeof audience === 'string' ? audience : undefined],
      ]) +
      `<AssumedRoleUser>${elements([
        ['Arn', `arn:aws:sts::${account}:assumed-role/${roleName}/${sessionName}`],
        ['AssumedRoleId', `${accessKeyId.replace(/^ASIA/, 'AROA')}:${sessionName}`],
      ])}</AssumedRoleUser>` +
      `<Credentials>${elements([
        ['AccessKeyId', accessKeyId],
        ['SecretAccessKey', secret],
        ['SessionToken', sessionToken],
        ['Expiration', new Date(expiresAt * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')],
      ])}</Credentials>` +
      elements([['Provider', typeof claims.iss === 'string' ? claims.iss : undefined]]) +
      `</AssumeRoleWithWebIdentityResult><ResponseMetadata>${elements([['RequestId', x.requestId]])}</ResponseMetadata></AssumeRoleWithWebIdentityResponse>`
    return xmlAnswer(200, body)
  }
}

function required(params: URLSearchParams, name: string): string {
  const value = params.get(name)
  if (value === null || value === '') {
    const member = name.charAt(0).toLowerCase() + name.slice(1)
    throw invalid(`1 validation error detected: Value null at '${member}' failed to satisfy constraint: Member must not be null`, `missing:${name}`)
  }
  return value
}

function invalidMember(member: string, constraint: string): never {
  throw invalid(`1 validation error detected: Value at '${member}' failed to satisfy constraint: ${constraint}`, `bad:${member}`)
}

/** Whether a bucket's verifier accepts the token (any refusal: no). */
async function accepts(verifier: TokenVerifier, token: string): Promise<boolean> {
  const bearer = `Bearer ${token}`
  try {
    await verifier.authenticate({ header: (name) => (name === 'authorization' ? bearer : undefined), query: () => undefined, cookie: () => undefined }, '')
    return true
  } catch (err) {
    if (!isProxyError(err)) throw err
    return false
  }
}

/** The token's claims, or the STS error its refusal maps to. */
async function verified(verifier: TokenVerifier, token: string): Promise<Readonly<Record<string, unknown>>> {
  const bearer = `Bearer ${token}`
  try {
    const principal = await verifier.authenticate({ header: (name) => (name === 'authorization' ? bearer : undefined), query: () => undefined, cookie: () => undefined }, '')
    return principal.claims
  } catch (err) {
    if (!isProxyError(err)) throw err
    if (err.code === 'AUTHZ_DENIED') throw new StsError('AccessDenied', 403, 'Not authorized to perform sts:AssumeRoleWithWebIdentity', `token_refused:${err.reason ?? ''}`)
    if (err.reason === 'expired') throw new StsError('ExpiredTokenException', 400, 'Token expired: current date/time is past the value of the exp claim.', 'token_expired')
    if (err.reason === 'jwks_unavailable') throw new StsError('IDPCommunicationError', 400, 'The identity provider could not be reached to verify the token.', 'jwks_unavailable')
    throw new StsError('InvalidIdentityToken', 400, 'The web identity token that was passed could not be validated. Get a new identity token from the identity provider and try again.', `token_invalid:${err.reason ?? ''}`)
  }
}

/** The form body, at most MAX_FORM_BYTES (a larger one is refused unread). */
async function readForm(x: Exchange): Promise<string> {
  const length = x.header('content-length')
  if (length !== undefined && !(Number(length) <= MAX_FORM_BYTES)) {
    throw new StsError('RequestEntityTooLarge', 413, `The request body is larger than ${MAX_FORM_BYTES} bytes.`, 'form_too_large')
  }
  // A client waiting for 100 Continue (server.ts sends none by itself) is asked for the form now.
  if (expectationOf(x.header('expect'), x.incoming.httpVersion) === 'continue' && !x.outgoing.headersSent) x.outgoing.writeContinue()
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of x.incoming as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_FORM_BYTES) throw new StsError('RequestEntityTooLarge', 413, `The request body is larger than ${MAX_FORM_BYTES} bytes.`, 'form_too_large')
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size).toString('utf8')
}

function xmlAnswer(status: number, body: string): Answer {
  return {
    status,
    headers: { 'content-type': 'text/xml', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' },
    body,
  }
}

/** Any failure of an STS call as STS's ErrorResponse; the error kept on the exchange for the logs. */
export function stsFailed(x: Exchange, err: unknown, onInternal: (err: unknown) => void): Answer {
  let sts: StsError
  if (err instanceof StsError) {
    sts = err
    x.error = new ProxyError(logCodeOf(err), { reason: `${err.code}:${err.reason}` })
  } else {
    const error = isProxyError(err) ? err : new ProxyError('INTERNAL_ERROR', { cause: err })
    if (error.source === 'internal') onInternal(err)
    x.error = error
    sts = fromProxyError(error)
  }
  const body = `<ErrorResponse xmlns="${NS}"><Error>${elements([
    ['Type', sts.type],
    ['Code', sts.code],
    ['Message', sts.message],
  ])}</Error>${elements([['RequestId', x.requestId]])}</ErrorResponse>`
  const answer = xmlAnswer(sts.status, body)
  const headers: Record<string, string> = { ...answer.headers }
  const retryAfter = isProxyError(err) ? err.headers?.['retry-after'] : undefined
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter
  // A refused request may still be sending its form: the connection closes rather than read it.
  if (x.method === 'POST' && !x.incoming.complete) headers.connection = 'close'
  return { ...answer, headers }
}

function fromProxyError(error: ProxyError): StsError {
  if (error.code === 'GUARD_RATE_LIMITED' || error.code === 'GUARD_OVERLOADED') return new StsError('Throttling', 400, 'Rate exceeded', error.code)
  if (error.code === 'GUARD_IP_DENIED') return new StsError('AccessDenied', 403, 'Access denied', error.code)
  if (error.status >= 500) return new StsError('InternalFailure', 500, 'The request processing has failed because of an unknown error, exception or failure.', error.code)
  return invalid(error.message, error.code)
}

function logCodeOf(err: StsError): ErrorCode {
  if (err.code === 'InvalidIdentityToken' || err.code === 'ExpiredTokenException' || err.code === 'IDPCommunicationError') return 'AUTH_TOKEN_INVALID'
  if (err.code === 'AccessDenied') return 'AUTHZ_DENIED'
  if (err.status >= 500) return 'INTERNAL_ERROR'
  return 'GUARD_BAD_REQUEST'
}
