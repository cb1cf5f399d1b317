// cors: answers OPTIONS (preflights from the bucket's `cors` config, plain OPTIONS with Allow)
// without authentication, since browsers never send credentials on a preflight; adds
// Access-Control-* headers to every other response of an allowed origin, errors included, so a
// browser app can read a 401 or 404.
import { ProxyError } from '../errors.ts'
import { ALLOWED_METHODS, corsResponseHeaders, preflightHeaders } from '../http/cors.ts'
import type { Answer } from '../types.ts'
import type { Exchange } from './exchange.ts'

/** The answer to an OPTIONS request, or undefined for any other method. */
export function corsPreflight(x: Exchange): Answer | undefined {
  if (x.method !== 'OPTIONS') return undefined
  const policy = x.matched.bucket.cors
  const origin = x.header('origin')
  const requestMethod = x.header('access-control-request-method')
  if (origin !== undefined && requestMethod !== undefined) {
    const headers = policy === null ? undefined : preflightHeaders(policy, origin, requestMethod, x.header('access-control-request-headers'))
    if (headers === undefined) throw new ProxyError('GUARD_CORS_REJECTED')
    return { status: 204, headers, body: null }
  }
  const headers: Record<string, string> = { allow: ALLOWED_METHODS }
  if (policy !== null && origin !== undefined) Object.assign(headers, corsResponseHeaders(policy, origin))
  return { status: 204, headers, body: null }
}

/**
 * The answer with the bucket's Access-Control-* headers for an allowed origin (a new header
 * object: the answer's own may be shared by a cached object's answers).
 */
export function corsDecorate(x: Exchange, answer: Answer): Answer {
  const policy = x.route?.bucket.cors
  if (policy === null || policy === undefined) return answer
  const origin = x.header('origin')
  if (origin === undefined) return answer
  const cors = corsResponseHeaders(policy, origin)
  if (cors === undefined) return answer
  const headers: Record<string, string> = { ...answer.headers, ...cors }
  const vary = answer.headers.vary
  if (vary !== undefined && cors.vary !== undefined) headers.vary = `${vary}, ${cors.vary}`
  return { ...answer, headers }
}
