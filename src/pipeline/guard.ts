// guard: request-level refusals before any routing work: a missing, repeated or malformed Host
// (RFC 9112 §3.2), methods other than GET/HEAD/OPTIONS (read-only proxy), request targets that are
// not a path (absolute form, `*`) or have a backslash in the path, targets over `max_uri_length`,
// and request bodies.
import { ProxyError } from '../errors.ts'
import { ALLOWED_METHODS } from '../http/cors.ts'
import { hostProblemOf } from '../http/host.ts'
import { rawPathOf } from '../http/path.ts'
import type { Stage } from './exchange.ts'

export interface GuardOptions {
  maxUriLength: number
}

/** A refused request may still be sending a body: the connection closes rather than read it. */
const CLOSE = { connection: 'close' }

export function guard(options: GuardOptions): Stage {
  const { maxUriLength } = options
  return function guard(x) {
    const host = hostProblemOf(x.incoming)
    if (host !== undefined) throw new ProxyError('GUARD_BAD_HOST', { reason: host, headers: CLOSE })
    const method = x.method
    if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') {
      throw new ProxyError('GUARD_METHOD_NOT_ALLOWED', { headers: { allow: ALLOWED_METHODS, ...CLOSE } })
    }
    const target = x.target
    if (target.charCodeAt(0) !== 47 /* / */ || rawPathOf(target).includes('\\')) throw new ProxyError('GUARD_BAD_REQUEST', { reason: 'bad_target' })
    if (target.length > maxUriLength) throw new ProxyError('GUARD_URI_TOO_LONG')
    const length = x.header('content-length')
    if ((length !== undefined && length !== '0') || x.header('transfer-encoding') !== undefined) {
      throw new ProxyError('GUARD_BODY_NOT_ALLOWED', { headers: CLOSE })
    }
  }
}

