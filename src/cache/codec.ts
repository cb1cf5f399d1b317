// The binary form of a Redis cache entry, a fixed layout read without a JSON parse:
//   magic (4 bytes) | body CRC-32 (u32) | body size (u32) | storedAt, freshUntil, meta.size,
//   meta.lastModified (f64 each; NaN: none) | the key, then etag, contentType, cacheControl,
//   contentDisposition, contentEncoding, contentLanguage, expires (each a u32 byte length, 2^32-1
//   for none, then UTF-8) | user metadata (u32 count, then name and value as above) | body
// Integers big-endian. The key and the body's CRC-32 (disk-format.ts's, about 0.1 ms per MiB) mean a
// truncated or mangled value, or one written under another key, is never served. A cryptographic
// hash is not needed: Redis and the TCP connection to it are trusted. The body is a view of the
// value Redis returned, not a copy. Values written by earlier versions (a JSON header behind its
// length) do not start with the magic and decode as misses (and are replaced by the next fill).
// The metadata's JSON form (metaToJson / metaFromJson) is the disk tier's format.
import { crc32 } from '@node-rs/crc32'
import type { CachedObject } from '../ports.ts'
import type { ObjectMeta } from '../types.ts'

/** ObjectMeta as JSON: the Last-Modified date as epoch ms. */
export type MetaJson = Omit<ObjectMeta, 'lastModified'> & { lastModified: number | null }

const MAGIC = 0xb1594302
/** magic, CRC-32, body size, then four f64. */
const FIXED = 4 + 4 + 4 + 4 * 8
const NONE = 0xffffffff

type Text = string | undefined

/** The entry as one value. Its body must be bytes: TieredCache reads a StoredBody before Redis gets it. */
export function encodeEntry(key: string, entry: CachedObject): Buffer {
  const body = entry.body
  if (!(body instanceof Uint8Array)) throw new TypeError('encodeEntry needs the body as bytes; read a StoredBody first')
  const { meta } = entry
  const user = Object.entries(meta.userMetadata)
  const texts: Text[] = [key, meta.etag, meta.contentType, meta.cacheControl, meta.contentDisposition, meta.contentEncoding, meta.contentLanguage, meta.expires]
  let length = FIXED + 4 + body.length
  for (const text of texts) length += textLength(text)
  for (const [name, value] of user) length += textLength(name) + textLength(value)
  const out = Buffer.allocUnsafe(length)
  let at = out.writeUInt32BE(MAGIC, 0)
  at = out.writeUInt32BE(crc32(body), at)
  at = out.writeUInt32BE(body.length, at)
  at = out.writeDoubleBE(entry.storedAt, at)
  at = out.writeDoubleBE(entry.freshUntil, at)
  at = out.writeDoubleBE(meta.size, at)
  at = out.writeDoubleBE(meta.lastModified?.getTime() ?? NaN, at)
  for (const text of texts) at = writeText(out, at, text)
  at = out.writeUInt32BE(user.length, at)
  for (const [name, value] of user) at = writeText(out, writeText(out, at, name), value)
  out.set(body, at)
  return out
}

/** The entry, or undefined when the bytes are truncated, corrupt or belong to another key. */
export function decodeEntry(key: string, bytes: Buffer): CachedObject | undefined {
  if (bytes.length < FIXED || bytes.readUInt32BE(0) !== MAGIC) return undefined
  const reader = new Reader(bytes, FIXED)
  if (reader.text() !== key) return undefined
  const etag = reader.text()
  const contentType = reader.text()
  const cacheControl = reader.text()
  const contentDisposition = reader.text()
  const contentEncoding = reader.text()
  const contentLanguage = reader.text()
  const expires = reader.text()
  const userMetadata: Record<string, string> = {}
  for (let count = reader.u32(); count > 0 && !reader.broken; count--) {
    const name = reader.text()
    const value = reader.text()
    if (name !== undefined && value !== undefined) userMetadata[name] = value
  }
  if (reader.broken) return undefined
  const body = bytes.subarray(reader.at)
  if (body.length !== bytes.readUInt32BE(8) || crc32(body) !== bytes.readUInt32BE(4)) return undefined
  const lastModified = bytes.readDoubleBE(36)
  const meta: ObjectMeta = {
    size: bytes.readDoubleBE(28),
    etag,
    lastModified: Number.isNaN(lastModified) ? undefined : new Date(lastModified),
    contentType,
    cacheControl,
    contentDisposition,
    contentEncoding,
    contentLanguage,
    expires,
    userMetadata,
  }
  return { meta, body, storedAt: bytes.readDoubleBE(12), freshUntil: bytes.readDoubleBE(20) }
}

/** Decoded heads kept by an EntryDecoder (the bytes before the body, ~100-300 each, and their meta). */
const KNOWN_HEADS = 1024

interface KnownHead {
  /** A copy of the value's bytes before the body. */
  head: Buffer
  meta: ObjectMeta
  storedAt: number
  freshUntil: number
}

/**
 * decodeEntry, handing out one ObjectMeta per stored version of a key: a value whose bytes before
 * the body (metadata, timestamps, the body's size and CRC-32) are those of the last value decoded
 * for the key gets that value's meta object, and only its body is checked. What the serve stage
 * derives from a meta once (its response headers) is then reused by every hit, as with the
 * memory and disk tiers, and a hit parses no strings.
 */
export class EntryDecoder {
  readonly #known = new Map<string, KnownHead>()

  decode(key: string, bytes: Buffer): CachedObject | undefined {
    if (bytes.length < FIXED || bytes.readUInt32BE(0) !== MAGIC) return undefined
    const bodyAt = bytes.length - bytes.readUInt32BE(8)
    const known = this.#known.get(key)
    if (known !== undefined && known.head.length === bodyAt && bytes.compare(known.head, 0, bodyAt, 0, bodyAt) === 0) {
      const body = bytes.subarray(bodyAt)
      if (crc32(body) !== bytes.readUInt32BE(4)) return undefined
      return { meta: known.meta, body, storedAt: known.storedAt, freshUntil: known.freshUntil }
    }
    const entry = decodeEntry(key, bytes)
    if (entry === undefined) return undefined
    if (known === undefined && this.#known.size >= KNOWN_HEADS) this.#known.delete(this.#known.keys().next().value as string)
    this.#known.set(key, { head: Buffer.from(bytes.subarray(0, bodyAt)), meta: entry.meta, storedAt: entry.storedAt, freshUntil: entry.freshUntil })
    return entry
  }

  /** Forgets every key (their next values are decoded in full). */
  clear(): void {
    this.#known.clear()
  }
}

function textLength(text: Text): number {
  return 4 + (text === undefined ? 0 : Buffer.byteLength(text))
}

function writeText(out: Buffer, at: number, text: Text): number {
  if (text === undefined) return out.writeUInt32BE(NONE, at)
  const length = out.write(text, at + 4)
  out.writeUInt32BE(length, at)
  return at + 4 + length
}

/** Reads length-prefixed strings; `broken` once a length runs past the end. */
class Reader {
  broken = false
  constructor(
    readonly bytes: Buffer,
    public at: number
  ) {}

  u32(): number {
    if (this.at + 4 > this.bytes.length) {
      this.broken = true
      return 0
    }
    const value = this.bytes.readUInt32BE(this.at)
    this.at += 4
    return value
  }

  text(): Text {
    const length = this.u32()
    if (this.broken || length === NONE) return undefined
    const end = this.at + length
    if (end > this.bytes.length) {
      this.broken = true
      return undefined
    }
    const text = this.bytes.toString('utf8', this.at, end)
    this.at = end
    return text
  }
}

export function metaToJson(meta: ObjectMeta): MetaJson {
  return { ...meta, lastModified: meta.lastModified?.getTime() ?? null }
}

export function metaFromJson(m: MetaJson): ObjectMeta {
  return {
    size: m.size,
    etag: m.etag,
    lastModified: m.lastModified === null ? undefined : new Date(m.lastModified),
    contentType: m.contentType,
    cacheControl: m.cacheControl,
    contentDisposition: m.contentDisposition,
    contentEncoding: m.contentEncoding,
    contentLanguage: m.contentLanguage,
    expires: m.expires,
    userMetadata: m.userMetadata,
  }
}
