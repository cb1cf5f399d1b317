// TokenVerifier over jose. Finds the token in the configured sources (first hit wins), rejects
// malformed, oversized and key-carrying tokens before any key work, verifies the signature against
// an explicit algorithm allow-list (so `alg: none` and HS-vs-RS confusion never verify), checks
// exp/nbf with clock skew, issuer, audience and required claims, then the claim rules.
// 401 = no usable token (RFC 6750 WWW-Authenticate); 403 = a valid token that the rules refuse.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose'
import type { JwtVerifierConfig, TokenSource } from '../config/schema.ts'
import { ProxyError } from '../errors.ts'
import type { TokenCarrier, TokenVerifier } from '../ports.ts'
import type { Principal } from '../types.ts'
import { failedRule } from './claims.ts'

/** Tokens larger than this are refused unread (a JWT is a few hundred bytes to a few KiB). */
export const MAX_TOKEN_LENGTH = 8192
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
const FORBIDDEN_HEADER_PARAMS = ['jwk', 'jku', 'x5u', 'x5c'] as const
const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i

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

export class JwtVerifier implements TokenVerifier {
  readonly #config: JwtVerifierConfig
  readonly #key: Uint8Array | KeyObject

  constructor(config: JwtVerifierConfig) {
    this.#config = config
    this.#key = config.key.kind === 'secret' ? config.key.secret : createPublicKey(config.key.pem)
  }

  async authenticate(request: TokenCarrier): Promise<Principal> {
    const found = findToken(request, this.#config.token_sources)
    // A token in the URL must not leak to third parties through the Referer header.
    const extra: Record<string, string> = found?.source === 'query' ? { 'referrer-policy': 'no-referrer' } : {}
    if (found === undefined) {
      throw new ProxyError('AUTH_TOKEN_MISSING', {
        reason: 'missing',
        headers: { ...extra, 'www-authenticate': 'Bearer' },
      })
    }
    const invalid = (reason: string, cause?: unknown) =>
      new ProxyError('AUTH_TOKEN_INVALID', {
        reason,
        cause,
        headers: { ...extra, 'www-authenticate': 'Bearer error="invalid_token"' },
      })

    const { token } = found
    if (token.length > MAX_TOKEN_LENGTH) throw invalid('oversized')
    if (!COMPACT_JWS.test(token)) throw invalid('malformed')
    let header: Record<string, unknown>
    try {
      header = decodeProtectedHeader(token) as Record<string, unknown>
    } catch (err) {
      throw invalid('malformed', err)
    }
    if (FORBIDDEN_HEADER_PARAMS.some((p) => header[p] !== undefined)) throw invalid('embedded_key')
    if (typeof header.alg !== 'string' || !(this.#config.algorithms as string[]).includes(header.alg)) {
      throw invalid('alg_not_allowed')
    }

    let payload: JWTPayload
    try {
      const result = await jwtVerify(token, this.#key, {
        algorithms: this.#config.algorithms,
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        clockTolerance: this.#config.clock_skew_seconds,
        requiredClaims: this.#config.require_exp
          ? ['exp', ...this.#config.required_claims]
          : this.#config.required_claims,
      })
      payload = result.payload
    } catch (err) {
      throw invalid(joseReason(err), err)
    }

    const maxLifetime = this.#config.max_token_lifetime_seconds
    if (maxLifetime !== undefined) {
      const now = Math.floor(Date.now() / 1000)
      if (payload.exp === undefined || payload.exp - (payload.iat ?? now) > maxLifetime) {
        throw invalid('lifetime_too_long')
      }
    }

    const failed = failedRule(this.#config.claims, payload)
    if (failed !== undefined) {
      throw new ProxyError('AUTHZ_DENIED', { reason: `claim:${failed.claim}`, headers: extra })
    }
    return { subject: payload.sub, claims: payload, tokenSource: found.source }
  }
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
  if (err instanceof errors.JOSEError) return 'malformed'
  return 'unverifiable'
}
