// The disk cache's scrub through the running proxy (s3rver behind SigV4 checks, the disk tier
// alone): `POST /admin/cache/scrub` and the schedule find an entry damaged on disk, delete it, log
// it and count it, and the next request for it is a clean miss served from S3.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { access, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { BLOCK_SIZE } from '../../src/cache/disk-format.ts'
import { eventually } from '../support/eventually.ts'
import { flipBodyByte, openHere } from '../support/disk-entry.ts'
import { bucketYaml, metricOf, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const MiB = 1024 * 1024
const ADMIN = 'admin-token-that-is-long-enough-0123456789'
const OBJECTS: Record<string, Buffer> = {
  'slow.bin': randomBytes(MiB),
  'rot.bin': randomBytes(MiB),
  'small.txt': randomBytes(2000),
}

let s3: TestS3
let dir: string
const proxies: TestProxy[] = []

const config = (cacheDir: string, scrub: string) => `
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
metrics:
  enabled: true
  port: 0
cache:
  enabled: true
  layers: [disk]
  ttl_seconds: 300
  max_item_size: 16MB
  disk:
    dir: "${cacheDir}"
    max_size: 256MB
    scrub: ${scrub}
buckets:
${bucketYaml({ name: 'big', prefix: '/big', bucket: 'big', endpoint: s3.endpoint })}
`

async function start(yaml: string): Promise<TestProxy> {
  const proxy = await startTestProxy(yaml)
  proxies.push(proxy)
  return proxy
}

const fileOf = (cacheDir: string, key: string) => join(cacheDir, `${createHash('sha256').update(`big/${key}`).digest('hex')}.entry`)
const exists = (file: string) => access(file).then(
  () => true,
  () => false
)
const originGets = (key: string) => s3.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === `/big/${key}`).length
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

/** GETs the object through the proxy and waits until the disk tier holds it. */
async function cached(proxy: TestProxy, cacheDir: string, key: string): Promise<string> {
  const res = await fetch(`${proxy.url}/big/${key}`)
  assert.equal(res.status, 200)
  await res.arrayBuffer()
  const file = fileOf(cacheDir, key)
  await eventually(() => exists(file), `the disk entry of ${key}`)
  return file
}


/** Flips one byte of block `block` of the entry's body, in place. */
const damageBlock = (file: string, block: number) => flipBodyByte(file, block * BLOCK_SIZE + 99)

function scrub(proxy: TestProxy, body?: string, token = ADMIN): Promise<Response> {
  return fetch(`${proxy.url}/admin/cache/scrub`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body }),
  })
}


before(async () => {
  s3 = await startS3()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-scrub-e2e-'))
  await s3.createBucket('big')
  for (const [key, body] of Object.entries(OBJECTS)) await s3.put('big', key, body)
})

after(async () => {
  for (const proxy of proxies) await proxy.stop()
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('disk cache scrub', () => {
  let proxy: TestProxy
  let cacheDir: string

  before(async () => {
    cacheDir = join(dir, 'admin')
    // The schedule is far off: every pass here is asked for.
    proxy = await start(config(cacheDir, '{ interval_seconds: 86400 }'))
  })

  it('one pass at a time: of two at once, one answers 409 ADMIN_SCRUB_RUNNING with the request id', async () => {
    await cached(proxy, cacheDir, 'slow.bin')
    // 1 MiB at 512 KiB/s: each pass takes at least 2 s, so the two overlap.
    const paced = JSON.stringify({ sample_rate: 1, bytes_per_sec: 512 * 1024 })
    const answers = await Promise.all([scrub(proxy, paced), scrub(proxy, paced)])
    const statuses = answers.map((a) => a.status).sort()
    assert.deepEqual(statuses, [200, 409])
    const refused = answers.find((a) => a.status === 409) as Response
    const body = (await refused.json()) as { error: { code: string; request_id: string } }
    assert.equal(body.error.code, 'ADMIN_SCRUB_RUNNING')
    assert.equal(body.error.request_id, refused.headers.get('x-request-id'))
    const done = (await (answers.find((a) => a.status === 200) as Response).json()) as { checked: number; intact: number }
    assert.deepEqual([done.checked, done.intact], [1, 1])
  })

  it('finds a damaged entry, deletes it, logs and counts it; the next GET is a miss served whole from S3', async () => {
    await cached(proxy, cacheDir, 'small.txt')
    const rot = await cached(proxy, cacheDir, 'rot.bin')
    await damageBlock(rot, 2)
    const gets = originGets('rot.bin')

    const res = await scrub(proxy, '{"sample_rate": 1}')
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const report = (await res.json()) as { checked: number; intact: number; damaged: number; stopped: boolean; damaged_entries: unknown[] }
    assert.deepEqual(
      { checked: report.checked, intact: report.intact, damaged: report.damaged, stopped: report.stopped },
      { checked: 3, intact: 2, damaged: 1, stopped: false }
    )
    assert.deepEqual(report.damaged_entries, [{ key: 'big/rot.bin', file: rot, reason: 'block 2 fails its checksum' }])
    // The file is unlinked as the entry leaves the index, without the pass waiting for it.
    await eventually(async () => !(await exists(rot)), 'the damaged file deleted')
    const logged = await proxy.logged((line) => line.msg === 'disk cache entry damaged; deleted')
    assert.equal(logged.key, 'big/rot.bin')
    assert.equal(logged.reason, 'block 2 fails its checksum')
    const pass = await proxy.logged((line) => line.msg === 'disk cache scrub pass' && line.damaged === 1)
    assert.equal(pass.trigger, 'admin')
    assert.equal(await metricOf(proxy, 'cache_scrub_entries{tier="disk",result="damaged"}'), 1)
    assert.equal(await metricOf(proxy, 'cache_scrub_entries{tier="disk",result="intact"}'), 3)
    const stats = (await (await fetch(`${proxy.url}/admin/cache/stats`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as {
      tiers: { disk: { scrub: { passes: number; checked: number; damaged: number } } }
    }
    assert.deepEqual([stats.tiers.disk.scrub.passes, stats.tiers.disk.scrub.checked, stats.tiers.disk.scrub.damaged], [2, 4, 1])

    // The client never meets the damage: a clean miss, the whole object, from S3.
    const again = await fetch(`${proxy.url}/big/rot.bin`)
    assert.equal(again.status, 200)
    assert.equal(sha(new Uint8Array(await again.arrayBuffer())), sha(OBJECTS['rot.bin'] as Buffer))
    assert.equal(originGets('rot.bin'), gets + 1)
  })

  it('refuses a bad body or a missing token, with a JSON error', async () => {
    for (const body of ['{"sample_rate": 2}', '{"max_entries": 0}', '{"bytes_per_sec": -1}', '{"every": 1}', 'not json', '[1]']) {
      const res = await scrub(proxy, body)
      assert.equal(res.status, 400, body)
      const answer = (await res.json()) as { error: { code: string; message: string; request_id: string } }
      assert.equal(answer.error.code, 'GUARD_BAD_REQUEST')
      assert.ok(answer.error.message.length > 0 && answer.error.request_id.length > 0)
    }
    const res = await scrub(proxy, undefined, 'wrong-token-that-is-long-enough-012345')
    assert.equal(res.status, 401)
  })
})

describe('disk cache scrub and shutdown', () => {
  it('a shutdown stops a running pass: its caller gets the report (stopped), and the drain does not wait for it', async () => {
    const cacheDir = join(dir, 'shutdown')
    const proxy = await start(config(cacheDir, '{ interval_seconds: 86400 }'))
    const file = await cached(proxy, cacheDir, 'slow.bin')
    // 1 MiB at 32 KiB/s: 32 s, longer than the shutdown below may take.
    const answer = scrub(proxy, JSON.stringify({ sample_rate: 1, bytes_per_sec: 32 * 1024 }))
    // The proxy runs in this process: the pass has the entry's file open (no hit reads it).
    await eventually(() => openHere(file), 'the pass is reading the entry', { withinMs: 30_000 })
    const started = performance.now()
    const stopping = proxy.proxy.shutdown(60_000)
    const res = await answer
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { stopped: boolean }).stopped, true)
    await stopping
    assert.ok(performance.now() - started < 20_000, 'the drain did not wait for the pass')
  })
})

describe('disk cache scrub on its schedule', () => {
  it('finds a damaged entry on its own and logs it', async () => {
    const cacheDir = join(dir, 'schedule')
    // Every 0.2 s: passes come while the entry is damaged below.
    const proxy = await start(config(cacheDir, '{ interval_seconds: 0.2, sample_rate: 1 }'))
    const rot = await cached(proxy, cacheDir, 'rot.bin')
    await damageBlock(rot, 3)
    const logged = await proxy.logged((line) => line.msg === 'disk cache entry damaged; deleted')
    assert.equal(logged.key, 'big/rot.bin')
    assert.equal(logged.reason, 'block 3 fails its checksum')
    await eventually(async () => !(await exists(rot)), 'the damaged file deleted')
    const pass = await proxy.logged((line) => line.msg === 'disk cache scrub pass' && line.damaged === 1)
    assert.equal(pass.trigger, 'schedule')
  })

  it('a pass asked for runs with the schedule off, at the configured rate; without a disk tier the call says so', async () => {
    const cacheDir = join(dir, 'off')
    const proxy = await start(config(cacheDir, '{ enabled: false, sample_rate: 1, bytes_per_sec: 4MB }'))
    await cached(proxy, cacheDir, 'slow.bin')
    const res = await scrub(proxy)
    assert.equal(res.status, 200)
    const report = (await res.json()) as { intact: number; bytes: number; ms: number }
    assert.equal(report.intact, 1)
    // 1 MiB at 4 MB/s: at least a quarter of a second.
    assert.ok(report.ms >= (report.bytes / (4 * MiB)) * 1000 - 5, `${report.bytes} bytes in ${report.ms} ms`)

    const memoryOnly = await start(`
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
cache:
  enabled: true
buckets:
${bucketYaml({ name: 'big', prefix: '/big', bucket: 'big', endpoint: s3.endpoint })}
`)
    const refused = await scrub(memoryOnly)
    assert.equal(refused.status, 400)
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /no disk tier/)
  })
})
