// The Redis tier against a real redis-server that hangs (SIGSTOP: connections stay open, nothing
// answers): each call waits one timeout until the node's breaker opens, then none.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { startRedis } from '../../test/support/redis.ts'
import type { CachedObject } from '../ports.ts'
import { FAILURES_TO_OPEN } from '../store-breaker.ts'
import { MAX_HELD_MS } from './deadlines.ts'
import { RedisCache } from './redis.ts'

const TIMEOUT_MS = 100

function entry(text: string): CachedObject {
  const body = Buffer.from(text)
  const now = Date.now()
  return {
    meta: {
      size: body.length,
      etag: '"abc"',
      lastModified: undefined,
      contentType: 'text/plain',
      cacheControl: undefined,
      contentDisposition: undefined,
      contentEncoding: undefined,
      contentLanguage: undefined,
      expires: undefined,
      userMetadata: {},
    },
    body,
    storedAt: now,
    freshUntil: now + 60_000,
  }
}

/** Polls until the store reads back what it writes (Redis connected, breaker closed). */
async function readable(store: RedisCache): Promise<void> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    await store.set('__probe', entry('p'))
    if ((await store.get('__probe')) !== undefined) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error('the Redis store never read back what it wrote')
}

describe('redis tier on a hung Redis', () => {
  it('gives each call one timeout until the breaker opens, then skips Redis, and reads again once it answers', async () => {
    const redis = await startRedis()
    const store = new RedisCache({ url: redis.url, clusterNodes: [], keyPrefix: 'hung:', timeoutMs: TIMEOUT_MS, staleSeconds: 60, maxItemBytes: 1 << 19 })
    const timedGet = async () => {
      const started = performance.now()
      const got = await store.get('b/x')
      return { got, ms: performance.now() - started }
    }
    try {
      await readable(store)
      await store.set('b/x', entry('x'))
      redis.pause()
      for (let i = 0; i < FAILURES_TO_OPEN; i++) {
        const { got, ms } = await timedGet()
        assert.equal(got, undefined)
        // At least the timeout; at most its grace periods, were this process's timers late.
        assert.ok(ms >= TIMEOUT_MS - 5 && ms < TIMEOUT_MS + MAX_HELD_MS + 500, `get ${i + 1} on a hung Redis took ${ms.toFixed(0)} ms`)
      }
      const skipped = await timedGet()
      assert.equal(skipped.got, undefined)
      assert.ok(skipped.ms < 50, `a get with the breaker open took ${skipped.ms.toFixed(0)} ms`)
      redis.resume()
      await readable(store)
      assert.equal((await store.get('b/x'))?.body.toString(), 'x')
    } finally {
      await store.close()
      await redis.stop()
    }
  })
})
