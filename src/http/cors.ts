// CORS (Fetch standard): headers for actual responses and answers to preflight requests, from a
// bucket's `cors` config. Origins are compared exactly; `*` allows any origin without credentials.
import type { CorsConfig } from '../config/schema.ts'
import type { HeaderRecord } from './headers.ts'

export const ALLOWED_METHODS = 'GET, HEAD, OPTIONS'

function allowedOrigin(cors: CorsConfig, origin: string): string | undefined {
  if (cors.allowed_origins.includes(origin)) return origin
  if (cors.allowed_origins.includes('*')) return '*'
  return undefined
}

/** Headers for a response to a request carrying `Origin`, or undefined when it is not allowed. */
export function corsResponseHeaders(cors: CorsConfig, origin: string): HeaderRecord | undefined {
  const allowed = allowedOrigin(cors, origin)
  if (allowed === undefined) return undefined
  const h: HeaderRecord = { 'access-control-allow-origin': allowed }
  if (allowed !== '*') h.vary = 'Origin'
  if (cors.allow_credentials) h['access-control-allow-credentials'] = 'true'
  if (cors.expose_headers.length > 0) h['access-control-expose-headers'] = cors.expose_headers.join(', ')
  return h
}

/** Headers for a successful preflight, or undefined when origin, method or headers are not allowed. */
export function preflightHeaders(
  cors: CorsConfig,
  origin: string,
  requestMethod: string,
  requestHeaders: string | undefined
): HeaderRecord | undefined {
  const allowed = allowedOrigin(cors, origin)
  if (allowed === undefined) return undefined
  if (requestMethod !== 'GET' && requestMethod !== 'HEAD') return undefined
  const asked = (requestHeaders ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '')
  const anyHeader = cors.allowed_headers.includes('*')
  const permitted = new Set(cors.allowed_headers.map((s) => s.toLowerCase()))
  if (!anyHeader && asked.some((name) => !permitted.has(name))) return undefined
  const h: HeaderRecord = {
    'access-control-allow-origin': allowed,
    'access-control-allow-methods': ALLOWED_METHODS,
    'access-control-max-age': String(cors.max_age_seconds),
    vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
  }
  if (asked.length > 0) h['access-control-allow-headers'] = asked.join(', ')
  if (cors.allow_credentials) h['access-control-allow-credentials'] = 'true'
  return h
}
