// Per-bucket budgets (buckets[].cache.max_size) in the memory and disk tiers: a bucket over its
// budget evicts its own least recently used entries and never another bucket's; buckets without a
// budget share what the budgets leave; new budgets apply to what a tier already holds.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import type { BucketBudgetMap } from '../../src/cache/bucket-budgets.ts'
import { DiskCache } from '../../src/cache/disk.ts'
import { MemoryCache } from '../../src/cache/memory.ts'
import { TieredCache } from '../../src/cache/tiered.ts'
import type { CachedObject } from '../../src/ports.ts'
import { eventually } from '../support/eventually.ts'

const TIER_BYTES = 40_000
const BODY = 2000
/** Room for three or four entries of BODY bytes in either tier (their sizes include overhead). */
const A_BUDGET = 10_000

type BudgetedTier = MemoryCache | DiskCache

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

async function newDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-budgets-'))
  dirs.push(dir)
  return dir
}

const tiers: Record<string, (budgets: BucketBudgetMap, dir?: string) => Promise<BudgetedTier>> = {
  memory: async (budgets) => new MemoryCache({ maxBytes: TIER_BYTES, maxItemBytes: 8000, staleSeconds: 60, budgets }),
  disk: async (budgets, dir) =>
    DiskCache.open({ dir: dir ?? (await newDir()), maxBytes: TIER_BYTES, maxItemBytes: 8000, staleSeconds: 60, budgets }),
}

const body = (i: number) => Buffer.alloc(BODY, i)

function entry(bytes: Buffer): CachedObject {
  const now = Date.now()
  const meta = { size: bytes.length, etag: '"e"', lastModified: undefined, contentType: 'application/octet-stream' }
  return {
    meta: { ...meta, cacheControl: undefined, contentDisposition: undefined, contentEncoding: undefined, contentLanguage: undefined, expires: undefined, userMetadata: {} },
    body: bytes,
    storedAt: now,
    freshUntil: now + 60_000,
  }
}

async function fill(store: { set: BudgetedTier['set'] }, bucket: string, count: number, from = 0): Promise<string[]> {
  const keys: string[] = []
  for (let i = from; i < from + count; i++) {
    const key = `${bucket}/obj-${i}.bin`
    await store.set(key, entry(body(i)))
    keys.push(key)
  }
  return keys
}

async function held(store: { get: BudgetedTier['get'] }, keys: string[]): Promise<string[]> {
  const found: string[] = []
  // Reads touch recency: read in the order written, so the order of the survivors is unchanged.
  for (const key of keys) if ((await store.get(key)) !== undefined) found.push(key)
  return found
}

/** The bucket kept its most recent entries, as many as its budget holds, and none older. */
function assertNewestWithin(survivors: string[], written: string[], budget: number): void {
  assert.ok(survivors.length > 0, 'the newest entry is kept')
  assert.deepEqual(survivors, written.slice(written.length - survivors.length), 'only the most recent entries survive')
  assert.ok(survivors.length * BODY <= budget, `${survivors.length} entries of ${BODY} bytes exceed the budget of ${budget}`)
}

for (const [name, make] of Object.entries(tiers)) {
  describe(`${name} tier with per-bucket budgets`, () => {
    it("fills bucket A past its budget and leaves bucket B's entries untouched", async () => {
      // Without a budget, A's traffic (twice the tier) pushes B's entries out: the control.
      const shared = await make({})
      const bKeysShared = await fill(shared, 'b', 3)
      await fill(shared, 'a', 20)
      assert.deepEqual(await held(shared, bKeysShared), [], 'without budgets A evicts B')

      const store = await make({ a: A_BUDGET })
      const bKeys = await fill(store, 'b', 3)
      const aKeys = await fill(store, 'a', 20)
      assert.deepEqual(await held(store, bKeys), bKeys, "B's entries are all still there")
      assertNewestWithin(await held(store, aKeys), aKeys, A_BUDGET)
      assert.ok((store.stats().bytes ?? 0) <= TIER_BYTES)
      assert.ok(store.stats().evictions >= 15, 'A evicted its own entries')
    })

    it("evicts the bucket's least recently used entry, not its oldest", async () => {
      const store = await make({ a: A_BUDGET })
      const [first, second] = await fill(store, 'a', 3)
      assert.ok((await store.get(first as string)) !== undefined)
      await fill(store, 'a', 2, 3)
      assert.ok((await store.get(first as string)) !== undefined, 'the entry just read is kept')
      assert.equal(await store.get(second as string), undefined, 'the least recently used goes')
    })

    it('lets the buckets without a budget share what the budgets leave, without touching budgeted entries', async () => {
      // A reserves 30 000 bytes; B and C share the remaining 10 000.
      const store = await make({ a: 30_000 })
      const aKeys = await fill(store, 'a', 5)
      const bKeys = await fill(store, 'b', 10)
      const cKeys = await fill(store, 'c', 10)
      assert.deepEqual(await held(store, aKeys), aKeys, "B's and C's traffic leaves A's entries alone")
      const shared = await held(store, [...bKeys, ...cKeys])
      assertNewestWithin(shared, [...bKeys, ...cKeys], 10_000)
    })

    it('never stores an entry larger than its bucket budget, and drops the older copy of its key', async () => {
      const store = await make({ a: 1500 })
      await store.set('a/grows.bin', entry(Buffer.alloc(500, 1)))
      assert.ok((await store.get('a/grows.bin')) !== undefined, 'a small entry fits')
      await store.set('a/grows.bin', entry(Buffer.alloc(3000, 2)))
      assert.equal(await store.get('a/grows.bin'), undefined, 'the outdated small copy is not served')
    })

    it('applies changed budgets to what it already holds, keeping each bucket’s newest entries', async () => {
      const store = await make({})
      const bKeys = await fill(store, 'b', 3)
      const aKeys = await fill(store, 'a', 6)
      store.setBudgets({ a: 5000 })
      assert.deepEqual(await held(store, bKeys), bKeys)
      assertNewestWithin(await held(store, aKeys), aKeys, 5000)
      // A larger budget evicts nothing, and A can grow into it.
      store.setBudgets({ a: A_BUDGET })
      const more = await fill(store, 'a', 3, 6)
      assert.deepEqual(await held(store, more), more)
      assert.deepEqual(await held(store, bKeys), bKeys)
    })
  })
}

describe('disk tier budgets across restarts', () => {
  it('applies a budget to the files found at start-up, keeping the newest', async () => {
    const dir = await newDir()
    const before = await tiers.disk!({}, dir)
    const bKeys = await fill(before, 'b', 2)
    const aKeys = await fill(before, 'a', 8)
    // Files are ordered by modification time at start-up; give each its own millisecond.
    const { utimes } = await import('node:fs/promises')
    const { createHash } = await import('node:crypto')
    let t = Date.now() / 1000 - 100
    for (const key of [...bKeys, ...aKeys]) {
      const file = join(dir, `${createHash('sha256').update(key).digest('hex')}.entry`)
      t += 1
      await utimes(file, t, t)
    }
    const reopened = await tiers.disk!({ a: A_BUDGET }, dir)
    assert.deepEqual(await held(reopened, bKeys), bKeys)
    const survivors = await held(reopened, aKeys)
    assertNewestWithin(survivors, aKeys, A_BUDGET)
    const expected = bKeys.length + survivors.length
    await eventually(async () => (await readdir(dir)).length === expected, `${expected} files left (evicted ones deleted)`)
  })
})

describe('tiered cache', () => {
  it('passes new budgets on to its memory and disk tiers', async () => {
    const memory = await tiers.memory!({})
    const disk = await tiers.disk!({})
    const store = new TieredCache([memory, disk])
    const bKeys = await fill(store, 'b', 2)
    const aKeys = await fill(store, 'a', 8)
    store.setBudgets({ a: A_BUDGET })
    for (const tier of [memory, disk]) {
      assert.deepEqual(await held(tier, bKeys), bKeys, tier.name)
      assertNewestWithin(await held(tier, aKeys), aKeys, A_BUDGET)
    }
  })
})
