// route: longest path-prefix match on whole segments -> {bucket, key}. Each raw segment is
// percent-decoded exactly once; the decoded key is what every later stage sees (auth, S3).
// `/assets` matches `/assets/a.png`, never `/assets-private/a.png`; `%2F` inside a segment is part
// of the key, never a prefix boundary.
import { ProxyError } from '../errors.ts'
import { decodeSegments, isSafeKey, rawPathOf } from '../http/path.ts'
import type { BucketRoute } from '../types.ts'
import type { Exchange, Stage } from './exchange.ts'

export interface RouteOptions {
  buckets: readonly BucketRoute[]
}

/** Segments are joined with NUL for lookup: NUL cannot survive the safety check, `/` can. */
const JOIN = '\0'

export function route(options: RouteOptions): Stage {
  const byPrefix = new Map<string, BucketRoute>()
  // The same prefixes as written (`a/b`), for paths with nothing percent-encoded.
  const byPlainPrefix = new Map<string, BucketRoute>()
  let maxDepth = 0
  for (const bucket of options.buckets) {
    const segments = bucket.prefix.slice(1).split('/')
    byPrefix.set(segments.join(JOIN), bucket)
    byPlainPrefix.set(bucket.prefix.slice(1), bucket)
    maxDepth = Math.max(maxDepth, segments.length)
  }

  /** A path with no `%` (most requests): raw and decoded are the same text, nothing to split. */
  const routePlain = (x: Exchange, rawPath: string): void => {
    if (rawPath.charCodeAt(0) !== 47 /* / */) throw new ProxyError('GUARD_BAD_PATH', { reason: 'bad_encoding' })
    const path = rawPath.slice(1)
    if (!isSafeKey(path)) throw new ProxyError('GUARD_BAD_PATH', { reason: 'traversal' })
    // Every prefix depth, shallow to deep: the deepest match wins.
    let bucket: BucketRoute | undefined
    let prefixEnd = -1
    let slash = path.indexOf('/')
    for (let depth = 1; depth <= maxDepth; depth++) {
      const end = slash === -1 ? path.length : slash
      const match = byPlainPrefix.get(path.slice(0, end))
      if (match !== undefined) {
        bucket = match
        prefixEnd = end
      }
      if (slash === -1) break
      slash = path.indexOf('/', slash + 1)
    }
    if (bucket === undefined) throw new ProxyError('ROUTE_NOT_FOUND')
    const key = path.slice(prefixEnd + 1)
    if (key === '') throw new ProxyError('ROUTE_NO_KEY')
    x.route = { bucket, key }
  }

  return function route(x) {
    const rawPath = rawPathOf(x.target)
    if (rawPath.indexOf('%') === -1) return routePlain(x, rawPath)
    const segments = decodeSegments(rawPath)
    if (segments === undefined) throw new ProxyError('GUARD_BAD_PATH', { reason: 'bad_encoding' })
    if (!isSafeKey(segments.join('/'))) throw new ProxyError('GUARD_BAD_PATH', { reason: 'traversal' })

    for (let depth = Math.min(maxDepth, segments.length); depth >= 1; depth--) {
      const bucket = byPrefix.get(depth === 1 ? (segments[0] as string) : segments.slice(0, depth).join(JOIN))
      if (bucket === undefined) continue
      const key = segments.slice(depth).join('/')
      if (key === '') throw new ProxyError('ROUTE_NO_KEY')
      x.route = { bucket, key }
      return
    }
    throw new ProxyError('ROUTE_NOT_FOUND')
  }
}
