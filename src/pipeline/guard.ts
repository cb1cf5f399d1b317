// guard: request-level refusals before any routing work: methods other than GET/HEAD/OPTIONS
// (read-only proxy), request targets over `max_uri_length`, and request bodies.
import { ProxyError } from '../errors.ts'
import { ALLOWED_METHODS } from '../http/cors.ts'
import type { Stage } from '../types.ts'
import { requestHeader, requestTarget } from './request-target.ts'

export interface GuardOptions {
  maxUriLength: number
}

export function guard(options: GuardOptions): Stage {
  const { maxUriLength } = options
  return function guard(c) {
    const method = c.req.method
    if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') {
      throw new ProxyError('GUARD_METHOD_NOT_ALLOWED', { headers: { allow: ALLOWED_METHODS } })
    }
    if (requestTarget(c).length > maxUriLength) throw new ProxyError('GUARD_URI_TOO_LONG')
    const length = requestHeader(c, 'content-length')
    if ((length !== undefined && length !== '0') || requestHeader(c, 'transfer-encoding') !== undefined) {
      throw new ProxyError('GUARD_BODY_NOT_ALLOWED')
    }
  }
}
