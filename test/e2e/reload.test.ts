// Reload (POST /admin/reload; SIGHUP goes through the same function, see cluster.test.ts): a valid
// file replaces the running configuration, an invalid one is refused and the running configuration
// keeps serving; either way a client loop running throughout sees no failed request.
import assert from 'node:assert/strict'
import http from 'node:http'
import { after, before, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'admin-token-for-the-reload-tests-0123456789'
const ROTATED_SECRET = 'rotated/Secret+Key=2'
let s3: TestS3
/** A second backend whose credentials get rotated. */
let rotating: TestS3
let proxy: TestProxy

const config = (buckets: string) => `
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
buckets:
${bucketYaml({ name: 'steady', prefix: '/steady', bucket: 'steady-bucket', endpoint: s3.endpoint })}
${buckets}`

const reload = () => send(proxy.url, '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })

/** Keep-alive clients requesting one object in a loop until stopped; counts every status. */
interface SteadyLoad {
  /** Resolves once `more` further requests have completed (the loop is really running). */
  completed(more: number): Promise<void>
  stop(): Promise<Map<number | string, number>>
}

function steadyLoad(url: string, clients = 4): SteadyLoad {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
  const statuses = new Map<number | string, number>()
  let running = true
  let done = 0
  const waiters: Array<{ at: number; resolve: () => void }> = []
  const count = () => {
    done++
    for (const waiter of waiters.filter((w) => w.at <= done)) {
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve()
    }
  }
  const one = () =>
    new Promise<void>((resolve) => {
      http
        .get(`${url}/steady/a.txt`, { agent }, (res) => {
          res.resume()
          res.on('end', () => {
            statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1)
            count()
            resolve()
          })
        })
        .on('error', (err: NodeJS.ErrnoException) => {
          statuses.set(err.code ?? 'error', (statuses.get(err.code ?? 'error') ?? 0) + 1)
          count()
          resolve()
        })
    })
  const loops = Array.from({ length: clients }, async () => {
    while (running) await one()
  })
  return {
    completed(more) {
      return new Promise((resolve) => waiters.push({ at: done + more, resolve }))
    },
    async stop() {
      running = false
      await Promise.all(loops)
      agent.destroy()
      return statuses
    },
  }
}

before(async () => {
  ;[s3, rotating] = await Promise.all([startS3(), startS3()])
  await s3.createBucket('steady-bucket')
  await s3.createBucket('first-bucket')
  await s3.createBucket('second-bucket')
  await s3.put('steady-bucket', 'a.txt', 'steady')
  await s3.put('first-bucket', 'a.txt', 'first')
  await s3.put('second-bucket', 'a.txt', 'second')
  await rotating.createBucket('vault')
  await rotating.put('vault', 'a.txt', 'vault')
  proxy = await startTestProxy(
    config(
      bucketYaml({ name: 'one', prefix: '/one', bucket: 'first-bucket', endpoint: s3.endpoint }) +
        bucketYaml({ name: 'vault', prefix: '/vault', bucket: 'vault', endpoint: rotating.endpoint })
    )
  )
})

after(async () => {
  await proxy?.stop()
  await Promise.all([s3?.stop(), rotating?.stop()])
})

it('applies a valid configuration under load: new bucket served, removed bucket 404, rotated credentials used', async () => {
  assert.equal((await send(proxy.url, '/one/a.txt')).text, 'first')
  assert.equal((await send(proxy.url, '/vault/a.txt')).text, 'vault')
  const load = steadyLoad(proxy.url)
  await load.completed(20)

  // The backend's secret changes first: until the proxy has the new one, its requests are refused.
  rotating.rotateSecret(ROTATED_SECRET)
  assert.equal((await send(proxy.url, '/vault/a.txt')).status, 502)
  await proxy.rewrite(
    config(
      bucketYaml({ name: 'two', prefix: '/two', bucket: 'second-bucket', endpoint: s3.endpoint }) +
        bucketYaml({ name: 'vault', prefix: '/vault', bucket: 'vault', endpoint: rotating.endpoint, secret: ROTATED_SECRET })
    )
  )
  const res = await reload()
  assert.equal(res.status, 200)
  assert.deepEqual(res.json(), { generation: 2, buckets: { added: ['two'], removed: ['one'], changed: ['vault'] } })
  assert.equal((await send(proxy.url, '/two/a.txt')).text, 'second')
  assert.equal((await send(proxy.url, '/one/a.txt')).status, 404)
  assert.equal((await send(proxy.url, '/vault/a.txt')).text, 'vault')
  assert.equal((await send(proxy.url, '/health')).json<{ config_generation: number }>().config_generation, 2)
  const logged = await proxy.logged((l) => l.msg === 'configuration reloaded')
  assert.deepEqual(logged.buckets, { added: ['two'], removed: ['one'], changed: ['vault'] })

  await load.completed(20)
  const statuses = await load.stop()
  assert.deepEqual([...statuses.keys()], [200], `every request of the loop succeeded: ${JSON.stringify([...statuses])}`)
})

it('keeps serving the running configuration under load when the new file is invalid, and says why', async () => {
  const load = steadyLoad(proxy.url)
  await load.completed(20)
  await proxy.rewrite(config(`  - name: broken\n    path_prefix: no-slash\n    s3: { bucket: x }`))
  const res = await reload()
  assert.equal(res.status, 400)
  const body = res.json<{ error: { code: string; reason: string; request_id: string }; generation: number }>()
  assert.equal(body.error.code, 'ADMIN_CONFIG_INVALID')
  assert.match(body.error.reason, /buckets\[1\]\(broken\)\.path_prefix: "no-slash" must start with "\/"/)
  assert.equal(body.error.request_id, res.headers['x-request-id'])
  assert.equal(body.generation, 2)
  assert.equal(proxy.proxy.generation, 2)
  assert.equal((await send(proxy.url, '/two/a.txt')).text, 'second')
  const logged = await proxy.logged((l) => l.msg === 'reload failed; keeping the running configuration')
  assert.match(String(logged.error), /no-slash/)

  await load.completed(20)
  const statuses = await load.stop()
  assert.deepEqual([...statuses.keys()], [200], `every request of the loop succeeded: ${JSON.stringify([...statuses])}`)
})

it('refuses a reload without the admin token', async () => {
  const res = await send(proxy.url, '/admin/reload', { method: 'POST', headers: { authorization: 'Bearer wrong' } })
  assert.equal(res.status, 401)
  assert.equal(proxy.proxy.generation, 2)
})
