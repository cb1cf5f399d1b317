// The CacheStore contract, run against every implementation: memory, disk, Redis (a real
// redis-server, and a real 3-master Redis Cluster) and the tiered composition of all three. Bodies come back as bytes or, from the
// disk tier for large entries, as a StoredBody read by range; both must give the same bytes.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open as openFile, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DiskCache } from '../../src/cache/disk.ts'
import { BLOCK_SIZE, parseHead } from '../../src/cache/disk-format.ts'
import { MemoryCache } from '../../src/cache/memory.ts'
import { RedisCache } from '../../src/cache/redis.ts'
import { TieredCache } from '../../src/cache/tiered.ts'
import type { CachedBody, CachedObject, CacheStore } from '../../src/ports.ts'
import type { ByteRange } from '../../src/types.ts'
import { eventually } from '../support/eventually.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'
import { startRedisCluster, type TestRedisCluster } from '../support/redis-cluster.ts'

const STALE_SECONDS = 60
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
/** Over the disk tier's 64 KiB read-whole limit and over one 256 KiB block: streamed by block. */
const LARGE = randomBytes(BLOCK_SIZE + 44_000)

/** The body's bytes (or those of `range`), whichever kind of body it is. */
async function bytesOf(body: CachedBody, range?: ByteRange): Promise<Buffer> {
  if (body instanceof Uint8Array) return Buffer.from(range === undefined ? body : body.subarray(range.start, range.end + 1))
  const chunks: Uint8Array[] = []
  for await (const chunk of body.stream(range)) chunks.push(chunk)
  return Buffer.concat(chunks)
}

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
let cluster: TestRedisCluster | undefined
const dirs: string[] = []
const opened: CacheStore[] = []
before(async () => {
  redis = await startRedis()
})
after(async () => {
  for (const store of opened) await store.close()
  await redis?.stop()
  await cluster?.stop()
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
  'redis cluster': async () => {
    cluster ??= await startRedisCluster()
    const store = new RedisCache({
      url: '',
      clusterNodes: cluster.seeds,
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
      assert.deepEqual(await bytesOf(got.body), ALL_BYTES)
      assert.deepEqual(got.meta, stored.meta)
      assert.equal(got.storedAt, stored.storedAt)
      assert.equal(got.freshUntil, stored.freshUntil)
    })

    it('returns a large body whole and by range, with the same bytes', async () => {
      await store.set('bucket/large.bin', entry(LARGE))
      const got = await store.get('bucket/large.bin')
      assert.ok(got !== undefined)
      assert.equal(got.body.length, LARGE.length)
      assert.deepEqual(await bytesOf(got.body), LARGE)
      const across = { start: BLOCK_SIZE - 10, end: BLOCK_SIZE + 9 }
      assert.deepEqual(await bytesOf(got.body, across), LARGE.subarray(across.start, across.end + 1))
      const last = { start: LARGE.length - 1, end: LARGE.length - 1 }
      assert.deepEqual(await bytesOf(got.body, last), LARGE.subarray(LARGE.length - 1))
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

/** A large entry as the disk tier hands it back: its body a StoredBody on a file. */
async function storedEntry(): Promise<{ disk: DiskCache; got: CachedObject }> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
  dirs.push(dir)
  const disk = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
  await disk.set('source/large.bin', entry(LARGE))
  const got = await disk.get('source/large.bin')
  assert.ok(got !== undefined && !(got.body instanceof Uint8Array), 'a StoredBody')
  return { disk, got }
}

for (const name of ['memory', 'disk', 'tiered'] as const) {
  describe(`CacheStore contract: ${name} takes a StoredBody`, () => {
    it('stores the bytes a StoredBody from another tier reads', async () => {
      const store = await factories[name]!()
      opened.push(store)
      const { got } = await storedEntry()
      const refreshed = { ...got, storedAt: got.storedAt + 1000, freshUntil: got.freshUntil + 1000 }
      await store.set('bucket/copied.bin', refreshed)
      const copy = await store.get('bucket/copied.bin')
      assert.ok(copy !== undefined)
      assert.deepEqual(await bytesOf(copy.body), LARGE)
      assert.equal(copy.storedAt, refreshed.storedAt)
      assert.deepEqual(copy.meta, got.meta)
    })
  })
}

/** The disk tier's file for `key`, and where its body starts. */
async function fileOf(dir: string, key: string): Promise<{ file: string; bodyOffset: number }> {
  const { createHash } = await import('node:crypto')
  const file = join(dir, `${createHash('sha256').update(key).digest('hex')}.entry`)
  const head = parseHead(await readFile(file))
  assert.ok(head !== undefined && !('need' in head))
  return { file, bodyOffset: head.bodyOffset }
}

/** Flips one byte of a file in place (the same inode: streams already open see it). */
async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await openFile(file, 'r+')
  try {
    const one = Buffer.alloc(1)
    await handle.read(one, 0, 1, offset)
    one[0] = (one[0] ?? 0) ^ 0xff
    await handle.write(one, 0, 1, offset)
  } finally {
    await handle.close()
  }
}

const gone = async (file: string) => {
  for (let i = 0; i < 200; i++) {
    if (!(await readdir(join(file, '..'))).includes(file.split('/').at(-1) as string)) return true
    await new Promise((resolve) => setImmediate(resolve))
  }
  return false
}

describe('disk tier: large entries', () => {
  const open = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    return { dir, store: await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 }) }
  }

  it('writes an entry whose body arrives in pieces: never whole in memory, stored once complete', async () => {
    const { dir, store } = await open()
    const { body: _, ...head } = entry(LARGE)
    const writer = store.writer('b/streamed.bin', head, LARGE.length)
    assert.ok(writer !== undefined)
    for (let at = 0; at < LARGE.length; at += 10_000) await writer.write(LARGE.subarray(at, at + 10_000))
    assert.equal(await store.get('b/streamed.bin'), undefined, 'not findable before its commit')
    const committed = await writer.commit()
    assert.ok(committed !== undefined && !(committed.body instanceof Uint8Array), 'a large body comes back as a stored body')
    assert.deepEqual(await bytesOf(committed.body), LARGE)
    const got = await store.get('b/streamed.bin')
    assert.ok(got !== undefined)
    assert.deepEqual(await bytesOf(got.body, { start: BLOCK_SIZE - 3, end: BLOCK_SIZE + 2 }), LARGE.subarray(BLOCK_SIZE - 3, BLOCK_SIZE + 3))
    assert.deepEqual(got.meta.userMetadata, { owner: 'team-a' })
    // Handed back to `set` (as the tiered cache does), the file is not written again.
    const fileNow = async () => stat(join(dir, (await readdir(dir))[0] as string))
    const before = await fileNow()
    await store.set('b/streamed.bin', committed)
    const after = await fileNow()
    assert.deepEqual([after.ino, after.mtimeMs], [before.ino, before.mtimeMs])
    // And it survives a restart like any entry.
    const reopened = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    assert.deepEqual(await bytesOf((await reopened.get('b/streamed.bin'))?.body ?? Buffer.alloc(0)), LARGE)
  })

  it('leaves nothing behind from a body that ends short, runs long, or is given up', async () => {
    const { dir, store } = await open()
    const { body: _, ...head } = entry(LARGE)
    const short = store.writer('b/short.bin', head, LARGE.length)
    assert.ok(short !== undefined)
    await short.write(LARGE.subarray(0, 1000))
    assert.equal(await short.commit(), undefined)
    const long = store.writer('b/long.bin', head, 1000)
    assert.ok(long !== undefined)
    assert.equal(await long.write(LARGE.subarray(0, 1001)), false, 'too long: the writer fails')
    assert.equal(await long.commit(), undefined)
    const dropped = store.writer('b/dropped.bin', head, LARGE.length)
    assert.ok(dropped !== undefined)
    await dropped.write(LARGE.subarray(0, 1000))
    dropped.abort()
    await eventually(async () => (await readdir(dir)).length === 0, 'no file left', async () => `left: ${(await readdir(dir)).join(', ')}`)
    for (const key of ['b/short.bin', 'b/long.bin', 'b/dropped.bin']) assert.equal(await store.get(key), undefined)
  })

  it('reports a failed disk as false from write, never as a rejection (a stream feeding it cannot crash the process)', async () => {
    const { dir, store } = await open()
    const { body: _, ...head } = entry(LARGE)
    await rm(dir, { recursive: true, force: true })
    const writer = store.writer('b/nowhere.bin', head, LARGE.length)
    assert.ok(writer !== undefined)
    for (let at = 0; at < LARGE.length; at += 100_000) assert.equal(typeof (await writer.write(LARGE.subarray(at, at + 100_000))), 'boolean')
    assert.equal(await writer.commit(), undefined)
    assert.equal(await writer.write(LARGE.subarray(0, 10)), false, 'once failed, writes say so')
    const again = store.writer('b/nowhere-either.bin', head, LARGE.length)
    assert.ok(again !== undefined)
    const source = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(LARGE.subarray(0, 100_000))
        controller.enqueue(LARGE.subarray(100_000))
        controller.close()
      },
    })
    assert.equal(await again.writeAll(source), undefined)
    assert.equal(await store.get('b/nowhere.bin'), undefined)
  })

  it('refuses a writer for a body over the item limit', async () => {
    const { store } = await open()
    const { body: _, ...head } = entry(LARGE)
    assert.equal(store.writer('b/huge.bin', head, (1 << 21) + 1), undefined)
  })

  it('hands back a large entry without reading its body: a damaged body is found only when read', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const { file, bodyOffset } = await fileOf(dir, 'b/large.bin')
    await flipByte(file, bodyOffset + 5)
    const got = await store.get('b/large.bin')
    assert.ok(got !== undefined, 'the header is intact: metadata is served (HEAD, 304)')
    assert.equal(got.body.length, LARGE.length)
    await assert.rejects(bytesOf(got.body), /block 0 fails its checksum/)
    assert.ok(await gone(file), 'the damaged entry is deleted')
    assert.equal(await store.get('b/large.bin'), undefined)
  })

  it('reads only the blocks a range needs: damage elsewhere leaves the entry', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const { file, bodyOffset } = await fileOf(dir, 'b/large.bin')
    await flipByte(file, bodyOffset + BLOCK_SIZE + 7)
    const got = await store.get('b/large.bin')
    assert.ok(got !== undefined)
    assert.deepEqual(await bytesOf(got.body, { start: 100, end: 199 }), LARGE.subarray(100, 200))
    assert.ok((await readdir(dir)).length === 1, 'still there')
    assert.ok((await store.get('b/large.bin')) !== undefined)
  })

  it('yields the blocks before a damaged one, then errors (never a clean end) and deletes the entry', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const { file, bodyOffset } = await fileOf(dir, 'b/large.bin')
    await flipByte(file, bodyOffset + BLOCK_SIZE + 7)
    const got = await store.get('b/large.bin')
    const body = got?.body
    assert.ok(body !== undefined && !(body instanceof Uint8Array))
    const received: Uint8Array[] = []
    await assert.rejects(async () => {
      for await (const chunk of body.stream()) received.push(chunk)
    }, /block 1 fails its checksum/)
    assert.deepEqual(Buffer.concat(received), LARGE.subarray(0, BLOCK_SIZE))
    assert.ok(await gone(file))
  })

  it('gives the same bytes through one reused buffer, for a consumer done with each chunk first', async () => {
    const { store } = await open()
    const big = randomBytes(5 * BLOCK_SIZE + 123)
    await store.set('b/reused.bin', entry(big))
    const got = await store.get('b/reused.bin')
    const body = got?.body
    assert.ok(body !== undefined && !(body instanceof Uint8Array))
    for (const range of [undefined, { start: 3, end: big.length - 2 }, { start: BLOCK_SIZE + 1, end: 4 * BLOCK_SIZE + 7 }]) {
      const copies: Buffer[] = []
      const seen = new Set<ArrayBufferLike>()
      for await (const chunk of body.stream(range, { reuseChunks: true })) {
        copies.push(Buffer.from(chunk))
        seen.add(chunk.buffer)
      }
      assert.deepEqual(Buffer.concat(copies), range === undefined ? big : big.subarray(range.start, range.end + 1))
      assert.equal(seen.size, 1, 'one buffer for the whole stream')
    }
  })

  it('rewrites an entry from its own stored body (a revalidated copy with new timestamps)', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const got = await store.get('b/large.bin')
    assert.ok(got !== undefined)
    await store.set('b/large.bin', { ...got, storedAt: got.storedAt + 5000, freshUntil: got.freshUntil + 5000 })
    const refreshed = await store.get('b/large.bin')
    assert.ok(refreshed !== undefined)
    assert.equal(refreshed.storedAt, got.storedAt + 5000)
    assert.deepEqual(await bytesOf(refreshed.body), LARGE)
    // The stream handed out before the rewrite still reads the bytes it was handed.
    assert.deepEqual(await bytesOf(got.body), LARGE)
    assert.equal((await readdir(dir)).length, 1)
  })

  it('keeps large entries across a restart', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const reopened = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    const got = await reopened.get('b/large.bin')
    assert.ok(got !== undefined)
    assert.deepEqual(await bytesOf(got.body), LARGE)
    void store
  })

  it('deletes files of the old format (and damaged headers) at start-up', async () => {
    const { dir, store } = await open()
    await store.set('b/kept.bin', entry('kept'))
    // Format 1: [u32 header length][JSON with a sha256][body].
    const json = Buffer.from(JSON.stringify({ key: 'b/old.bin', size: 3, sha256: 'x', storedAt: Date.now(), freshUntil: Date.now() + 60_000 }))
    const prefix = Buffer.alloc(4)
    prefix.writeUInt32BE(json.length)
    const { createHash } = await import('node:crypto')
    const oldFile = join(dir, `${createHash('sha256').update('b/old.bin').digest('hex')}.entry`)
    await writeFile(oldFile, Buffer.concat([prefix, json, Buffer.from('old')]))
    const { file: kept } = await fileOf(dir, 'b/kept.bin')
    const reopened = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    assert.deepEqual(await readdir(dir), [kept.split('/').at(-1)])
    assert.equal(await reopened.get('b/old.bin'), undefined)
  })

  it('is copied up into memory only when memory would keep it, and then read once', async () => {
    const { dir, store } = await open()
    await store.set('b/large.bin', entry(LARGE))
    const { file, bodyOffset } = await fileOf(dir, 'b/large.bin')
    const small = new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 64 * 1024, staleSeconds: 60 })
    // Damage the body: had the memory tier read it, the disk tier would have dropped the entry.
    await flipByte(file, bodyOffset + 1)
    const got = await store.get('b/large.bin')
    assert.ok(got !== undefined)
    await small.set('b/large.bin', got)
    assert.equal(small.peek('b/large.bin'), undefined)
    assert.equal((await readdir(dir)).length, 1, 'the body was never read')
    // Repaired, through the tiered cache: a memory tier that keeps it reads it (in the background).
    await flipByte(file, bodyOffset + 1)
    const roomy = new MemoryCache({ maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    const withRoom = new TieredCache([roomy, store])
    assert.equal((await withRoom.lookup('b/large.bin'))?.tier, 'disk')
    for (let i = 0; i < 200 && roomy.peek('b/large.bin') === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 5))
    const copied = roomy.peek('b/large.bin')
    assert.ok(copied !== undefined && copied.body instanceof Uint8Array)
    assert.deepEqual(copied.body, LARGE)
  })
})

describe('tiered cache: a purge sticks', () => {
  const open = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    const memory = new MemoryCache({ maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    const disk = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 21, staleSeconds: 60 })
    return { dir, memory, disk, tiered: new TieredCache([memory, disk]) }
  }

  it('a large fill that was writing when its key was purged is not installed, nor copied to memory', async () => {
    const { dir, memory, disk, tiered } = await open()
    const { body: _, ...head } = entry(LARGE)
    const writer = tiered.writer('b/video.bin', head, LARGE.length)
    assert.ok(writer !== undefined)
    await writer.write(LARGE.subarray(0, 100_000))
    assert.equal(await tiered.purge('b/'), 0, 'nothing stored yet')
    await writer.write(LARGE.subarray(100_000))
    const committed = await writer.commit()
    assert.equal(committed, undefined, 'the purged copy is not handed back to be stored')
    assert.equal(disk.has('b/video.bin'), false)
    assert.equal(await tiered.get('b/video.bin'), undefined)
    assert.deepEqual(await readdir(dir), [], 'no file left behind')
    // The same for an exact purge (a delete) of the key.
    const during = tiered.writer('b/video.bin', { ...head, storedAt: Date.now() }, LARGE.length)
    assert.ok(during !== undefined)
    await during.write(LARGE.subarray(0, 1000))
    await tiered.delete('b/video.bin')
    await during.write(LARGE.subarray(1000))
    assert.equal(await during.commit(), undefined)
    assert.equal(disk.has('b/video.bin'), false)
    // A copy fetched after the purge is stored as usual.
    const later = tiered.writer('b/video.bin', { ...head, storedAt: Date.now() + 5 }, LARGE.length)
    assert.ok(later !== undefined)
    await later.write(LARGE)
    assert.ok((await later.commit()) !== undefined && disk.has('b/video.bin'))
  })

  it('a small fill fetched before a purge is not stored after it; one fetched after is', async () => {
    const { memory, disk, tiered } = await open()
    const before = { ...entry('old version'), storedAt: Date.now() - 10 }
    await tiered.purge('b/page')
    await tiered.set('b/page.html', before)
    assert.equal(memory.has('b/page.html') || disk.has('b/page.html'), false)
    const after = { ...entry('new version'), storedAt: Date.now() + 5 }
    await tiered.set('b/page.html', after)
    const got = await tiered.get('b/page.html')
    assert.deepEqual(got === undefined ? undefined : await bytesOf(got.body), Buffer.from('new version'))
  })

  it('a lower tier\'s hit read just before a purge is not copied up after it', async () => {
    const { memory, disk, tiered } = await open()
    await disk.set('b/logo.png', entry('logo'))
    // From the disk tier, as a request that missed memory reads it: the read is made at once.
    const lookup = tiered.lookup('b/logo.png', 1)
    await tiered.purge('b/logo.png')
    const hit = await lookup
    assert.equal(hit?.tier, 'disk', 'the request that read it still gets it')
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(memory.has('b/logo.png'), false, 'not copied into memory after the purge')
    assert.equal(await tiered.get('b/logo.png'), undefined)
  })
})

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
    // The files are unlinked in the background.
    await eventually(async () => (await readdir(dir)).length === 0, 'the damaged files deleted', async () => `left: ${(await readdir(dir)).join(', ')}`)
  })

  it('a purge deletes the file under the name, even one an older tier on the directory wrote after this one read it (a reload overlap)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    const previous = await open(dir)
    await previous.set('b/k', entry('first'))
    const current = await open(dir)
    assert.equal((await current.get('b/k'))?.body.toString(), 'first')
    // The previous generation's fill in flight lands after the current tier opened the file.
    await previous.set('b/k', entry('second'))
    await current.purge('b/')
    await current.filesDeleted()
    assert.equal(await (await open(dir)).get('b/k'), undefined, 'a restart does not serve the purged object')
  })

  it('stays under max_size, evicting the least recently used files', async () => {
    const { readdir } = await import('node:fs/promises')
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-'))
    dirs.push(dir)
    const store = await open(dir, 10_000)
    for (let i = 0; i < 10; i++) await store.set(`b/${i}`, entry(Buffer.alloc(2000, i)))
    assert.ok((store.stats().bytes ?? 0) <= 10_000)
    // Evicted files are unlinked in the background.
    await eventually(async () => (await readdir(dir)).length <= 5, 'at most 5 files left', async () => `files: ${(await readdir(dir)).length}`)
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
