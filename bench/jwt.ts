// Token verification cost, in-process: a fresh HS256 token (signature + claims) versus a token the
// verifier has already seen (verified-token cache). Targets: fresh < 50 us, cached < 5 us.
import { SignJWT } from 'jose'
import { JwtVerifier } from '../src/auth/jwt.ts'
import type { JwtVerifierConfig } from '../src/config/schema.ts'
import type { TokenCarrier } from '../src/ports.ts'

const SECRET = new TextEncoder().encode('bench-secret-that-is-long-enough-for-hs256')

function config(cacheSize: number): JwtVerifierConfig {
  return {
    algorithms: ['HS256'],
    key: { kind: 'secret', secret: SECRET },
    token_sources: [{ type: 'bearer' }],
    claims: [{ claim: 'role', operator: 'equals', value: 'reader' }],
    issuer: undefined,
    audience: undefined,
    required_claims: [],
    require_exp: true,
    clock_skew_seconds: 30,
    max_token_lifetime_seconds: undefined,
    path_scope_claim: undefined,
    token_cache_size: cacheSize,
    token_cache_ttl_seconds: 300,
  }
}

const carrier = (token: string): TokenCarrier => {
  const authorization = `Bearer ${token}`
  return { header: (name) => (name === 'authorization' ? authorization : undefined), query: () => undefined, cookie: () => undefined }
}

async function perOp(n: number, run: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < Math.min(n, 2000); i++) await run(i) // warm-up
  const started = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    // A cached token is answered without a promise, as the pipeline sees it.
    const result = run(i)
    if (result instanceof Promise) await result
  }
  return Number(process.hrtime.bigint() - started) / n / 1000
}

export async function benchJwt(runs: number): Promise<{ freshUs: number; cachedUs: number }> {
  const n = 20_000
  const tokens = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      new SignJWT({ role: 'reader', n: i }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(SECRET)
    )
  )
  const carriers = tokens.map(carrier)
  const fresh: number[] = []
  const cached: number[] = []
  for (let r = 0; r < runs; r++) {
    const uncached = new JwtVerifier(config(0))
    fresh.push(await perOp(n, (i) => uncached.authenticate(carriers[i] as TokenCarrier, 'doc.txt')))
    const caching = new JwtVerifier(config(10_000))
    const one = carriers[0] as TokenCarrier
    cached.push(await perOp(n * 5, () => caching.authenticate(one, 'doc.txt')))
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? 0
  return { freshUs: median(fresh), cachedUs: median(cached) }
}
