// Per-bucket cache budgets through the running proxy (s3rver behind SigV4 checks, memory and disk
// tiers): bucket A's traffic cycles through its own budget and bucket B's object stays a HIT, in
// memory and on disk; a changed budget applies on reload without emptying the cache.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { access, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const OBJECT = Buffer.alloc(4000, 7)
const A_OBJECTS = 12

let s3: TestS3
let dir: string
const proxies: TestProxy[] = []

/**
 * Both tiers hold 40 KB: about nine 4000-byte objects. A's twelve objects are more than the whole
 * tier, so without a budget they push B's object out; with 16 KB, A keeps its newest three.
 */
const config = (cacheDir: string, aBudget: string | undefined) => `
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory, disk]
  ttl_seconds: 300
  max_item_size: 8KB
  memory: { max_size: 40KB }
  disk: { dir: "${cacheDir}", max_size: 40KB }
buckets:
${bucketYaml({ name: 'a', prefix: '/a', bucket: 'budgets', endpoint: s3.endpoint, extra: aBudget === undefined ? '' : `    cache: { max_size: ${aBudget} }` })}
${bucketYaml({ name: 'b', prefix: '/b', bucket: 'budgets', endpoint: s3.endpoint })}
`

async function start(yaml: string): Promise<TestProxy> {
  const proxy = await startTestProxy(yaml)
  proxies.push(proxy)
  return proxy
}

/** GETs an object and waits until the disk tier has written it (fills run in the background). */
async function fetchAndStore(proxy: TestProxy, cacheDir: string, bucket: string, key: string) {
  const res = await send(proxy.url, `/${bucket}/${key}`)
  assert.equal(res.status, 200)
  const file = join(cacheDir, `${createHash('sha256').update(`${bucket}/${key}`).digest('hex')}.entry`)
  await eventually(() => access(file).then(() => true), `the disk entry of ${bucket}/${key}`)
  return res
}

async function aTraffic(proxy: TestProxy, cacheDir: string): Promise<void> {
  for (let i = 0; i < A_OBJECTS; i++) {
    const res = await fetchAndStore(proxy, cacheDir, 'a', `a-${i}.bin`)
    assert.equal(res.headers['x-cache'], 'MISS', `a-${i}.bin`)
  }
}

/** X-Cache and Cache-Status of a GET (a miss is stored) or a HEAD (a miss stores nothing). */
const cacheStatus = async (proxy: TestProxy, path: string, method: 'GET' | 'HEAD' = 'GET') => {
  const res = await send(proxy.url, path, { method })
  assert.equal(res.status, 200)
  if (method === 'GET') assert.deepEqual(res.body, OBJECT)
  return `${String(res.headers['x-cache'])} ${String(res.headers['cache-status'])}`
}

before(async () => {
  s3 = await startS3()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-budgets-e2e-'))
  await s3.createBucket('budgets')
  await s3.put('budgets', 'b.bin', OBJECT)
  for (let i = 0; i < A_OBJECTS; i++) await s3.put('budgets', `a-${i}.bin`, OBJECT)
})

after(async () => {
  for (const proxy of proxies) await proxy.stop()
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('without a budget', () => {
  it("lets bucket A's traffic evict bucket B's object (the case budgets are for)", async () => {
    const cacheDir = join(dir, 'shared')
    const proxy = await start(config(cacheDir, undefined))
    await fetchAndStore(proxy, cacheDir, 'b', 'b.bin')
    await aTraffic(proxy, cacheDir)
    assert.equal(await cacheStatus(proxy, '/b/b.bin'), 'MISS yatagarasu; fwd=miss; stored')
  })
})

describe("with bucket A's cache.max_size", () => {
  const cacheDir = () => join(dir, 'budgeted')
  let proxy: TestProxy

  before(async () => {
    proxy = await start(config(cacheDir(), '16KB'))
  })

  it("keeps B's object a HIT after A's traffic, and A only its newest objects", async () => {
    await fetchAndStore(proxy, cacheDir(), 'b', 'b.bin')
    assert.equal(await cacheStatus(proxy, '/b/b.bin'), 'HIT yatagarasu; hit; detail=memory')
    await aTraffic(proxy, cacheDir())
    assert.equal(await cacheStatus(proxy, '/b/b.bin'), 'HIT yatagarasu; hit; detail=memory')
    assert.equal(await cacheStatus(proxy, `/a/a-${A_OBJECTS - 1}.bin`, 'HEAD'), 'HIT yatagarasu; hit; detail=memory')
    // Gone from both tiers (a disk copy would answer HIT with detail=disk).
    assert.equal(await cacheStatus(proxy, '/a/a-0.bin', 'HEAD'), 'MISS yatagarasu; fwd=miss')
  })

  it("keeps B's object on disk too: after a restart the disk tier answers it", async () => {
    await proxy.stop()
    proxy = await start(config(cacheDir(), '16KB'))
    assert.equal(await cacheStatus(proxy, '/b/b.bin'), 'HIT yatagarasu; hit; detail=disk')
    // A's newest objects survived on disk, within its budget: 16 KB holds three. (Read oldest
    // first: each is copied to memory, and a-11 ends up A's most recent entry in both tiers.)
    assert.equal(await cacheStatus(proxy, `/a/a-${A_OBJECTS - 4}.bin`, 'HEAD'), 'MISS yatagarasu; fwd=miss')
    for (const i of [A_OBJECTS - 3, A_OBJECTS - 2, A_OBJECTS - 1]) {
      assert.equal(await cacheStatus(proxy, `/a/a-${i}.bin`), 'HIT yatagarasu; hit; detail=disk', `a-${i}.bin`)
    }
  })

  it('applies a smaller budget on reload, keeping the cache and each bucket’s newest entries', async () => {
    // From the previous test, memory and disk hold b.bin and A's three newest (a-11 most recent).
    await proxy.rewrite(config(cacheDir(), '8KB'))
    const result = await proxy.proxy.reload()
    assert.equal(result.ok, true)
    assert.equal(await cacheStatus(proxy, '/b/b.bin'), 'HIT yatagarasu; hit; detail=memory')
    assert.equal(await cacheStatus(proxy, `/a/a-${A_OBJECTS - 1}.bin`, 'HEAD'), 'HIT yatagarasu; hit; detail=memory')
    // 8 KB holds one object: the older two are gone from memory and disk.
    for (const i of [A_OBJECTS - 3, A_OBJECTS - 2]) {
      assert.equal(await cacheStatus(proxy, `/a/a-${i}.bin`, 'HEAD'), 'MISS yatagarasu; fwd=miss', `a-${i}.bin`)
    }
  })
})

describe('configuration warnings', () => {
  it('logs a budget that does not fit its tier when the config goes live', async () => {
    const proxy = await start(config(join(dir, 'warned'), '1MB'))
    const line = await proxy.logged((l) => l.key === 'buckets[0](a).cache.max_size')
    assert.equal(line.level, 40)
    assert.equal(line.msg, 'config: 1 MiB is not less than cache.memory.max_size (40 KiB): in the memory tier this bucket may take all of it')
  })
})
