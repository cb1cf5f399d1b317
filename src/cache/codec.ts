// The binary form of a Redis cache entry, a fixed layout read without a JSON parse. Two forms:
//   inline (bodies of 192 KiB or less): magic (4 bytes) | body CRC-32 (u32) | body size (u32) |
//     storedAt, freshUntil, meta.size, meta.lastModified (f64 each; NaN: none) | the key, then
//     etag, contentType, cacheControl, contentDisposition, contentEncoding, contentLanguage,
//     expires (each a u32 byte length, 2^32-1 for none, then UTF-8) | user metadata (u32 count,
//     then name and value as above) | body
//   blocks (larger bodies): magic | CRC-32 of the block table (u32) | body size (u32) | header
//     length (u32: where the body starts) | block size (u32) | the four f64 | the texts and user
//     metadata as above | the block table (a CRC-32 per block, u32 each) | body
// Integers big-endian. The key and the CRC-32s (disk-format.ts's, about 0.1 ms per MiB) mean a
// truncated or mangled value, or one written under another key, is never served. A cryptographic
// hash is not needed: Redis and the TCP connection to it are trusted. The body is a view of the
// value Redis returned, not a copy. A lookup reads the first FIRST_READ bytes of a value (one
// command): an inline value whole, a value in blocks whole when it fits, else its header, and its
// body is then read by range as it is sent (redis-body.ts), each block checked, so a large hit
// holds a few blocks, not the object, and a Range reads only its blocks. Values written by earlier
// versions (a JSON header behind its length) do not start with a magic and decode as misses (and are
// replaced by the next fill). The metadata's JSON form (metaToJson / metaFromJson) is the disk
// tier's format.
import { crc32 } from '@node-rs/crc32'
import type { CachedObject, StoredBody } from '../ports.ts'
import type { ObjectMeta } from '../types.ts'
import { blockIntact, blockTable } from './block-crcs.ts'

/** ObjectMeta as JSON: the Last-Modified date as epoch ms. */
export type MetaJson = Omit<ObjectMeta, 'lastModified'> & { lastModified: number | null }

const MAGIC = 0xb1594302
const BLOCKS_MAGIC = 0xb1594303
/** magic, CRC-32, body size, then four f64. */
const FIXED = 4 + 4 + 4 + 4 * 8
/** magic, the block table's CRC-32, body size, header length, block size, then four f64. */
const BLOCKS_FIXED = 4 + 4 + 4 + 4 + 4 + 4 * 8
const NONE = 0xffffffff

/** Bodies over this are stored in blocks, each with its CRC-32. */
export const INLINE_MAX = 192 * 1024
/** Bytes per checked block of a value in blocks (what a stream reads at a time, and the least a Range reads). */
export const REDIS_BLOCK_SIZE = 256 * 1024
/**
 * What a lookup reads of a value it knows nothing about: every inline value whole; a value in blocks
 * whole when it fits, else its header (the body bytes after it are read again by the stream). A key
 * whose large value the decoder knows is read up to its body only (EntryDecoder.headLength).
 */
export const FIRST_READ = 256 * 1024
/**
 * Bytes [GUARD_START, GUARD_END) of a value in blocks: the block table's CRC-32, the body's size
 * and where it starts. Two values that agree on them hold the same body at the same offset (up to
 * a CRC-32 collision, and each block is checked against its own CRC-32 too): a stream reads on
 * only while they are unchanged.
 */
export const GUARD_START = 4
export const GUARD_END = 16

/** Where the body of a value in blocks is, and how to check it: what its streamed body reads. */
export interface BlockLayout {
  size: number
  /** Offset of the body in the value. */
  bodyAt: number
  blockSize: number
  /** The block table: `crcs.readUInt32BE(4 * i)` is block i's CRC-32. */
  crcs: Buffer
  /** The value's bytes [GUARD_START, GUARD_END). */
  guard: Buffer
}

/** Builds the lazily read body of a value in blocks from its layout (RedisCache: guarded GETRANGEs). */
export type StreamedBodyOf = (layout: BlockLayout) => StoredBody

type Text = string | undefined

/** The entry as one value. Its body must be bytes: TieredCache reads a StoredBody before Redis gets it. */
export function encodeEntry(key: string, entry: CachedObject): Buffer {
  const body = entry.body
  if (!(body instanceof Uint8Array)) throw new TypeError('encodeEntry needs the body as bytes; read a StoredBody first')
  const { meta } = entry
  const user = Object.entries(meta.userMetadata)
  const texts: Text[] = [key, meta.etag, meta.contentType, meta.cacheControl, meta.contentDisposition, meta.contentEncoding, meta.contentLanguage, meta.expires]
  let textBytes = 4
  for (const text of texts) textBytes += textLength(text)
  for (const [name, value] of user) textBytes += textLength(name) + textLength(value)
  const writeTexts = (out: Buffer, at: number) => {
    for (const text of texts) at = writeText(out, at, text)
    at = out.writeUInt32BE(user.length, at)
    for (const [name, value] of user) at = writeText(out, writeText(out, at, name), value)
    return at
  }
  const times = (out: Buffer, at: number) => {
    at = out.writeDoubleBE(entry.storedAt, at)
    at = out.writeDoubleBE(entry.freshUntil, at)
    at = out.writeDoubleBE(meta.size, at)
    return out.writeDoubleBE(meta.lastModified?.getTime() ?? NaN, at)
  }
  if (body.length <= INLINE_MAX && FIXED + textBytes + body.length <= FIRST_READ) {
    const out = Buffer.allocUnsafe(FIXED + textBytes + body.length)
    let at = out.writeUInt32BE(MAGIC, 0)
    at = out.writeUInt32BE(crc32(body), at)
    at = out.writeUInt32BE(body.length, at)
    at = writeTexts(out, times(out, at))
    out.set(body, at)
    return out
  }
  const crcs = blockTable(body, REDIS_BLOCK_SIZE)
  const bodyAt = BLOCKS_FIXED + textBytes + crcs.length
  const out = Buffer.allocUnsafe(bodyAt + body.length)
  let at = out.writeUInt32BE(BLOCKS_MAGIC, 0)
  at = out.writeUInt32BE(crc32(crcs), at)
  at = out.writeUInt32BE(body.length, at)
  at = out.writeUInt32BE(bodyAt, at)
  at = out.writeUInt32BE(REDIS_BLOCK_SIZE, at)
  at = writeTexts(out, times(out, at))
  out.set(crcs, at)
  out.set(body, bodyAt)
  return out
}

/**
 * The entry, or undefined when the bytes are truncated, corrupt or belong to another key. `bytes`
 * is the whole value, or its first FIRST_READ bytes: a value in blocks longer than that gets the
 * body `streamed` builds (undefined without it).
 */
export function decodeEntry(key: string, bytes: Buffer, streamed?: StreamedBodyOf): CachedObject | undefined {
  const head = decodeHead(key, bytes)
  return head === undefined ? undefined : withBody(head, bytes, streamed)
}

/** A value's decoded bytes before the body. */
interface DecodedHead {
  meta: ObjectMeta
  storedAt: number
  freshUntil: number
  /** The block layout of a value in blocks (its crcs and guard are views of the head's bytes). */
  layout: BlockLayout | undefined
  /** The inline body's CRC-32. */
  crc: number
  bodyAt: number
}

function decodeHead(key: string, bytes: Buffer): DecodedHead | undefined {
  if (bytes.length < FIXED) return undefined
  const magic = bytes.readUInt32BE(0)
  const blocks = magic === BLOCKS_MAGIC
  if (!blocks && magic !== MAGIC) return undefined
  if (blocks && bytes.length < BLOCKS_FIXED) return undefined
  const size = bytes.readUInt32BE(8)
  const bodyAt = blocks ? bytes.readUInt32BE(12) : bytes.length - size
  if (bodyAt > bytes.length || bodyAt < (blocks ? BLOCKS_FIXED : FIXED)) return undefined
  const reader = new Reader(bytes.subarray(0, bodyAt), blocks ? BLOCKS_FIXED : FIXED)
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
  let layout: BlockLayout | undefined
  if (blocks) {
    const blockSize = bytes.readUInt32BE(16)
    if (blockSize === 0) return undefined
    const crcs = bytes.subarray(reader.at, bodyAt)
    if (crcs.length !== 4 * Math.ceil(size / blockSize) || crc32(crcs) !== bytes.readUInt32BE(4)) return undefined
    layout = { size, bodyAt, blockSize, crcs, guard: bytes.subarray(GUARD_START, GUARD_END) }
  } else if (reader.at !== bodyAt) return undefined
  const times = blocks ? 20 : 12
  const lastModified = bytes.readDoubleBE(times + 24)
  const meta: ObjectMeta = {
    size: bytes.readDoubleBE(times + 16),
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
  return { meta, storedAt: bytes.readDoubleBE(times), freshUntil: bytes.readDoubleBE(times + 8), layout, crc: blocks ? 0 : bytes.readUInt32BE(4), bodyAt }
}

/** The entry of a decoded head over `bytes` (the whole value or its first read); undefined when its body fails its check. */
function withBody(head: DecodedHead, bytes: Buffer, streamed: StreamedBodyOf | undefined): CachedObject | undefined {
  const { meta, storedAt, freshUntil, layout, bodyAt } = head
  if (layout === undefined) {
    const body = bytes.subarray(bodyAt)
    return crc32(body) === head.crc ? { meta, body, storedAt, freshUntil } : undefined
  }
  const whole = bodyAt + layout.size
  if (bytes.length === whole) {
    const body = bytes.subarray(bodyAt)
    for (let i = 0, at = 0; at < body.length; i++, at += layout.blockSize) {
      if (!blockIntact(layout.crcs, i, body.subarray(at, at + layout.blockSize))) return undefined
    }
    return { meta, body, storedAt, freshUntil }
  }
  if (bytes.length > whole || streamed === undefined) return undefined
  // Copies: the body must not hold on to the first read.
  return { meta, body: streamed({ ...layout, crcs: Buffer.from(layout.crcs), guard: Buffer.from(layout.guard) }), storedAt, freshUntil }
}

/** Decoded heads kept by an EntryDecoder (the bytes before the body, ~100-300 each, and their meta). */
const KNOWN_HEADS = 1024

interface KnownHead {
  /** A copy of the value's bytes before the body. */
  bytes: Buffer
  /** Decoded from `bytes` (a layout's crcs and guard are views of them). */
  head: DecodedHead
}

/**
 * decodeEntry, handing out one ObjectMeta per stored version of a key: a value whose bytes before
 * the body (metadata, timestamps, the body's size and CRC-32s) are those of the last value decoded
 * for the key gets that value's meta object, and only its body is checked. What the serve stage
 * derives from a meta once (its response headers) is then reused by every hit, as with the
 * memory and disk tiers, and a hit parses no strings.
 */
export class EntryDecoder {
  readonly #known = new Map<string, KnownHead>()

  /** `bytes`: the whole value or its first FIRST_READ bytes (see decodeEntry). */
  decode(key: string, bytes: Buffer, streamed?: StreamedBodyOf): CachedObject | undefined {
    if (bytes.length < FIXED) return undefined
    const magic = bytes.readUInt32BE(0)
    const bodyAt = magic === MAGIC ? bytes.length - bytes.readUInt32BE(8) : magic === BLOCKS_MAGIC && bytes.length >= BLOCKS_FIXED ? bytes.readUInt32BE(12) : -1
    if (bodyAt < 0 || bodyAt > bytes.length) return undefined
    const known = this.#known.get(key)
    if (known !== undefined && known.bytes.length === bodyAt && bytes.compare(known.bytes, 0, bodyAt, 0, bodyAt) === 0) return withBody(known.head, bytes, streamed)
    const head = decodeHead(key, bytes)
    if (head === undefined) return undefined
    const entry = withBody(head, bytes, streamed)
    if (entry === undefined) return undefined
    if (known === undefined && this.#known.size >= KNOWN_HEADS) this.#known.delete(this.#known.keys().next().value as string)
    // Kept as a copy (not a view of the value Redis returned) with the layout's views moved onto it.
    const copy = Buffer.from(bytes.subarray(0, bodyAt))
    const { layout } = head
    if (layout !== undefined) head.layout = { ...layout, crcs: copy.subarray(bodyAt - layout.crcs.length, bodyAt), guard: copy.subarray(GUARD_START, GUARD_END) }
    this.#known.set(key, { bytes: copy, head })
    return entry
  }

  /**
   * The length of the bytes before the body of the last value in blocks decoded for `key`: what a
   * lookup reads when that value is likely still there (undefined: read FIRST_READ).
   */
  headLength(key: string): number | undefined {
    const known = this.#known.get(key)
    const layout = known?.head.layout
    // A value that fits the first read whole is read whole, as before.
    return known === undefined || layout === undefined || known.bytes.length + layout.size <= FIRST_READ ? undefined : known.bytes.length
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
