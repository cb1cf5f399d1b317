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
 * A request header, read from the headers Node already parsed (lower-case name; a repeated header
 * joined with commas, or its first value for single-valued ones such as Authorization). Hono's
 * `c.req.header()` validates and looks up the name again on every call. Under `app.request()`
 * (no socket) it reads the Request's headers.
 */
export function requestHeader(c: Context<AppEnv>, lowerCaseName: string): string | undefined {
  const headers = c.env?.incoming?.headers
  if (headers === undefined) return c.req.header(lowerCaseName)
  const value = headers[lowerCaseName]
  return typeof value === 'string' ? value : undefined
}
