import assert from 'node:assert/strict'
import { it } from 'node:test'
import { SignJWT } from 'jose'
import type { JwtVerifierConfig } from '../config/schema.ts'
import { ProxyError } from '../errors.ts'
import { JwtVerifier } from './jwt.ts'

const secret = new TextEncoder().encode('unit-test-secret-that-is-long-enough-for-hs256')
const config: JwtVerifierConfig = {
  algorithms: ['HS256'],
  key: { kind: 'secret', secret },
  token_sources: [{ type: 'bearer' }],
  claims: [],
  issuer: undefined,
  audience: undefined,
  required_claims: [],
  require_exp: true,
  clock_skew_seconds: 30,
  max_token_lifetime_seconds: 3600,
  path_scope_claim: undefined,
  token_cache_size: 0,
  token_cache_ttl_seconds: 300,
}
const carrier = (token: string) => ({ header: (n: string) => (n === 'authorization' ? `Bearer ${token}` : undefined), query: () => undefined, cookie: () => undefined })

it('refuses a token valid for longer than max_token_lifetime_seconds, even with a future iat', async () => {
  const verifier = new JwtVerifier(config)
  const now = Math.floor(Date.now() / 1000)
  const ok = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now).setExpirationTime(now + 1800).sign(secret)
  assert.equal((await verifier.authenticate(carrier(ok), 'k')).tokenSource, 'bearer')
  const farFuture = now + 10 * 365 * 86400
  const sneaky = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(farFuture - 60).setExpirationTime(farFuture).sign(secret)
  await assert.rejects(async () => verifier.authenticate(carrier(sneaky), 'k'), (err) => err instanceof ProxyError && err.reason === 'lifetime_too_long')
})
