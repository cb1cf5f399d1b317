// TokenVerifier over jose. Finds the token in the configured sources (first hit wins), rejects
// malformed, oversized and key-carrying tokens before any key work, verifies the signature against
// an explicit algorithm allow-list (so `alg: none` and HS-vs-RS confusion never verify), checks
// exp/nbf with clock skew, issuer, audience and required claims, then the claim rules.
// 401 = no usable token (RFC 6750 WWW-Authenticate); 403 = a valid token that the rules refuse.
import { createHmac, hash, createPublicKey, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto'
import {
  decodeProtectedHeader,
  errors,
  jwtVerify,
  UnsecuredJWT,
  type JWSHeaderParameters,
  type JWTClaimVerificationOptions,
  type JWTPayload,
} from 'jose'
import { LRUCache } from 'lru-cache'
import type { JwtAlgorithm, JwtVerifierConfig, TokenSource } from '../config/schema.ts'
import { ProxyError } from '../errors.ts'
import type { TokenCarrier, TokenVerifier } from '../ports.ts'
import type { Principal } from '../types.ts'
import { failedRule } from './claims.ts'
import { JwksUnavailable, RemoteKeySet } from './jwks.ts'
import { keyInScope, scopePrefixes } from './path-scope.ts'

/** Tokens larger than this are refused unread (a JWT is a few hundred bytes to a few KiB). */
export const MAX_TOKEN_LENGTH = 8192
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
const FORBIDDEN_HEADER_PARAMS = ['jwk', 'jku', 'x5u', 'x5c'] as const
const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i

function invalidToken(reason: string, cause?: unknown): ProxyError {
  return new ProxyError('AUTH_TOKEN_INVALID', {
    reason,
    cause,
    headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
  })
}

export interface FoundToken {
  token: string
  source: TokenSource['type']
}

export function findToken(request: TokenCarrier, sources: readonly TokenSource[]): FoundToken | undefined {
  for (const source of sources) {
    let token: string | undefined
    switch (source.type) {
      case 'bearer':
        token = BEARER.exec(request.header('authorization') ?? '')?.[1]
        break
      case 'header': {
        const value = request.header(source.name)
        if (value === undefined) break
        if (source.prefix === undefined) token = value.trim()
        else if (value.toLowerCase().startsWith(source.prefix.toLowerCase())) {
          token = value.slice(source.prefix.length).trim()
        }
        break
      }
      case 'query':
        token = request.query(source.name)
        break
      case 'cookie':
        token = request.cookie(source.name)
        break
    }
    if (token !== undefined && token !== '') return { token, source: source.type }
  }
  return undefined
}

type KeyResolver = Parameters<typeof jwtVerify>[1]

interface VerifiedToken {
  subject: string | undefined
  claims: Readonly<Record<string, unknown>>
  keyId: string | undefined
  /** Epoch ms after which the cached verification must not be reused. */
  until: number
}

export class JwtVerifier implements TokenVerifier {
  readonly #config: JwtVerifierConfig
  readonly #key: KeyResolver
  readonly #keyIds: ReadonlyMap<string, JwtAlgorithm> | undefined
  /** The HMAC key for a header, when the token is HS*: verified with node:crypto (see #verifyHmac). */
  readonly #hmacKey: (header: Record<string, unknown>) => KeyObject | undefined
  readonly #verified: LRUCache<string, VerifiedToken> | undefined

  constructor(config: JwtVerifierConfig) {
    this.#config = config
    const key = config.key
    switch (key.kind) {
      case 'secret': {
        const secret = createSecretKey(key.secret)
        this.#key = secret
        this.#hmacKey = () => secret
        break
      }
      case 'public_key':
        this.#key = createPublicKey(key.pem)
        this.#hmacKey = () => undefined
        break
      case 'keys': {
        const byId = new Map(
          key.keys.map((k) => [k.id, k.secret === undefined ? createPublicKey(k.pem as string) : createSecretKey(k.secret)])
        )
        this.#keyIds = new Map(key.keys.map((k) => [k.id, k.algorithm]))
        this.#key = (header: JWSHeaderParameters) => byId.get(header.kid as string) as KeyObject
        this.#hmacKey = (header) => {
          const found = byId.get(header.kid as string)
          return found?.type === 'secret' ? found : undefined
        }
        break
      }
      case 'jwks':
        this.#key = new RemoteKeySet(key.jwks).getKey
        this.#hmacKey = () => undefined
        break
    }
    this.#verified =
      config.token_cache_size > 0 ? new LRUCache({ max: config.token_cache_size }) : undefined
  }

  authenticate(request: TokenCarrier, key: string): Principal | Promise<Principal> {
    const found = findToken(request, this.#config.token_sources)
    if (found === undefined) {
      throw new ProxyError('AUTH_TOKEN_MISSING', { reason: 'missing', headers: { 'www-authenticate': 'Bearer' } })
    }
    const { token } = found
    if (token.length > MAX_TOKEN_LENGTH) throw invalidToken('oversized')
    // Keyed by a digest: the cache never holds a usable token.
    const cacheKey = this.#verified === undefined ? undefined : hash('sha256', token, 'base64url')
    const cached = cacheKey === undefined ? undefined : this.#verified?.get(cacheKey)
    if (cached !== undefined && cached.until > Date.now()) return this.#principal(cached, key, found.source)
    if (cached !== undefined) this.#verified?.delete(cacheKey as string)
    return this.#verify(token).then((verified) => {
      if (cacheKey !== undefined) this.#verified?.set(cacheKey, verified)
      return this.#principal(verified, key, found.source)
    })
  }

  /** An S3 API credential's claims, held to this bucket's claim rules and path scope. */
  admitClaims(claims: Readonly<Record<string, unknown>>, key: string | undefined): void {
    const failed = failedRule(this.#config.claims, claims)
    if (failed !== undefined) throw new ProxyError('AUTHZ_DENIED', { reason: `claim:${failed.claim}` })
    if (key !== undefined) this.#inScope(claims, key)
  }

  /**
   * For a listing: undefined when this bucket has no path scope, else the literal prefixes the
   * claims' scope covers (a listing scans only those) and the same per-key check a GET gets.
   */
  listScope(claims: Readonly<Record<string, unknown>>): { prefixes: readonly string[]; admits(key: string): boolean } | undefined {
    const scopeClaim = this.#config.path_scope_claim
    if (scopeClaim === undefined) return undefined
    const scope = claims[scopeClaim]
    return { prefixes: scopePrefixes(scope), admits: (key) => scope !== undefined && keyInScope(key, scope) }
  }

  #inScope(claims: Readonly<Record<string, unknown>>, key: string): void {
    const scopeClaim = this.#config.path_scope_claim
    if (scopeClaim === undefined) return
    const scope = claims[scopeClaim]
    if (scope === undefined) throw new ProxyError('AUTHZ_DENIED', { reason: 'path_scope_missing' })
    if (!keyInScope(key, scope)) throw new ProxyError('AUTHZ_DENIED', { reason: 'path_scope' })
  }

  /** The principal of a verified token, if its path scope covers `key`. */
  #principal(verified: VerifiedToken, key: string, source: FoundToken['source']): Principal {
    this.#inScope(verified.claims, key)
    return { subject: verified.subject, claims: verified.claims, keyId: verified.keyId, tokenSource: source }
  }

  /** Signature, registered claims and claim rules; the result is safe to cache until `until`. */
  async #verify(token: string): Promise<VerifiedToken> {
    if (!COMPACT_JWS.test(token)) throw invalidToken('malformed')
    let header: Record<string, unknown>
    try {
      header = decodeProtectedHeader(token) as Record<string, unknown>
    } catch (err) {
      throw invalidToken('malformed', err)
    }
    if (FORBIDDEN_HEADER_PARAMS.some((p) => header[p] !== undefined)) throw invalidToken('embedded_key')
    if (typeof header.alg !== 'string' || !(this.#config.algorithms as string[]).includes(header.alg)) {
      throw invalidToken('alg_not_allowed')
    }
    if (this.#keyIds !== undefined) {
      const algorithm = typeof header.kid === 'string' ? this.#keyIds.get(header.kid) : undefined
      if (algorithm === undefined) throw invalidToken('unknown_kid')
      if (algorithm !== header.alg) throw invalidToken('alg_not_allowed')
    }

    const claimChecks = {
      issuer: this.#config.issuer,
      audience: this.#config.audience,
      clockTolerance: this.#config.clock_skew_seconds,
      requiredClaims: this.#config.require_exp ? ['exp', ...this.#config.required_claims] : this.#config.required_claims,
    }
    let payload: JWTPayload
    const hmacKey = HMAC_HASH[header.alg] === undefined ? undefined : this.#hmacKey(header)
    try {
      payload =
        hmacKey !== undefined
          ? verifyHmac(token, header, hmacKey, claimChecks)
          : (await jwtVerify(token, this.#key as Uint8Array, { algorithms: this.#config.algorithms, ...claimChecks }))
              .payload
    } catch (err) {
      if (err instanceof ProxyError) throw err
      throw invalidToken(joseReason(err), err)
    }

    const now = Date.now()
    const maxLifetime = this.#config.max_token_lifetime_seconds
    if (maxLifetime !== undefined) {
      // Measured from the earlier of iat and now: a token cannot shorten its lifetime by claiming
      // to be issued in the future.
      const nowSeconds = Math.floor(now / 1000)
      const issued = Math.min(payload.iat ?? nowSeconds, nowSeconds)
      if (payload.exp === undefined || payload.exp - issued > maxLifetime) throw invalidToken('lifetime_too_long')
    }

    const failed = failedRule(this.#config.claims, payload)
    if (failed !== undefined) throw new ProxyError('AUTHZ_DENIED', { reason: `claim:${failed.claim}` })

    const cacheLimit = now + this.#config.token_cache_ttl_seconds * 1000
    const until = payload.exp === undefined ? cacheLimit : Math.min(cacheLimit, payload.exp * 1000)
    return { subject: payload.sub, claims: payload, keyId: typeof header.kid === 'string' ? header.kid : undefined, until }
  }
}

const HMAC_HASH: Readonly<Record<string, string>> = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }
const UNSECURED_HEADER = Buffer.from('{"alg":"none"}').toString('base64url')

/**
 * HS* tokens: the MAC is checked with node:crypto (a few microseconds, where WebCrypto's async
 * verify costs tens), compared in constant time; the claims set is then validated by jose's own
 * validator (exp, nbf, iss, aud, required claims), reached through UnsecuredJWT.decode on the
 * verified payload. The algorithm was already checked against the allow-list.
 */
function verifyHmac(
  token: string,
  header: Record<string, unknown>,
  key: KeyObject,
  claimChecks: JWTClaimVerificationOptions
): JWTPayload {
  if (header.crit !== undefined || header.b64 !== undefined) throw invalidToken('malformed')
  const first = token.indexOf('.')
  const last = token.lastIndexOf('.')
  const expected = createHmac(HMAC_HASH[header.alg as string] as string, key).update(token.slice(0, last)).digest()
  const given = Buffer.from(token.slice(last + 1), 'base64url')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalidToken('bad_signature')
  return UnsecuredJWT.decode(`${UNSECURED_HEADER}.${token.slice(first + 1, last)}.`, claimChecks).payload
}

function joseReason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'expired'
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'not_yet_valid'
    if (err.claim === 'iss') return 'wrong_issuer'
    if (err.claim === 'aud') return 'wrong_audience'
    return `claim_${err.reason}:${err.claim}`
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature'
  if (err instanceof errors.JOSEAlgNotAllowed) return 'alg_not_allowed'
  if (err instanceof errors.JWKSNoMatchingKey) return 'unknown_kid'
  if (err instanceof JwksUnavailable || err instanceof errors.JWKSTimeout) return 'jwks_unavailable'
  if (err instanceof errors.JOSEError) return 'malformed'
  return 'unverifiable'
}
