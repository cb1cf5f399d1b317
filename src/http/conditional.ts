// Conditional requests (RFC 9110 §13), evaluated by the proxy against the object's own validators
// whatever the backend does with them. Order of §13.2.2: If-Match, If-Unmodified-Since,
// If-None-Match, If-Modified-Since; If-Range decides separately whether a Range applies.

export interface Validators {
  /** Quoted entity tag (`"x"` or `W/"x"`). */
  etag: string | undefined
  lastModified: Date | undefined
}

export interface ConditionalHeaders {
  ifMatch: string | undefined
  ifNoneMatch: string | undefined
  ifModifiedSince: string | undefined
  ifUnmodifiedSince: string | undefined
}

export type PreconditionOutcome = 'proceed' | 'not-modified' | 'failed'

export function evaluatePreconditions(h: ConditionalHeaders, v: Validators): PreconditionOutcome {
  if (h.ifMatch !== undefined) {
    if (!matchesList(h.ifMatch, v.etag, strongMatch)) return 'failed'
  } else if (h.ifUnmodifiedSince !== undefined) {
    const since = parseHttpDate(h.ifUnmodifiedSince)
    const modified = lastModifiedSeconds(v)
    if (since !== undefined && modified !== undefined && modified > since) return 'failed'
  }
  if (h.ifNoneMatch !== undefined) {
    if (matchesList(h.ifNoneMatch, v.etag, weakMatch)) return 'not-modified'
  } else if (h.ifModifiedSince !== undefined) {
    const since = parseHttpDate(h.ifModifiedSince)
    const modified = lastModifiedSeconds(v)
    if (since !== undefined && modified !== undefined && modified <= since) return 'not-modified'
  }
  return 'proceed'
}

/** True when a Range may be honoured: no If-Range, or it still names the current representation. */
export function ifRangeAllows(ifRange: string | undefined, v: Validators): boolean {
  if (ifRange === undefined) return true
  const value = ifRange.trim()
  if (value.startsWith('"') || value.startsWith('W/"')) {
    return v.etag !== undefined && strongMatch(value, v.etag)
  }
  const date = parseHttpDate(value)
  const modified = lastModifiedSeconds(v)
  return date !== undefined && modified !== undefined && date === modified
}

/** Milliseconds since the epoch at whole seconds, or undefined for an invalid HTTP-date. */
export function parseHttpDate(value: string): number | undefined {
  const ms = Date.parse(value)
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000) * 1000
}

function lastModifiedSeconds(v: Validators): number | undefined {
  return v.lastModified === undefined ? undefined : Math.floor(v.lastModified.getTime() / 1000) * 1000
}

function matchesList(
  header: string,
  etag: string | undefined,
  compare: (a: string, b: string) => boolean
): boolean {
  if (header.trim() === '*') return true
  if (etag === undefined) return false
  for (const candidate of splitEntityTags(header)) {
    if (compare(candidate, etag)) return true
  }
  return false
}

/** Splits a comma-separated entity-tag list; commas inside quotes belong to the tag. */
export function splitEntityTags(header: string): string[] {
  const tags: string[] = []
  let current = ''
  let quoted = false
  for (const ch of header) {
    if (ch === '"') quoted = !quoted
    if (ch === ',' && !quoted) {
      if (current.trim() !== '') tags.push(current.trim())
      current = ''
    } else {
      current += ch
    }
  }
  if (current.trim() !== '') tags.push(current.trim())
  return tags
}

function isWeak(tag: string): boolean {
  return tag.startsWith('W/')
}

function opaque(tag: string): string {
  return isWeak(tag) ? tag.slice(2) : tag
}

function weakMatch(a: string, b: string): boolean {
  return opaque(a) === opaque(b)
}

function strongMatch(a: string, b: string): boolean {
  return !isWeak(a) && !isWeak(b) && a === b
}

/** Backends differ in whether they quote ETags; clients always see a quoted one. */
export function quoteEtag(etag: string | undefined): string | undefined {
  if (etag === undefined || etag === '') return undefined
  if (etag.startsWith('"') || etag.startsWith('W/"')) return etag
  return `"${etag}"`
}
