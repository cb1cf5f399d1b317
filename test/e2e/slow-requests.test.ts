// The slow-request log: a request over observability.slow_request_ms gets a warn line saying
// where its time went; a fast one does not.
import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('docs')
  await s3.put('docs', 'a.txt', 'aaa')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
observability:
  slow_request_ms: 150
buckets:
${bucketYaml({ name: 'docs', prefix: '/docs', bucket: 'docs', endpoint: s3.endpoint })}
`)
})

after(async () => {
  await proxy.stop()
  await s3.stop()
})

it('logs a slow request at warn with its stage timings, and not a fast one', async () => {
  const fast = await send(proxy.url, '/docs/a.txt')
  assert.equal(fast.status, 200)
  s3.delay(200)
  const slow = await send(proxy.url, '/docs/a.txt')
  s3.delay(0)
  assert.equal(slow.status, 200)
  const line = await proxy.logged((l) => l.msg === 'slow request')
  assert.equal(line.level, 40, 'warn')
  assert.equal(line.request_id, slow.headers['x-request-id'])
  const stages = line.stages_ms as Record<string, number>
  assert.ok(stages.fetch !== undefined && stages.fetch >= 190, `fetch took ${stages.fetch} ms`)
  // The 200 ms the backend took belong to fetch, not auth (the bound leaves room for a busy machine).
  assert.ok(stages.auth !== undefined && stages.auth < 150, `auth took ${stages.auth} ms`)
  assert.ok(stages.transfer !== undefined)
  assert.ok((line.duration_ms as number) >= 190)
  assert.equal(proxy.logs.filter((l) => l.msg === 'slow request').length, 1, 'the fast request was not logged')
})
