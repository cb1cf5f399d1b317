// The binary form of a cache entry, shared by the disk and Redis tiers:
//   [4 bytes: header length, big-endian][header: JSON][body]
// The header carries the key, metadata, timestamps and the SHA-256 of the body, so a truncated or
// corrupted entry is detected and never served.
import { createHash } from 'node:crypto'
import type { CachedObject } from '../ports.ts'
import type { ObjectMeta } from '../types.ts'

export interface EntryHeader {
  key: string
  meta: Omit<ObjectMeta, 'lastModified'> & { lastModified: number | null }
  storedAt: number
  freshUntil: number
  size: number
  sha256: string
}

export function encodeEntry(key: string, entry: CachedObject): Buffer {
  const header: EntryHeader = {
    key,
    meta: { ...entry.meta, lastModified: entry.meta.lastModified?.getTime() ?? null },
    storedAt: entry.storedAt,
    freshUntil: entry.freshUntil,
    size: entry.body.length,
    sha256: createHash('sha256').update(entry.body).digest('hex'),
  }
  const json = Buffer.from(JSON.stringify(header))
  const prefix = Buffer.alloc(4)
  prefix.writeUInt32BE(json.length)
  return Buffer.concat([prefix, json, entry.body])
}

/** The entry, or undefined when the bytes are truncated, corrupt or belong to another key. */
export function decodeEntry(key: string, bytes: Buffer): CachedObject | undefined {
  const header = decodeHeader(bytes)
  if (header === undefined || header.key !== key) return undefined
  const body = bytes.subarray(4 + bytes.readUInt32BE(0))
  if (body.length !== header.size) return undefined
  if (createHash('sha256').update(body).digest('hex') !== header.sha256) return undefined
  const m = header.meta
  return {
    meta: {
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
    },
    body,
    storedAt: header.storedAt,
    freshUntil: header.freshUntil,
  }
}

/** Key, expiry and size from an entry's first bytes (the disk index reads only these). */
export function decodeHeader(bytes: Buffer): EntryHeader | undefined {
  if (bytes.length < 4) return undefined
  const length = bytes.readUInt32BE(0)
  if (bytes.length < 4 + length) return undefined
  try {
    return JSON.parse(bytes.subarray(4, 4 + length).toString('utf8')) as EntryHeader
  } catch {
    return undefined
  }
}
