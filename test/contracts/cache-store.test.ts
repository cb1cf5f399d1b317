// The CacheStore contract, run against every implementation: memory, disk, Redis (a real
// redis-server) and the tiered composition of all three.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DiskCache } from '../../src/cache/disk.ts'
import { MemoryCache } from '../../src/cache/memory.ts'
import { RedisCache } from '../../src/cache/redis.ts'
import { TieredCache } from '../../src/cache/tiered.ts'
import type { CachedObject, CacheStore } from '../../src/ports.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'

const STALE_SECONDS = 60
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

export function entry(body: Buffer | string, freshForMs = 60_000, overrides: Partial<CachedObject['meta']> = {}): CachedObject {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  const now = Date.now()
  return {
    meta: {
      size: bytes.length,
      etag: '"abc"',
      lastModified: new Date('2026-01-02T03:04:05.000Z'),
      contentType: 'application/octet-stream',
      cacheControl: 'public, max-age=60',
      contentDisposition: undefined,
      contentEncoding: undefined,
      contentLanguage: 'en',
      expires: undefined,
      userMetadata: { owner: 'team-a' },
      ...overrides,
    },
    body: bytes,
    storedAt: now,
    freshUntil: now + freshForMs,
  }
}

let redis: TestRedis
const dirs: string[] = []
const opened: CacheStore[] = []
before(async () => {
  redis = await startRedis()
})
after(async () => {
  for (const store of opened) await store.close()
  await redis?.stop()
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

let prefixCounter = 0
const factories: Record<string, () => Promise<CacheStore>> = {
  memory: async () => new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: STALE_SECONDS }),
  disk: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    return DiskCache.open({ dir, maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: STALE_SECONDS })
  },
  redis: async () => {
    const store = new RedisCache({
      url: redis.url,
      clusterNodes: [],
      keyPrefix: `contract-${prefixCounter++}:`,
      timeoutMs: 200,
      staleSeconds: STALE_SECONDS,
      maxItemBytes: 1 << 19,
    })
    await waitReady(store)
    return store
  },
  tiered: async () => new TieredCache([await factories.memory!(), await factories.disk!(), await factories.redis!()]),
}

async function waitReady(store: RedisCache): Promise<void> {
  for (let i = 0; i < 100; i++) {
    await store.set('__probe', entry('x'))
    if ((await store.get('__probe')) !== undefined) return store.delete('__probe')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('redis store never became ready')
}

for (const [name, make] of Object.entries(factories)) {
  describe(`CacheStore contract: ${name}`, () => {
    let store: CacheStore
    before(async () => {
      store = await make()
      opened.push(store)
    })

    it('misses a key it never stored', async () => {
      assert.equal(await store.get('bucket/never'), undefined)
    })

    it('returns what was stored: bytes, metadata and timestamps', async () => {
      const stored = entry(ALL_BYTES)
      await store.set('bucket/all-bytes.bin', stored)
      const got = await store.get('bucket/all-bytes.bin')
      assert.ok(got !== undefined)
      assert.deepEqual(Buffer.from(got.body), ALL_BYTES)
      assert.deepEqual(got.meta, stored.meta)
      assert.equal(got.storedAt, stored.storedAt)
      assert.equal(got.freshUntil, stored.freshUntil)
    })

    it('keeps a stale entry within the stale window, for stale-if-error', async () => {
      await store.set('bucket/stale.txt', entry('stale', -1000))
      assert.equal((await store.get('bucket/stale.txt'))?.body.toString(), 'stale')
    })

    it('drops an entry past its stale window', async () => {
      await store.set('bucket/expired.txt', entry('old', -(STALE_SECONDS + 5) * 1000))
      assert.equal(await store.get('bucket/expired.txt'), undefined)
    })

    it('deletes a key', async () => {
      await store.set('bucket/gone.txt', entry('x'))
      await store.delete('bucket/gone.txt')
      assert.equal(await store.get('bucket/gone.txt'), undefined)
    })

    it('purges by prefix and leaves other keys', async () => {
      await store.set('alpha/a.txt', entry('a'))
      await store.set('alpha/dir/b.txt', entry('b'))
      await store.set('beta/a.txt', entry('c'))
      await store.purge('alpha/')
      assert.equal(await store.get('alpha/a.txt'), undefined)
      assert.equal(await store.get('alpha/dir/b.txt'), undefined)
      assert.equal((await store.get('beta/a.txt'))?.body.toString(), 'c')
      await store.purge('')
      assert.equal(await store.get('beta/a.txt'), undefined)
    })

    it('counts hits, misses and hit bytes', async () => {
      const before = store.stats()
      await store.set('bucket/counted.txt', entry('12345'))
      await store.get('bucket/counted.txt')
      await store.get('bucket/not-there.txt')
      const after = store.stats()
      assert.ok(after.hits >= before.hits + 1)
      assert.ok(after.hitBytes >= before.hitBytes + 5)
      assert.ok(after.misses >= before.misses + 1)
    })
  })
}

describe('memory tier', () => {
  it('stays under max_size by evicting the least recently used', async () => {
    const store = new MemoryCache({ maxBytes: 10_000, maxItemBytes: 5000, staleSeconds: 0 })
    for (let i = 0; i < 10; i++) await store.set(`b/${i}`, entry(Buffer.alloc(2000, i)))
    const stats = store.stats()
    assert.ok((stats.bytes ?? 0) <= 10_000)
    assert.ok(stats.evictions >= 5)
    assert.equal(await store.get('b/0'), undefined)
    assert.ok((await store.get('b/9')) !== undefined)
  })

  it('refuses items over max_item_size', async () => {
    const store = new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 100, staleSeconds: 0 })
    await store.set('b/big', entry(Buffer.alloc(1000)))
    assert.equal(await store.get('b/big'), undefined)
  })
})

describe('disk tier', () => {
  const open = async (dir: string, maxBytes = 1 << 20) => DiskCache.open({ dir, maxBytes, maxItemBytes: 1 << 19, staleSeconds: 60 })

  it('survives a restart: the index is rebuilt from the files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    await (await open(dir)).set('b/persisted.txt', entry('still here'))
    const reopened = await open(dir)
    assert.equal((await reopened.get('b/persisted.txt'))?.body.toString(), 'still here')
    assert.equal(reopened.stats().entries, 1)
  })

  it('never serves a corrupted or truncated entry, and deletes it', async () => {
    const { readdir, writeFile, readFile, truncate } = await import('node:fs/promises')
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    const store = await open(dir)
    await store.set('b/flipped.txt', entry('original body'))
    await store.set('b/cut.txt', entry('another body that will be cut'))
    const files = (await readdir(dir)).map((f) => join(dir, f))
    for (const file of files) {
      const bytes = await readFile(file)
      if (bytes.includes(Buffer.from('original body'))) {
        bytes.writeUInt8((bytes.at(-1) ?? 0) ^ 0xff, bytes.length - 1)
        await writeFile(file, bytes)
      } else {
        await truncate(file, bytes.length - 5)
      }
    }
    assert.equal(await store.get('b/flipped.txt'), undefined)
    assert.equal(await store.get('b/cut.txt'), undefined)
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(await readdir(dir), [])
  })

  it('stays under max_size, evicting the least recently used files', async () => {
    const { readdir } = await import('node:fs/promises')
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    const store = await open(dir, 10_000)
    for (let i = 0; i < 10; i++) await store.set(`b/${i}`, entry(Buffer.alloc(2000, i)))
    await new Promise((resolve) => setImmediate(resolve))
    assert.ok((store.stats().bytes ?? 0) <= 10_000)
    assert.ok((await readdir(dir)).length <= 5)
    assert.ok((await store.get('b/9')) !== undefined)
  })
})

describe('redis tier', () => {
  it('answers misses quickly while Redis is down, and recovers when it returns', async () => {
    const own = await startRedis()
    const store = new RedisCache({ url: own.url, clusterNodes: [], keyPrefix: 'down:', timeoutMs: 100, staleSeconds: 60, maxItemBytes: 1 << 19 })
    try {
      await waitReady(store)
      await store.set('b/x', entry('x'))
      await own.kill()
      const started = performance.now()
      for (let i = 0; i < 20; i++) assert.equal(await store.get('b/x'), undefined)
      await store.set('b/y', entry('y'))
      assert.ok(performance.now() - started < 1000, 'a dead Redis must not add latency')
      await own.restart()
      await waitReadyAfterBreaker(store)
      await store.set('b/z', entry('z'))
      assert.equal((await store.get('b/z'))?.body.toString(), 'z')
    } finally {
      await store.close()
      await own.stop()
    }
  })
})

/** After an outage the breaker stays open for a few seconds; poll until the store answers again. */
async function waitReadyAfterBreaker(store: RedisCache): Promise<void> {
  for (let i = 0; i < 400; i++) {
    await store.set('__probe', entry('p'))
    if ((await store.get('__probe')) !== undefined) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error('redis store did not recover')
}
