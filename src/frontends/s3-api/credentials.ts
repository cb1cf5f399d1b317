// The static credentials of `s3_api.credentials`: the secret of a key id (for SigV4) and what the
// key may read. A bucket outside a key's list is, to that key, a bucket that does not exist; a key
// outside its prefixes is refused and left out of listings.
import type { S3ApiCredential } from '../../config/schema.ts'

export interface S3Identity {
  accessKeyId: string
  buckets: ReadonlySet<string>
  /** Empty: every key. */
  prefixes: readonly string[]
  claims: Readonly<Record<string, unknown>>
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
