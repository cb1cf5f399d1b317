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
