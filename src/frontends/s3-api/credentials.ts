// The static credentials of `s3_api.credentials`: the secret of a key id (for SigV4) and what the
// key may read. A bucket outside a key's list is, to that key, a bucket that does not exist; a key
// outside its prefixes is refused and left out of listings. A temporary credential (from the
// web-identity exchange) sees the buckets sealed in its session token whose claim rules still admit
// its claims, decided per request.
import type { S3ApiCredential } from '../../config/schema.ts'
import type { BucketRoute } from '../../types.ts'

export interface S3Identity {
  accessKeyId: string
  buckets: ReadonlySet<string>
  /** Empty: every key. */
  prefixes: readonly string[]
  claims: Readonly<Record<string, unknown>>
  /**
   * A temporary credential: a bucket whose claim rules refuse its claims is, to it, a bucket that
   * does not exist (static keys name their buckets, and a refusal is AccessDenied).
   */
  temporary?: boolean
}

export class CredentialTable {
  readonly #secrets = new Map<string, string>()
  readonly #identities = new Map<string, S3Identity>()

  constructor(credentials: readonly S3ApiCredential[]) {
    for (const c of credentials) {
      this.#secrets.set(c.access_key_id, c.secret_access_key)
      this.#identities.set(c.access_key_id, {
        accessKeyId: c.access_key_id,
        buckets: new Set(c.buckets),
        prefixes: [...c.prefixes],
        claims: { ...c.claims },
      })
    }
  }

  /** The secret for SigV4, undefined for an unknown key id (or any session token: static keys have none). */
  secretOf(accessKeyId: string, sessionToken: string | undefined): string | undefined {
    return sessionToken === undefined ? this.#secrets.get(accessKeyId) : undefined
  }

  identity(accessKeyId: string): S3Identity | undefined {
    return this.#identities.get(accessKeyId)
  }
}

export function mayReadBucket(identity: S3Identity, bucket: string): boolean {
  return identity.buckets.has(bucket)
}

/** Whether `bucket` exists for the identity: named by it, and for a temporary one, its rules admit the claims. */
export function canSeeBucket(identity: S3Identity, bucket: BucketRoute): boolean {
  if (!identity.buckets.has(bucket.name)) return false
  if (identity.temporary !== true || bucket.verifier === null) return true
  try {
    bucket.verifier.admitClaims(identity.claims, undefined)
    return true
  } catch {
    return false
  }
}

export function mayReadKey(identity: S3Identity, key: string): boolean {
  return identity.prefixes.length === 0 || identity.prefixes.some((p) => key.startsWith(p))
}

/**
 * Whether a listing under `prefix` can contain any key the identity may read: either the listing
 * prefix lies inside an allowed prefix, or an allowed prefix starts inside the listing.
 */
export function mayListPrefix(identity: S3Identity, prefix: string): boolean {
  return identity.prefixes.length === 0 || identity.prefixes.some((p) => prefix.startsWith(p) || p.startsWith(prefix))
}
