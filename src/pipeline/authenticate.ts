// authenticate: for a bucket with auth, the request must carry a token its verifier accepts
// (401 otherwise) that passes the bucket's claim rules (403). Public buckets skip this stage's work.
// Sets `principal` (null for public buckets).
import type { MiddlewareHandler } from 'hono'
import { getCookie } from 'hono/cookie'
import { ProxyError } from '../errors.ts'
import type { TokenCarrier } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { AppEnv } from '../types.ts'

export interface AuthenticateOptions {
  metrics: Metrics | undefined
}

export function authenticate(options: AuthenticateOptions): MiddlewareHandler<AppEnv> {
  const { metrics } = options
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
    const bucket = c.get('route').bucket.name
    let principal
    try {
      principal = await verifier.authenticate(carrier, c.get('route').key)
    } catch (err) {
      if (metrics !== undefined && err instanceof ProxyError) {
        metrics.authResults.inc({ bucket, result: err.status === 401 ? 'invalid' : 'denied', reason: err.reason ?? err.code })
      }
      throw err
    }
    metrics?.authResults.inc({ bucket, result: 'ok', reason: 'ok' })
    c.set('principal', principal)
    await next()
  }
}
