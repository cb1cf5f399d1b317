// Facts about the request as it arrived. The raw request target as the client sent it. Node's URL parsing would already have resolved
// `..` segments and decoded parts of the path; routing must see the original bytes.
import type { Context } from 'hono'
import type { AppEnv } from '../types.ts'

export function requestTarget(c: Context<AppEnv>): string {
  const raw = c.env?.incoming?.url
  if (raw !== undefined) return raw
  const url = c.req.url
  return url.slice(url.indexOf('/', url.indexOf('//') + 2))
}

/** The client's address as observe resolved it (see http/client-address.ts). */
export function clientIp(c: Context<AppEnv>): string {
  return c.get('clientIp') ?? ''
}

/**
 * A request header, read from the headers Node already parsed (Hono's `c.req.header()` validates
 * and looks up the name again on every call). A repeated header is joined with commas, as HTTP
 * defines, including the ones Node keeps only the first of: two Authorization headers must not
 * authenticate with the first (the joined value is not a valid credential). Under `app.request()`
 * (no socket) it reads the Request's headers.
 */
export function requestHeader(c: Context<AppEnv>, lowerCaseName: string): string | undefined {
  const incoming = c.env?.incoming
  if (incoming === undefined) return c.req.header(lowerCaseName)
  const value = incoming.headers[lowerCaseName]
  if (typeof value !== 'string') return undefined
  return FIRST_ONLY.has(lowerCaseName) ? allValues(incoming.rawHeaders, lowerCaseName) : value
}

/** The request headers Node keeps only the first of, among those the proxy reads. */
const FIRST_ONLY = new Set(['authorization', 'content-length', 'if-modified-since', 'if-unmodified-since', 'referer', 'user-agent'])

function allValues(rawHeaders: readonly string[], lowerCaseName: string): string | undefined {
  let joined: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length !== lowerCaseName.length || name.toLowerCase() !== lowerCaseName) continue
    const value = rawHeaders[i + 1] as string
    joined = joined === undefined ? value : `${joined}, ${value}`
  }
  return joined
}
