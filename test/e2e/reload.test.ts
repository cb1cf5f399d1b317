// Reload (SIGHUP): a valid file replaces the running configuration; an invalid one is refused and
// the running configuration keeps serving.
import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy
const config = (buckets: string) => `
server:
  address: "127.0.0.1:0"
buckets:
${buckets}`

before(async () => {
  s3 = await startS3()
  await s3.createBucket('first-bucket')
  await s3.createBucket('second-bucket')
  await s3.put('first-bucket', 'a.txt', 'first')
  await s3.put('second-bucket', 'a.txt', 'second')
  proxy = await startTestProxy(config(bucketYaml({ name: 'one', prefix: '/one', bucket: 'first-bucket', endpoint: s3.endpoint })))
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

it('applies a valid configuration: new buckets served, removed buckets gone', async () => {
  assert.equal((await send(proxy.url, '/one/a.txt')).text, 'first')
  await proxy.rewrite(config(bucketYaml({ name: 'two', prefix: '/two', bucket: 'second-bucket', endpoint: s3.endpoint })))
  const result = await proxy.proxy.reload()
  assert.deepEqual(result, { ok: true, generation: 2 })
  assert.equal((await send(proxy.url, '/two/a.txt')).text, 'second')
  assert.equal((await send(proxy.url, '/one/a.txt')).status, 404)
  assert.equal((await send(proxy.url, '/health')).json<{ config_generation: number }>().config_generation, 2)
})

it('keeps serving the running configuration when the new file is invalid', async () => {
  await proxy.rewrite(config(`  - name: broken\n    path_prefix: no-slash\n    s3: { bucket: x }`))
  const result = await proxy.proxy.reload()
  assert.equal(result.ok, false)
  assert.match(result.error ?? '', /path_prefix: "no-slash" must start with "\/"/)
  assert.equal(proxy.proxy.generation, 2)
  assert.equal((await send(proxy.url, '/two/a.txt')).text, 'second')
  const logged = await proxy.logged((l) => l.msg === 'reload failed; keeping the running configuration')
  assert.match(String(logged.error), /no-slash/)
})
