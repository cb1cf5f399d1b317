// cors: answers OPTIONS (preflights from the bucket's `cors` config, plain OPTIONS with Allow)
// without authentication, since browsers never send credentials on a preflight; adds
// Access-Control-* headers to every other response of an allowed origin, errors included, so a
// browser app can read a 401 or 404.
import type { MiddlewareHandler } from 'hono'
import { ProxyError } from '../errors.ts'
import { ALLOWED_METHODS, corsResponseHeaders, preflightHeaders } from '../http/cors.ts'
import type { AppEnv } from '../types.ts'

export function cors(): MiddlewareHandler<AppEnv> {
  return async function cors(c, next) {
    const policy = c.get('route').bucket.cors
    const origin = c.req.header('origin')
    if (c.req.method === 'OPTIONS') {
      const requestMethod = c.req.header('access-control-request-method')
      if (origin !== undefined && requestMethod !== undefined) {
        const headers =
          policy === null
            ? undefined
            : preflightHeaders(policy, origin, requestMethod, c.req.header('access-control-request-headers'))
        if (headers === undefined) throw new ProxyError('GUARD_CORS_REJECTED')
        return new Response(null, { status: 204, headers })
      }
      const headers: Record<string, string> = { allow: ALLOWED_METHODS }
      if (policy !== null && origin !== undefined) Object.assign(headers, corsResponseHeaders(policy, origin))
      return new Response(null, { status: 204, headers })
    }

    await next()

    if (policy === null || origin === undefined) return
    const headers = corsResponseHeaders(policy, origin)
    if (headers === undefined) return
    for (const [name, value] of Object.entries(headers)) {
      if (name === 'vary') c.res.headers.append(name, value)
      else c.res.headers.set(name, value)
    }
  }
}
