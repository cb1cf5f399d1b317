// What a listing may show a credential, and where it may scan: the credential's static prefixes
// and, on a bucket with a path scope, the scope its claims grant (the same check a GET gets). A
// scoped listing reads the backend only under the literal prefixes both allow, so keys outside
// them are never read, let alone shown.
import type { BucketRoute } from '../../types.ts'
import { mayReadKey, type S3Identity } from './credentials.ts'

export interface ListingScope {
  /** Whether some key is hidden from this identity (its tokens and markers must not name one). */
  scoped: boolean
  /** The backend prefixes to scan for a request prefix, sorted and disjoint; [] = nothing. */
  ranges(prefix: string): string[]
  /** Whether the identity may see `key`. */
  mayRead(key: string): boolean
}

const OPEN: ListingScope = { scoped: false, ranges: (prefix) => [prefix], mayRead: () => true }

export function listingScope(identity: S3Identity | null, bucket: BucketRoute): ListingScope {
  if (identity === null) return OPEN
  const path = bucket.verifier?.listScope?.(identity.claims)
  if (identity.prefixes.length === 0 && path === undefined) return OPEN
  let allowed: string[] | undefined = identity.prefixes.length === 0 ? undefined : disjoint(identity.prefixes)
  if (path !== undefined) allowed = allowed === undefined ? [...path.prefixes] : intersect(allowed, path.prefixes)
  const within = allowed ?? ['']
  return {
    scoped: true,
    ranges: (prefix) => intersect(within, [prefix]),
    mayRead: (key) => mayReadKey(identity, key) && (path === undefined || path.admits(key)),
  }
}

/** The prefixes whose keys both sets allow: for each overlapping pair, the longer one. */
function intersect(a: readonly string[], b: readonly string[]): string[] {
  const out: string[] = []
  for (const x of a) for (const y of b) if (x.startsWith(y)) out.push(x)
  else if (y.startsWith(x)) out.push(y)
  return disjoint(out)
}

/** Sorted, with prefixes inside another dropped. */
function disjoint(prefixes: readonly string[]): string[] {
  const out: string[] = []
  for (const p of [...prefixes].sort()) if (!out.some((q) => p.startsWith(q))) out.push(p)
  return out
}
