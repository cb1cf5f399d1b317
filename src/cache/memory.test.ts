// The memory tier keeps bytes of its own: a body that is a view of a larger buffer (a slice of
// Node's buffer pool from a disk hit, a Redis reply) must not keep that buffer alive.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { CachedObject } from '../ports.ts'
import { MemoryCache } from './memory.ts'

function entry(body: Buffer): CachedObject {
  const now = Date.now()
  const meta = { size: body.length, etag: '"e"', lastModified: undefined, contentType: undefined, cacheControl: undefined, contentDisposition: undefined, contentEncoding: undefined, contentLanguage: undefined, expires: undefined, userMetadata: {} }
  return { meta, body, storedAt: now, freshUntil: now + 60_000 }
}

describe('memory tier bodies', () => {
  it('keeps a copy of a body that is a small view of a larger buffer', async () => {
    const memory = new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: 0 })
    const reply = Buffer.alloc(64 * 1024, 9)
    reply.write('the body', 1000)
    const view = reply.subarray(1000, 1008)
    await memory.set('b/view', entry(view))
    const kept = memory.peek('b/view')
    assert.equal(kept?.body.toString(), 'the body')
    assert.ok(kept?.body instanceof Uint8Array)
    assert.equal(kept.body.buffer.byteLength, 8, 'its own 8 bytes, not the 64 KiB reply')
  })

  it('keeps a body that fills its buffer as it is', async () => {
    const memory = new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: 0 })
    const stored = entry(Buffer.allocUnsafeSlow(2048).fill(3))
    await memory.set('b/whole', stored)
    assert.equal(memory.peek('b/whole'), stored)
  })
})
