// authenticate: for a bucket with auth, the request must carry a token its verifier accepts
// (401 otherwise) that passes the bucket's claim rules (403). Public buckets skip this stage's work.
// Sets `principal` (null for public buckets).
import type { MiddlewareHandler } from 'hono'
import { getCookie } from 'hono/cookie'
import type { TokenCarrier } from '../ports.ts'
import type { AppEnv } from '../types.ts'

export function authenticate(): MiddlewareHandler<AppEnv> {
  return async function authenticate(c, next) {
    const verifier = c.get('route').bucket.verifier
    if (verifier === null) {
      c.set('principal', null)
      return next()
    }
    const carrier: TokenCarrier = {
      header: (name) => c.req.header(name),
      query: (name) => c.req.query(name),
      cookie: (name) => getCookie(c, name),
    }
    const principal = await verifier.authenticate(carrier, c.get('route').key)
    c.set('principal', principal)
    await next()
  }
}
