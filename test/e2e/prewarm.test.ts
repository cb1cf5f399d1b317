// Cache prewarming through the admin API, against the running proxy and s3rver behind the
// SigV4-verifying layer: a prefix listed and fetched into the cache in the background, then served
// as cache hits with no origin request; budgets; one job per bucket + prefix at a time; a job
// stopped by a reload and by shutdown.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { eventually } from '../support/eventually.ts'

const ADMIN = 'prewarm-admin-token-0123456789abcdefghij'
const N = 24
const objects = Array.from({ length: N }, (_, i) => [`warm/${String(i).padStart(2, '0')}.txt`, `object ${i} `.repeat(i + 1)] as const)

let s3: TestS3
let proxy: TestProxy

const yaml = () => `
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
cache:
  enabled: true
  layers: [memory]
  memory: { max_size: 16MB }
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'prewarm-backend', endpoint: s3.endpoint })}
${bucketYaml({ name: 'nocache', prefix: '/nocache', bucket: 'prewarm-backend', endpoint: s3.endpoint, extra: '    cache: { enabled: false }' })}
`

before(async () => {
  s3 = await startS3()
  await s3.createBucket('prewarm-backend')
  for (const [key, body] of objects) await s3.put('prewarm-backend', key, body)
  for (let i = 0; i < 6; i++) await s3.put('prewarm-backend', `budget/${i}.bin`, Buffer.alloc(1000, i))
  for (let i = 0; i < 3; i++) await s3.put('prewarm-backend', `slow/${i}.bin`, Buffer.alloc(10, i))
  proxy = await startTestProxy(yaml())
})

after(async () => {
  s3?.delay(0)
  await proxy?.stop()
  await s3?.stop()
})

const auth = { authorization: `Bearer ${ADMIN}` }

async function prewarm(body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${proxy.url}/admin/cache/prewarm`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, json: (await res.json()) as Record<string, unknown> }
}

async function progress(id: string): Promise<Record<string, unknown>> {
  return (await send(proxy.url, `/admin/cache/prewarm/${id}`, { headers: auth })).json()
}

const finished = (id: string) =>
  eventually(async () => {
    const report = await progress(id)
    return report.status !== 'running' && report
  }, `prewarm ${id} finishes`)

describe('POST /admin/cache/prewarm', () => {
  it('fills the cache with a prefix in the background; the objects are then hits with no origin request', async () => {
    const started = await prewarm({ bucket: 'media', prefix: 'warm/', max_objects: 1000, max_bytes: 10_000_000 })
    assert.equal(started.status, 202)
    assert.deepEqual(Object.keys(started.json).sort(), ['id', 'status'])
    assert.equal(started.json.status, 'running')
    const report = await finished(started.json.id as string)
    const bytes = objects.reduce((sum, [, body]) => sum + Buffer.byteLength(body), 0)
    assert.deepEqual(report, { id: started.json.id, bucket: 'media', prefix: 'warm/', status: 'done', objects_done: N, bytes_done: bytes, objects_skipped: 0, failures: 0 })

    const originBefore = s3.requests.length
    for (const [key, body] of objects) {
      const res = await send(proxy.url, `/media/${key}`)
      assert.equal(res.status, 200)
      assert.equal(res.text, body)
      assert.equal(res.headers['x-cache'], 'HIT', key)
    }
    assert.equal(s3.requests.length - originBefore, 0)

    // A second prewarm of the same prefix finds everything fresh: nothing fetched.
    const again = await finished((await prewarm({ bucket: 'media', prefix: 'warm/' })).json.id as string)
    assert.equal(again.objects_done, 0)
    assert.equal(again.objects_skipped, N)
  })

  it('stops at max_objects or max_bytes, whichever comes first', async () => {
    const byCount = await finished((await prewarm({ bucket: 'media', prefix: 'budget/', max_objects: 2 })).json.id as string)
    assert.equal(byCount.status, 'done')
    assert.equal(byCount.objects_done, 2)
    await send(proxy.url, '/media/budget/0.bin')
    const hit = await send(proxy.url, '/media/budget/1.bin')
    assert.equal(hit.headers['x-cache'], 'HIT')
    const miss = await send(proxy.url, '/media/budget/2.bin')
    assert.equal(miss.headers['x-cache'], 'MISS')
    const byBytes = await finished((await prewarm({ bucket: 'media', prefix: 'budget/', max_bytes: 2500, concurrency: 1 })).json.id as string)
    // 0-2 are cached already; 3 and 4 fit in 2,500 bytes, 5 does not.
    assert.deepEqual([byBytes.objects_done, byBytes.bytes_done, byBytes.objects_skipped], [2, 2000, 3])
  })

  it('refuses a second prewarm of the same bucket and prefix while one runs (409), and bad requests (400)', async () => {
    // The listing alone waits this long: the second request comes while the first job runs.
    s3.delay(1500)
    try {
      const first = await prewarm({ bucket: 'media', prefix: 'slow/' })
      assert.equal(first.status, 202)
      const second = await prewarm({ bucket: 'media', prefix: 'slow/' })
      assert.equal(second.status, 409)
      assert.equal(second.json.id, first.json.id)
      assert.equal(second.json.status, 'running')
      s3.delay(0)
      assert.equal((await finished(first.json.id as string)).status, 'done')
    } finally {
      s3.delay(0)
    }
    assert.equal((await prewarm({ bucket: 'nocache' })).status, 400)
    assert.match(String(((await prewarm({ bucket: 'nope' })).json.error as { message: string }).message), /"nope" is not the name of a configured bucket/)
    assert.equal((await prewarm({ bucket: 'media', max_objects: 0 })).status, 400)
    assert.equal((await prewarm({ bucket: 'media', surprise: 1 })).status, 400)
    const anonymous = await fetch(`${proxy.url}/admin/cache/prewarm`, { method: 'POST', body: '{"bucket":"media"}' })
    assert.equal(anonymous.status, 401)
    assert.equal((await send(proxy.url, '/admin/cache/prewarm/no-such-job', { headers: auth })).status, 404)
  })

  it('stops a running prewarm on reload, and on shutdown', async () => {
    // Long enough that nothing of the job is done before the reload (the reload stops it at once).
    s3.delay(3000)
    const onReload = await prewarm({ bucket: 'media', prefix: 'slow/', max_objects: 3 })
    assert.equal(onReload.status, 202)
    const reloaded = await fetch(`${proxy.url}/admin/reload`, { method: 'POST', headers: auth })
    assert.equal(reloaded.status, 200)
    const report = await finished(onReload.json.id as string)
    assert.equal(report.status, 'stopped')

    const onShutdown = await prewarm({ bucket: 'media', prefix: 'slow/' })
    assert.equal(onShutdown.status, 202)
    const started = Date.now()
    await proxy.stop()
    assert.ok(Date.now() - started < 5000, 'shutdown waited for the prewarm')
    const ended = proxy.logs.find((line) => line.msg === 'cache prewarm ended' && (line.prewarm as { id: string }).id === onShutdown.json.id)
    assert.equal((ended?.prewarm as { status: string } | undefined)?.status, 'stopped')
  })
})
