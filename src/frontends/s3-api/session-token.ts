// Stateless temporary credentials (AssumeRoleWithWebIdentity): the session token carries the
// session (access key id, claims, expiry, the buckets whose token checks the exchanged token
// passed), sealed with AES-256-GCM under a key from
// `s3_api.sts.keys`, and the secret access key is derived from the token's key and access key id.
// Any instance holding the keys verifies a request signed with them; nothing is stored.
//
//   token  = base64url( version(1) | key id(1) | iv(12) | ciphertext | tag(16) )
//   key id = the first byte of SHA-256(key): which key sealed it, so keys rotate (the first key
//            seals, every key opens; ids that collide are each tried)
//   secret = base64(HMAC-SHA256(key, "yatagarasu-sts-secret\0" + access key id))[0..40]
//
// The version and key id bytes are authenticated (GCM additional data): a token altered in any
// byte does not open.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto'

const VERSION = 1
const IV_BYTES = 12
const TAG_BYTES = 16
/** A session token longer than this is refused unread (a sealed JWT's claims are a few KiB). */
export const MAX_SESSION_TOKEN_LENGTH = 16_384

/** What a session token carries. */
export interface Session {
  accessKeyId: string
  /** The exchanged token's claims (as a bearer token's: claim rules and OPA decide on them). */
  claims: Readonly<Record<string, unknown>>
  /** Epoch seconds. */
  expiresAt: number
  /**
   * The buckets with auth whose own verifier accepted the exchanged token at the exchange (their
   * required claims, lifetime, algorithms...): the only ones with auth the credential may open.
   */
  buckets: readonly string[]
}

export type Opened = { ok: true; session: Session; secret: string } | { ok: false; reason: 'invalid' | 'expired' }

interface Key {
  id: number
  key: Buffer
}

export class SessionSealer {
  readonly #keys: readonly Key[]

  /** `keys`: 32 bytes each; the first seals. */
  constructor(keys: readonly Uint8Array[]) {
    if (keys.length === 0) throw new Error('at least one session key is needed')
    this.#keys = keys.map((k) => {
      const key = Buffer.from(k)
      if (key.length !== 32) throw new Error('a session key must be 32 bytes')
      return { id: createHash('sha256').update(key).digest()[0] as number, key }
    })
  }

  /** A new session: a fresh access key id, its sealed token and derived secret. */
  seal(claims: Readonly<Record<string, unknown>>, expiresAt: number, buckets: readonly string[]): { accessKeyId: string; secret: string; token: string } {
    const sealing = this.#keys[0] as Key
    const accessKeyId = `ASIA${base32(randomBytes(10))}`
    const header = Buffer.from([VERSION, sealing.id])
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', sealing.key, iv)
    cipher.setAAD(header)
    const plain = Buffer.from(JSON.stringify({ k: accessKeyId, e: expiresAt, c: claims, b: buckets }))
    const sealed = Buffer.concat([header, iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()])
    return { accessKeyId, secret: secretOf(sealing.key, accessKeyId), token: sealed.toString('base64url') }
  }

  /** Opens a session token: the session and its secret, or why it is refused. */
  open(token: string, nowMs = Date.now()): Opened {
    if (token.length > MAX_SESSION_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) return { ok: false, reason: 'invalid' }
    const bytes = Buffer.from(token, 'base64url')
    if (bytes.length < 2 + IV_BYTES + TAG_BYTES + 1 || bytes[0] !== VERSION) return { ok: false, reason: 'invalid' }
    const header = bytes.subarray(0, 2)
    const iv = bytes.subarray(2, 2 + IV_BYTES)
    const body = bytes.subarray(2 + IV_BYTES, bytes.length - TAG_BYTES)
    const tag = bytes.subarray(bytes.length - TAG_BYTES)
    for (const { id, key } of this.#keys) {
      if (id !== bytes[1]) continue
      let plain: Buffer
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv)
        decipher.setAAD(header)
        decipher.setAuthTag(tag)
        plain = Buffer.concat([decipher.update(body), decipher.final()])
      } catch {
        continue
      }
      const session = parseSession(plain)
      if (session === undefined) return { ok: false, reason: 'invalid' }
      if (session.expiresAt * 1000 <= nowMs) return { ok: false, reason: 'expired' }
      return { ok: true, session, secret: secretOf(key, session.accessKeyId) }
    }
    return { ok: false, reason: 'invalid' }
  }
}

function parseSession(plain: Buffer): Session | undefined {
  let value: unknown
  try {
    value = JSON.parse(plain.toString('utf8'))
  } catch {
    return undefined
  }
  if (value === null || typeof value !== 'object') return undefined
  const { k, e, c, b } = value as Record<string, unknown>
  if (typeof k !== 'string' || typeof e !== 'number' || c === null || typeof c !== 'object' || Array.isArray(c)) return undefined
  // A token without the set (sealed before it existed) opens no bucket with auth.
  const buckets = Array.isArray(b) ? b.filter((name): name is string => typeof name === 'string') : []
  return { accessKeyId: k, expiresAt: e, claims: c as Record<string, unknown>, buckets }
}

function secretOf(key: Buffer, accessKeyId: string): string {
  return createHmac('sha256', key).update(`yatagarasu-sts-secret\0${accessKeyId}`).digest('base64').slice(0, 40)
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

/** RFC 4648 base32 without padding (10 bytes -> 16 characters), as AWS key ids look. */
function base32(bytes: Buffer): string {
  let out = ''
  let bits = 0
  let value = 0
  for (const byte of bytes) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31]
  return out
}
