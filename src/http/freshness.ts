// Caching decisions from Cache-Control (RFC 9111) and the Cache-Control the proxy sends onward.

export interface StoragePolicy {
  /** False for `no-store` and `private`: such objects are never cached by the proxy. */
  store: boolean
  /** How long a stored copy is fresh: the bucket's TTL, capped by s-maxage / max-age; 0 for no-cache. */
  freshMs: number
}

function directives(cacheControl: string | undefined): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>()
  for (const part of (cacheControl ?? '').split(',')) {
    const [name, value] = part.trim().split('=', 2)
    if (name) out.set(name.toLowerCase(), value?.replace(/^"|"$/g, ''))
  }
  return out
}

export function storagePolicy(cacheControl: string | undefined, ttlSeconds: number): StoragePolicy {
  const d = directives(cacheControl)
  if (d.has('no-store') || d.has('private')) return { store: false, freshMs: 0 }
  if (d.has('no-cache')) return { store: true, freshMs: 0 }
  const limit = Number(d.get('s-maxage') ?? d.get('max-age'))
  const seconds = Number.isFinite(limit) && limit >= 0 ? Math.min(ttlSeconds, limit) : ttlSeconds
  return { store: true, freshMs: seconds * 1000 }
}

/**
 * The Cache-Control a client or CDN receives. A bucket's `cdn_cache_control` wins; otherwise a
 * bucket that requires auth marks every response `private` (keeping the object's max-age for the
 * browser), so a shared cache in front never serves a private object to everyone; a public bucket
 * passes the object's own.
 */
export function outgoingCacheControl(
  objectCacheControl: string | undefined,
  requiresAuth: boolean,
  configured: string | undefined
): string | undefined {
  if (configured !== undefined) return configured
  if (!requiresAuth) return objectCacheControl
  if (objectCacheControl === undefined) return 'private'
  const kept = [...directives(objectCacheControl)]
    .filter(([name]) => name !== 'public' && name !== 's-maxage' && name !== 'private')
    .map(([name, value]) => (value === undefined ? name : `${name}=${value}`))
  return ['private', ...kept].join(', ')
}
