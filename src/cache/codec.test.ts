import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { crc32 } from 'node:zlib'
import type { CachedObject, StoredBody } from '../ports.ts'
import { decodeEntry, encodeEntry, EntryDecoder, FIRST_READ, GUARD_END, GUARD_START, metaToJson, REDIS_BLOCK_SIZE, type BlockLayout } from './codec.ts'

const KEY = 'bucket\u0000/dir/ünïcode object.bin'

function entry(): CachedObject {
  return {
    meta: {
      size: 1024,
      etag: '"0f343b0931126a20f133d67c2b018a3b"',
      lastModified: new Date('2026-01-02T03:04:05.000Z'),
      contentType: 'application/octet-stream',
      cacheControl: 'max-age=60',
      contentDisposition: undefined,
      contentEncoding: 'gzip',
      contentLanguage: undefined,
      expires: 'Thu, 01 Jan 2099 00:00:00 GMT',
      userMetadata: { owner: 'zoë', empty: '' },
    },
    body: Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 251)),
    storedAt: 1_767_000_000_123,
    freshUntil: 1_767_000_060_123,
  }
}

describe('Redis entry codec', () => {
  it('gives back the entry it encoded, metadata and bytes', () => {
    const original = entry()
    const decoded = decodeEntry(KEY, encodeEntry(KEY, original))
    assert.deepEqual(decoded, original)
  })

  it('keeps absent fields absent', () => {
    const original = entry()
    original.meta = { ...original.meta, etag: undefined, lastModified: undefined, contentType: undefined, userMetadata: {} }
    original.body = Buffer.alloc(0)
    assert.deepEqual(decodeEntry(KEY, encodeEntry(KEY, original)), original)
  })

  it('reads nothing from a value written under another key', () => {
    assert.equal(decodeEntry(`${KEY}x`, encodeEntry(KEY, entry())), undefined)
  })

  it('reads nothing from a truncated value, at any length', () => {
    const bytes = encodeEntry(KEY, entry())
    for (let length = 0; length < bytes.length; length += 7) {
      assert.equal(decodeEntry(KEY, bytes.subarray(0, length)), undefined, `truncated to ${length}`)
    }
    assert.equal(decodeEntry(KEY, bytes.subarray(0, bytes.length - 1)), undefined)
  })

  it("checks the body with zlib's CRC-32, so values written by earlier versions stay readable", () => {
    const original = entry()
    const bytes = encodeEntry(KEY, original)
    assert.equal(bytes.readUInt32BE(4), crc32(original.body as Buffer))
  })

  it('reads nothing when a body byte changed', () => {
    const bytes = encodeEntry(KEY, entry())
    bytes[bytes.length - 100]! ^= 1
    assert.equal(decodeEntry(KEY, bytes), undefined)
  })

  it('reads nothing from a value in the earlier JSON-header format', () => {
    const { meta, storedAt, freshUntil } = entry()
    const body = Buffer.alloc(1024, 7)
    const header = Buffer.from(JSON.stringify({ key: KEY, meta: metaToJson(meta), storedAt, freshUntil, size: body.length, crc32: crc32(body) }))
    const prefix = Buffer.alloc(4)
    prefix.writeUInt32BE(header.length)
    assert.equal(decodeEntry(KEY, Buffer.concat([prefix, header, body])), undefined)
  })
})

describe('Redis entry decoder', () => {
  it('hands out the same metadata object for each hit of an unchanged value, with its own bytes', () => {
    const decoder = new EntryDecoder()
    const original = entry()
    const first = decoder.decode(KEY, encodeEntry(KEY, original))
    const second = decoder.decode(KEY, encodeEntry(KEY, original))
    assert.deepEqual(second, original)
    assert.equal(second?.meta, first?.meta)
    assert.notEqual(second?.body, first?.body)
  })

  it('decodes a rewritten value in full: new timestamps or metadata give a new metadata object', () => {
    const decoder = new EntryDecoder()
    const original = entry()
    const first = decoder.decode(KEY, encodeEntry(KEY, original))
    const refreshed = { ...original, storedAt: original.storedAt + 1000, freshUntil: original.freshUntil + 1000 }
    const second = decoder.decode(KEY, encodeEntry(KEY, refreshed))
    assert.deepEqual(second, refreshed)
    assert.notEqual(second?.meta, first?.meta)
    const retyped = { ...refreshed, meta: { ...refreshed.meta, contentType: 'text/plain' } }
    assert.deepEqual(decoder.decode(KEY, encodeEntry(KEY, retyped)), retyped)
  })

  it('still checks the body of a value whose metadata it knows', () => {
    const decoder = new EntryDecoder()
    decoder.decode(KEY, encodeEntry(KEY, entry()))
    const bytes = encodeEntry(KEY, entry())
    bytes[bytes.length - 100]! ^= 1
    assert.equal(decoder.decode(KEY, bytes), undefined)
    assert.equal(decoder.decode(KEY, bytes.subarray(0, bytes.length - 1)), undefined)
  })

  it('reads nothing from a value written under another key, even one it knows', () => {
    const decoder = new EntryDecoder()
    decoder.decode(KEY, encodeEntry(KEY, entry()))
    assert.equal(decoder.decode(`${KEY}x`, encodeEntry(KEY, entry())), undefined)
  })
})

describe('Redis entry codec, bodies over 192 KiB (in blocks)', () => {
  const large = (size: number): CachedObject => {
    const original = entry()
    return { ...original, meta: { ...original.meta, size }, body: Buffer.from(Array.from({ length: size }, (_, i) => (i * 7) % 253)) }
  }
  /** A stand-in body that records the layout it was built from. */
  const recorder = () => {
    const layouts: BlockLayout[] = []
    const body: StoredBody = { length: 0, stream: () => new ReadableStream(), bytes: async () => Buffer.alloc(0) }
    return { layouts, streamed: (layout: BlockLayout) => (layouts.push(layout), body), body }
  }

  it('gives back a body that fits in the first read whole, each block checked', () => {
    const original = large(220 * 1024)
    const bytes = encodeEntry(KEY, original)
    assert.ok(bytes.length < FIRST_READ)
    assert.deepEqual(decodeEntry(KEY, bytes), original)
    bytes[bytes.length - 1]! ^= 1
    assert.equal(decodeEntry(KEY, bytes), undefined)
  })

  it('reads a larger value from its header: the layout a stream needs, with copies of its table and guard', () => {
    const original = large(3 * REDIS_BLOCK_SIZE + 5)
    const bytes = encodeEntry(KEY, original)
    const first = bytes.subarray(0, FIRST_READ)
    const { layouts, streamed, body } = recorder()
    const decoded = decodeEntry(KEY, first, streamed)
    assert.equal(decoded?.body, body)
    assert.deepEqual(decoded?.meta, original.meta)
    const layout = layouts[0] as BlockLayout
    assert.equal(layout.size, original.body.length)
    assert.equal(layout.blockSize, REDIS_BLOCK_SIZE)
    assert.deepEqual(bytes.subarray(layout.bodyAt), original.body)
    assert.equal(layout.crcs.length, 4 * 4)
    for (let i = 0; i < 4; i++) assert.equal(layout.crcs.readUInt32BE(4 * i), crc32((original.body as Buffer).subarray(i * REDIS_BLOCK_SIZE, (i + 1) * REDIS_BLOCK_SIZE)))
    assert.deepEqual(layout.guard, bytes.subarray(GUARD_START, GUARD_END))
    assert.notEqual(layout.crcs.buffer, first.buffer, 'the table is a copy: the body does not hold the first read')
    // Without a way to stream it, a partial read is no entry.
    assert.equal(decodeEntry(KEY, first), undefined)
    // The whole value decodes to its bytes.
    assert.deepEqual(decodeEntry(KEY, bytes), original)
  })

  it('gives a value stored again with the same body the same guard, and a new body another one', () => {
    const original = large(2 * REDIS_BLOCK_SIZE)
    const guard = (e: CachedObject) => encodeEntry(KEY, e).subarray(GUARD_START, GUARD_END)
    assert.deepEqual(guard({ ...original, storedAt: original.storedAt + 5000, freshUntil: original.freshUntil + 5000 }), guard(original))
    const changed = Buffer.from(original.body as Buffer)
    changed[REDIS_BLOCK_SIZE + 10]! ^= 1
    assert.notDeepEqual(guard({ ...original, body: changed }), guard(original))
  })

  it('reads nothing from a header whose block table was changed', () => {
    const original = large(3 * REDIS_BLOCK_SIZE)
    const bytes = encodeEntry(KEY, original)
    const bodyAt = bytes.readUInt32BE(12)
    bytes[bodyAt - 2]! ^= 1
    assert.equal(decodeEntry(KEY, bytes.subarray(0, FIRST_READ), recorder().streamed), undefined)
  })

  it('hands out the same metadata for each read of an unchanged large value', () => {
    const decoder = new EntryDecoder()
    const bytes = encodeEntry(KEY, large(3 * REDIS_BLOCK_SIZE))
    const { layouts, streamed } = recorder()
    const first = decoder.decode(KEY, bytes.subarray(0, FIRST_READ), streamed)
    const second = decoder.decode(KEY, Buffer.from(bytes.subarray(0, FIRST_READ)), streamed)
    assert.equal(second?.meta, first?.meta)
    assert.equal(layouts.length, 2)
    assert.deepEqual(layouts[1], layouts[0])
  })
})
