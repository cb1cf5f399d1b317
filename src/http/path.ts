// Request-target parsing (RFC 3986): the raw path is split into segments and each segment is
// percent-decoded exactly once, so `%2F` becomes a `/` inside a key (as S3 itself reads it) and a
// `%252F` stays a literal `%2F`. Decoded `.`/`..` segments, backslashes and NULs are refused: the key
// that is authorized must be the key that is fetched.

/** The path part of a request target (`/a/b?x=1` -> `/a/b`), still percent-encoded. */
export function rawPathOf(target: string): string {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  const hash = path.indexOf('#')
  return hash === -1 ? path : path.slice(0, hash)
}

/** Decoded segments of a raw path, or undefined when the encoding is malformed. */
export function decodeSegments(rawPath: string): string[] | undefined {
  if (rawPath.charCodeAt(0) !== 47 /* / */) return undefined
  const raw = rawPath.slice(1).split('/')
  const out = new Array<string>(raw.length)
  for (let i = 0; i < raw.length; i++) {
    const segment = raw[i] as string
    if (segment.indexOf('%') === -1) {
      out[i] = segment
      continue
    }
    try {
      out[i] = decodeURIComponent(segment)
    } catch {
      return undefined
    }
  }
  return out
}

/** True when a decoded key stays inside its bucket: no `.`/`..` segment, backslash or NUL. */
export function isSafeKey(key: string): boolean {
  if (key.includes('\\') || key.includes('\0')) return false
  // Segment by segment, without splitting (this runs on every request).
  let start = 0
  for (;;) {
    const slash = key.indexOf('/', start)
    const end = slash === -1 ? key.length : slash
    const length = end - start
    if (key.charCodeAt(start) === 46 /* . */ && (length === 1 || (length === 2 && key.charCodeAt(start + 1) === 46))) return false
    if (slash === -1) return true
    start = slash + 1
  }
}
