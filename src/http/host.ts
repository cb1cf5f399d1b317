// The Host header field (RFC 9112 §3.2): a request carries at most one, an HTTP/1.1 request exactly
// one, and its value is `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3.2.3: a reg-name, which covers
// IPv4 addresses, or a bracketed IPv6 / IPvFuture literal). A server MUST answer anything else
// with 400. Checked on every request, so written as loops over char codes: no regex (nothing to
// backtrack), no allocation for the usual `name` or `name:port`.
import { isIPv6 } from 'node:net'

/** Why a request's Host is refused (the access log's `reason`). */
export type HostProblem = 'missing_host' | 'duplicate_host' | 'bad_host'

/**
 * What is wrong with the Host of a request, from its raw header list (Node keeps only the first of
 * two Host headers in `headers`); undefined when nothing is. `required`: HTTP/1.1 or later.
 */
export function hostProblem(rawHeaders: readonly string[], required: boolean): HostProblem | undefined {
  let value: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length !== 4 || !isHostName(name)) continue
    if (value !== undefined) return 'duplicate_host'
    value = rawHeaders[i + 1] as string
  }
  if (value === undefined) return required ? 'missing_host' : undefined
  return isValidHost(value) ? undefined : 'bad_host'
}

/** `host` in any case, by char code (no lower-cased copy). */
function isHostName(name: string): boolean {
  return (
    (name.charCodeAt(0) | 32) === 104 &&
    (name.charCodeAt(1) | 32) === 111 &&
    (name.charCodeAt(2) | 32) === 115 &&
    (name.charCodeAt(3) | 32) === 116
  )
}

/**
 * `uri-host [ ":" port ]` with a non-empty host: RFC 3986 allows an empty reg-name, but an http(s)
 * URI never has one (RFC 9110 §4.2.1), so neither does a Host an origin server accepts. The port
 * is up to five digits, at most 65535; empty, as RFC 3986's `*DIGIT` allows.
 */
export function isValidHost(value: string): boolean {
  const length = value.length
  let end: number
  if (value.charCodeAt(0) === 91 /* [ */) {
    const close = value.indexOf(']')
    if (close === -1 || !isIpLiteral(value, 1, close)) return false
    end = close + 1
  } else {
    end = regNameEnd(value)
    if (end <= 0) return false
  }
  if (end === length) return true
  return value.charCodeAt(end) === 58 /* : */ && isPort(value, end + 1)
}

/** unreserved and sub-delims (RFC 3986 §2.2-2.3): the characters a reg-name may hold as they are. */
const REG_NAME = new Uint8Array(128)
const REG_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="
for (const c of REG_NAME_CHARS) REG_NAME[c.charCodeAt(0)] = 1

/** The end of the reg-name at the start of `value` (at `:` or the end), or -1 if it is not one. */
function regNameEnd(value: string): number {
  const length = value.length
  let i = 0
  while (i < length) {
    const c = value.charCodeAt(i)
    if (c === 58 /* : */) return i
    if (c === 37 /* % */) {
      if (!isHex(value.charCodeAt(i + 1)) || !isHex(value.charCodeAt(i + 2))) return -1
      i += 3
    } else if (c < 128 && REG_NAME[c] === 1) {
      i++
    } else {
      return -1
    }
  }
  return i
}

/** Between the brackets: an IPv6 address without a zone, or `v<hex>.<unreserved / sub-delims / :>`. */
function isIpLiteral(value: string, start: number, end: number): boolean {
  if (end <= start) return false
  if ((value.charCodeAt(start) | 32) !== 118 /* v */) {
    // isIPv6 also accepts a zone (`%eth0`), which the Host grammar does not.
    const address = value.slice(start, end)
    return !address.includes('%') && isIPv6(address)
  }
  let i = start + 1
  while (i < end && isHex(value.charCodeAt(i))) i++
  if (i === start + 1 || i >= end - 1 || value.charCodeAt(i) !== 46 /* . */) return false
  for (i++; i < end; i++) {
    const c = value.charCodeAt(i)
    if (c !== 58 && (c >= 128 || REG_NAME[c] !== 1)) return false
  }
  return true
}

function isPort(value: string, start: number): boolean {
  const digits = value.length - start
  if (digits > 5) return false
  let port = 0
  for (let i = start; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 48 || c > 57) return false
    port = port * 10 + (c - 48)
  }
  return port <= 65535
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 32) >= 97 && (c | 32) <= 102)
}

/** `hostProblem` of a request as Node parsed it: a Host is required from HTTP/1.1 on. */
export function hostProblemOf(request: {
  readonly rawHeaders: readonly string[]
  readonly httpVersionMajor: number
  readonly httpVersionMinor: number
}): HostProblem | undefined {
  return hostProblem(request.rawHeaders, request.httpVersionMajor > 1 || request.httpVersionMinor >= 1)
}
