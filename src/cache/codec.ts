// The binary form of a Redis cache entry:
//   [4 bytes: header length, big-endian][header: JSON][body]
// The header carries the key, metadata, timestamps, the body's size and its CRC-32 (zlib's, about
// 0.2 ms per MiB), so a truncated or mangled value, or one written under another key, is never
// served. A cryptographic hash is not needed: Redis and the TCP connection to it are trusted, and
// SHA-256 cost ~1 ms per MiB on every hit. Values written with the SHA-256 header of earlier
// versions decode as misses (and are replaced by the next fill).
// The metadata's JSON form (metaToJson / metaFromJson) is shared with the disk tier's format.
import { crc32 } from 'node:zlib'
import type { CachedObject } from '../ports.ts'
import type { ObjectMeta } from '../types.ts'

/** ObjectMeta as JSON: the Last-Modified date as epoch ms. */
export type MetaJson = Omit<ObjectMeta, 'lastModified'> & { lastModified: number | null }

interface EntryHeader {
  key: string
  meta: MetaJson
  storedAt: number
  freshUntil: number
  size: number
  crc32: number
}

/** The entry as one value. Its body must be bytes: TieredCache reads a StoredBody before Redis gets it. */
export function encodeEntry(key: string, entry: CachedObject): Buffer {
  const body = entry.body
  if (!(body instanceof Uint8Array)) throw new TypeError('encodeEntry needs the body as bytes; read a StoredBody first')
  const header: EntryHeader = {
    key,
    meta: metaToJson(entry.meta),
    storedAt: entry.storedAt,
    freshUntil: entry.freshUntil,
    size: body.length,
    crc32: crc32(body),
  }
  const json = Buffer.from(JSON.stringify(header))
  const prefix = Buffer.alloc(4)
  prefix.writeUInt32BE(json.length)
  return Buffer.concat([prefix, json, body])
}

/** The entry, or undefined when the bytes are truncated, corrupt or belong to another key. */
export function decodeEntry(key: string, bytes: Buffer): CachedObject | undefined {
  if (bytes.length < 4) return undefined
  const length = bytes.readUInt32BE(0)
  if (bytes.length < 4 + length) return undefined
  let header: EntryHeader
  try {
    header = JSON.parse(bytes.subarray(4, 4 + length).toString('utf8')) as EntryHeader
  } catch {
    return undefined
  }
  if (header.key !== key || typeof header.crc32 !== 'number') return undefined
  const body = bytes.subarray(4 + length)
  if (body.length !== header.size || crc32(body) !== header.crc32) return undefined
  return { meta: metaFromJson(header.meta), body, storedAt: header.storedAt, freshUntil: header.freshUntil }
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
