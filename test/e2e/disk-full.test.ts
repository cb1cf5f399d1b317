// The disk tier on a disk that fills up, for real: the cache directory is a 1 MiB tmpfs (mounted
// by the test, which runs as root in CI), and a 3 MiB object is fetched through the proxy
// (s3rver behind SigV4 checks, the disk tier alone). The client gets every byte (what the disk did
// not take comes from a ranged GET), the write fails with ENOSPC and leaves no temp file, and the
// tier pauses its writes: logged, in /metrics and in /admin/cache/stats.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { bucketYaml, metricOf, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'disk-full-admin-token-0123456789abcdef'
const BIG = randomBytes(3 * 1024 * 1024)

let s3: TestS3
let cacheDir: string
let mounted = false
let proxy: TestProxy

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')


before(async () => {
  s3 = await startS3()
  await s3.createBucket('full')
  await s3.put('full', 'big.bin', BIG)
  cacheDir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-full-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', cacheDir], { stdio: 'pipe' })
  } catch (err) {
    throw new Error(`this test mounts a 1 MiB tmpfs as a full disk and needs root (CI runs as root): ${(err as Error).message}`)
  }
  mounted = true
  proxy = await startTestProxy(`
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
    max_size: 100MB
buckets:
${bucketYaml({ name: 'full', prefix: '/full', bucket: 'full', endpoint: s3.endpoint })}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (mounted) execFileSync('umount', [cacheDir])
  if (cacheDir !== undefined) await rm(cacheDir, { recursive: true, force: true })
})

describe('the disk tier on a full disk', () => {
  it('serves the object whole, removes the failed write, and pauses writes (log, metric, stats)', async () => {
    const res = await fetch(`${proxy.url}/full/big.bin`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('x-cache'), 'MISS')
    assert.equal(sha(new Uint8Array(await res.arrayBuffer())), sha(BIG), 'every byte, though the disk took only a third')

    const paused = await proxy.logged((l) => l.msg === 'disk cache writes paused: the disk failed a write')
    assert.equal(paused.reason, 'a write failed: ENOSPC')
    assert.equal(paused.seconds, 30)
    assert.equal(paused.dir, cacheDir)
    await eventually(async () => (await readdir(cacheDir)).length === 0, 'the temp file removed', {
      explain: async () => (await readdir(cacheDir)).join(', '),
    })
    assert.equal(await metricOf(proxy, 'cache_writes_paused{tier="disk"}'), 1)
    const stats = await fetch(`${proxy.url}/admin/cache/stats`, { headers: { authorization: `Bearer ${ADMIN}` } })
    const disk = ((await stats.json()) as { tiers: { disk: { writes_paused: boolean; entries: number } } }).tiers.disk
    assert.deepEqual([disk.writes_paused, disk.entries], [true, 0])

    // Still served, from S3, while writes are paused: streamed through, not held whole for the
    // other tiers instead (its home, the disk, does not take it now).
    const again = await fetch(`${proxy.url}/full/big.bin`)
    assert.equal(again.headers.get('x-cache'), 'MISS')
    assert.equal(again.headers.get('cache-status'), 'yatagarasu; fwd=miss', 'not stored')
    assert.equal(sha(new Uint8Array(await again.arrayBuffer())), sha(BIG))
    // The first answer: the fill's GET until the disk failed (it is cancelled then), and the rest
    // of the same version with a ranged GET; the second answer's own GET.
    const [fill, rest, second] = s3.getsOf('full', 'big.bin')
    assert.equal(s3.getsOf('full', 'big.bin').length, 3)
    assert.equal(fill?.headers.range, undefined)
    assert.match(String(rest?.headers.range), new RegExp(`^bytes=\\d+-${BIG.length - 1}$`))
    assert.equal(rest?.headers['if-match'], res.headers.get('etag'))
    assert.equal(second?.headers.range, undefined)
  })
})
