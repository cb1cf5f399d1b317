import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import * as zlib from 'node:zlib'
import type { CompressionEncoding } from '../config/representations-schema.ts'
import { compress, compressAtLevel } from './compress.ts'
import { ZSTD_AVAILABLE } from './negotiate.ts'

const ROOT = join(import.meta.dirname, '../..')
// Real text: the project's own README and caching doc.
const text = Buffer.concat([await readFile(join(ROOT, 'README.md')), await readFile(join(ROOT, 'docs/caching.md'))])

function decompress(encoding: CompressionEncoding, bytes: Buffer): Buffer {
  if (encoding === 'br') return zlib.brotliDecompressSync(bytes)
  if (encoding === 'gzip') return zlib.gunzipSync(bytes)
  return zlib.zstdDecompressSync(bytes)
}

const cases: Array<{ encoding: CompressionEncoding; skip: boolean }> = [
  { encoding: 'br', skip: false },
  { encoding: 'gzip', skip: false },
  { encoding: 'zstd', skip: !ZSTD_AVAILABLE },
]

for (const { encoding, skip } of cases) {
  describe(`compress ${encoding}`, { skip }, () => {
    it('decompresses to the original bytes, at well under half the size for text', async () => {
      const out = await compress(text, encoding)
      assert.ok(decompress(encoding, out).equals(text))
      assert.ok(out.byteLength < text.byteLength / 2, `${out.byteLength} of ${text.byteLength}`)
    })
    it('round-trips binary bytes, an empty body and a Uint8Array view into a larger buffer', async () => {
      const random = randomBytes(64 * 1024)
      assert.ok(decompress(encoding, await compress(random, encoding)).equals(random))
      assert.equal(decompress(encoding, await compress(new Uint8Array(0), encoding)).byteLength, 0)
      const view = new Uint8Array(text.buffer, text.byteOffset + 100, 5000)
      assert.ok(decompress(encoding, await compress(view, encoding)).equals(Buffer.from(view)))
    })
  })
}

it('writes a gzip member whole clients read (magic bytes, decompressed by gunzip)', async () => {
  const out = await compress(text, 'gzip')
  assert.deepEqual([...out.subarray(0, 2)], [0x1f, 0x8b])
})

it('writes a zstd frame with the content size in its header', { skip: !ZSTD_AVAILABLE }, async () => {
  const out = await compress(text, 'zstd')
  assert.deepEqual([...out.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd])
  // Frame header descriptor: Frame_Content_Size_flag (top two bits) non-zero, or single-segment.
  const descriptor = out[4] as number
  assert.ok(descriptor >> 6 !== 0 || (descriptor & 0x20) !== 0, `descriptor ${descriptor.toString(2)}`)
})

it('compresses off the event loop: the loop keeps turning while a large body is compressed', async () => {
  const large = Buffer.concat(Array.from({ length: 16 }, (_, i) => Buffer.concat([text, Buffer.from(String(i))])))
  let turns = 0
  let running = true
  const spin = () => {
    if (!running) return
    turns++
    setImmediate(spin)
  }
  setImmediate(spin)
  // A synchronous compression wrapped in a promise would resolve before any setImmediate ran.
  const out = await compressAtLevel(large, 'br', 9)
  running = false
  assert.ok(decompress('br', out).equals(large))
  assert.ok(turns > 0, 'the event loop did not turn during compression')
})
