// Path-scoped tokens: a claim lists the object keys a token may read, relative to the bucket.
// A pattern ending in `/` is a prefix (`videos/course-7/`); `*` matches within one path segment,
// `**` across segments (`videos/course-7/*.mp4`, `reports/**`); anything else must match exactly.
// Keys reach this check decoded and free of `.`/`..` segments, so a prefix cannot be escaped.

const compiled = new Map<string, RegExp>()
const MAX_COMPILED = 1000

export function keyInScope(key: string, scope: unknown): boolean {
  const patterns = typeof scope === 'string' ? [scope] : Array.isArray(scope) ? scope : []
  for (const pattern of patterns) {
    if (typeof pattern !== 'string' || pattern === '') continue
    if (!pattern.includes('*')) {
      if (pattern.endsWith('/') ? key.startsWith(pattern) : key === pattern) return true
      continue
    }
    if (patternRegExp(pattern).test(key)) return true
  }
  return false
}

function patternRegExp(pattern: string): RegExp {
  let re = compiled.get(pattern)
  if (re === undefined) {
    const source = pattern
      .split('**')
      .map((part) => part.split('*').map(escape).join('[^/]*'))
      .join('.*')
    re = new RegExp(`^${source}$`, 'u')
    if (compiled.size >= MAX_COMPILED) compiled.clear()
    compiled.set(pattern, re)
  }
  return re
}

function escape(text: string): string {
  return text.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * The literal prefixes every key in `scope` starts with (what a listing must scan): a prefix
 * pattern itself, an exact key itself, a wildcard pattern up to its first `*`. Nested ones are
 * dropped, so the result is sorted and its ranges do not overlap; empty when nothing is in scope.
 */
export function scopePrefixes(scope: unknown): string[] {
  const patterns = typeof scope === 'string' ? [scope] : Array.isArray(scope) ? scope : []
  const literals = patterns
    .filter((p): p is string => typeof p === 'string' && p !== '')
    .map((p) => (p.includes('*') ? p.slice(0, p.indexOf('*')) : p))
    .sort()
  const out: string[] = []
  for (const literal of literals) if (!out.some((p) => literal.startsWith(p))) out.push(literal)
  return out
}
