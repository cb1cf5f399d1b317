// cors: answers OPTIONS (preflights from the bucket's `cors` config, plain OPTIONS with Allow)
// without authentication, since browsers never send credentials on a preflight; adds
// Access-Control-* headers to every other response of an allowed origin, errors included, so a
// browser app can read a 401 or 404.
import type { Context } from 'hono'
import { ProxyError } from '../errors.ts'
import { ALLOWED_METHODS, corsResponseHeaders, preflightHeaders } from '../http/cors.ts'
import type { AppEnv } from '../types.ts'
import { requestHeader } from './request-target.ts'

/** The answer to an OPTIONS request, or undefined for any other method. */
export function corsPreflight(c: Context<AppEnv>): Response | undefined {
  if (c.req.method !== 'OPTIONS') return undefined
  const policy = c.get('route').bucket.cors
  const origin = requestHeader(c, 'origin')
  const requestMethod = requestHeader(c, 'access-control-request-method')
  if (origin !== undefined && requestMethod !== undefined) {
    const headers =
      policy === null ? undefined : preflightHeaders(policy, origin, requestMethod, requestHeader(c, 'access-control-request-headers'))
    if (headers === undefined) throw new ProxyError('GUARD_CORS_REJECTED')
    return new Response(null, { status: 204, headers })
  }
  const headers: Record<string, string> = { allow: ALLOWED_METHODS }
  if (policy !== null && origin !== undefined) Object.assign(headers, corsResponseHeaders(policy, origin))
  return new Response(null, { status: 204, headers })
}

/** Adds the bucket's Access-Control-* headers to a response for an allowed origin. */
export function corsDecorate(c: Context<AppEnv>, res: Response): void {
  const policy = c.get('route')?.bucket.cors
  if (policy === null || policy === undefined) return
  const origin = requestHeader(c, 'origin')
  if (origin === undefined) return
  const headers = corsResponseHeaders(policy, origin)
  if (headers === undefined) return
  for (const [name, value] of Object.entries(headers)) {
    if (name === 'vary') res.headers.append(name, value)
    else res.headers.set(name, value)
  }
}
