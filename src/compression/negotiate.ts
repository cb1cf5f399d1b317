// Which content coding an answer gets: what this runtime can produce, whether an object is
// compressed at all, and the best coding a request's Accept-Encoding allows (RFC 9110 §12.5.3,
// §12.4.2 for q-values). Pure functions, no I/O.
import * as zlib from 'node:zlib'
import type { CompressionConfig, CompressionEncoding } from '../config/representations-schema.ts'

/** Node added zstd to node:zlib in 23.8 / 22.15; older runtimes cannot produce it. */
export const ZSTD_AVAILABLE = typeof (zlib as { zstdCompress?: unknown }).zstdCompress === 'function'

/** The encodings this runtime can produce, in the configured order (zstd only where node:zlib has it). */
export function supportedEncodings(configured: readonly CompressionEncoding[]): CompressionEncoding[] {
  return configured.filter((encoding) => encoding !== 'zstd' || ZSTD_AVAILABLE)
}

/** An Accept-Encoding value parsed: the weight of each coding named, `*`'s weight if present. */
export interface AcceptedCodings {
  /** Lower-case coding -> q (0 to 1). The first element naming a coding wins. */
  codings: ReadonlyMap<string, number>
  /** q of `*`, or undefined when `*` is not listed. */
  star: number | undefined
}

// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/
// token = 1*tchar
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Parses an Accept-Encoding value. An element that does not parse (not a token, a q that is not a
 * qvalue) is dropped rather than guessed at: an unreadable preference never selects a coding.
 */
export function parseAcceptEncoding(value: string): AcceptedCodings {
  const codings = new Map<string, number>()
  let star: number | undefined
  for (const element of value.split(',')) {
    const [rawCoding = '', ...params] = element.split(';')
    const coding = rawCoding.trim().toLowerCase()
    if (coding === '' || !TOKEN.test(coding)) continue
    let q = 1
    let valid = true
    for (const param of params) {
      const eq = param.indexOf('=')
      const name = (eq === -1 ? param : param.slice(0, eq)).trim().toLowerCase()
      if (name !== 'q') continue // other parameters carry no preference
      const raw = eq === -1 ? '' : param.slice(eq + 1).trim()
      if (!QVALUE.test(raw)) {
        valid = false
        break
      }
      q = Number(raw)
    }
    if (!valid) continue
    // RFC 9110 §8.4.1.1: x-gzip is gzip.
    const name = coding === 'x-gzip' ? 'gzip' : coding
    if (name === '*') star ??= q
    else if (!codings.has(name)) codings.set(name, q)
  }
  return { codings, star }
}

// The same few Accept-Encoding strings arrive over and over (one per browser release); parsing is
// cached by the raw value. The map is bounded and simply emptied when full, because the key is
// client-controlled: a client sending a new value each time costs a parse, never memory.
const PARSED_LIMIT = 512
const parsed = new Map<string, AcceptedCodings>()

function accepted(value: string): AcceptedCodings {
  let result = parsed.get(value)
  if (result === undefined) {
    if (parsed.size >= PARSED_LIMIT) parsed.clear()
    result = parseAcceptEncoding(value)
    parsed.set(value, result)
  }
  return result
}

/**
 * The best of `offered` (in the configured order) that Accept-Encoding allows; undefined: send the
 * identity bytes.
 *
 * - The highest q wins; equal q: the first in `offered` (the configured order).
 * - `*` gives its q to every coding not listed by name; `q=0` refuses a coding.
 * - identity (§12.5.3): acceptable unless refused, so a coding is chosen only when its q is at least
 *   identity's. identity's q is its own element's, else `*`'s, else it is acceptable at the lowest
 *   preference (never preferred over a coding the client listed). When identity is refused too
 *   (`identity;q=0`, or `*;q=0`) and no offered coding is acceptable, undefined still means identity:
 *   the RFC lets the server send it rather than fail, as nginx and every CDN do.
 * - No Accept-Encoding at all: identity. The RFC allows any coding then, but clients that send no
 *   Accept-Encoding (plain curl, wget, scripts, health checks) expect the bytes as stored and would
 *   write a compressed body to disk.
 * - An empty value means "no coding wanted" (§12.5.3): identity.
 */
export function chooseEncoding(
  acceptEncoding: string | undefined,
  offered: readonly CompressionEncoding[]
): CompressionEncoding | undefined {
  if (acceptEncoding === undefined || offered.length === 0) return undefined
  const { codings, star } = accepted(acceptEncoding)
  let best: CompressionEncoding | undefined
  let bestQ = 0
  for (const encoding of offered) {
    const q = codings.get(encoding) ?? star ?? 0
    if (q > bestQ) {
      best = encoding
      bestQ = q
    }
  }
  if (best === undefined) return undefined
  const identityQ = codings.get('identity') ?? star
  return identityQ !== undefined && identityQ > bestQ ? undefined : best
}

/** The media type without parameters, lower case: `Text/HTML; charset=utf-8` -> `text/html`. */
export function mediaType(contentType: string): string {
  const semi = contentType.indexOf(';')
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
}

/** Whether a media type matches one of `types` (lower case, as normalizeCompression keeps them; `text/*` wildcards). */
export function typeListed(types: readonly string[], type: string): boolean {
  const slash = type.indexOf('/')
  if (slash <= 0 || slash === type.length - 1) return false
  const wildcard = `${type.slice(0, slash)}/*`
  return types.some((t) => t === type || t === wildcard)
}

/**
 * Whether an object is compressed at all: its media type matches `types` (`text/*` wildcards;
 * parameters like charset ignored), its size is at least `min_size`, and it has no Content-Encoding
 * of its own (a stored `.js.gz` with `Content-Encoding: gzip` is served as it is, never twice
 * encoded; `identity` is no encoding).
 */
export function compressible(
  cfg: CompressionConfig,
  meta: { contentType: string | undefined; size: number; contentEncoding: string | undefined }
): boolean {
  if (meta.contentType === undefined || meta.size < cfg.min_size) return false
  const encoding = meta.contentEncoding?.trim().toLowerCase()
  if (encoding !== undefined && encoding !== '' && encoding !== 'identity') return false
  return typeListed(cfg.types, mediaType(meta.contentType))
}
