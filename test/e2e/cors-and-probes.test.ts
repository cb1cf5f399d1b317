// CORS preflights and headers from per-bucket config, and the /health and /ready probes.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SECRET = 'cors-test-secret-that-is-long-enough!!'
const APP = 'https://app.test'
let s3: TestS3
let proxy: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('web-assets')
  await s3.put('web-assets', 'app.js', 'console.log(1)', { ContentType: 'text/javascript' })
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({
  name: 'web',
  prefix: '/web',
  bucket: 'web-assets',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        secret: "${SECRET}"
    cors:
      allowed_origins: ["${APP}"]
      allowed_headers: [Authorization, Range]
      expose_headers: [Content-Range, ETag]
      max_age_seconds: 300
      allow_credentials: true`,
})}
${bucketYaml({ name: 'open', prefix: '/open', bucket: 'web-assets', endpoint: s3.endpoint, extra: '    cors: { allowed_origins: ["*"] }' })}
${bucketYaml({ name: 'down', prefix: '/down', bucket: 'web-assets', endpoint: 'http://127.0.0.1:1' })}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('CORS', () => {
  const preflight = (origin: string, method: string, headers?: string) =>
    send(proxy.url, '/web/app.js', {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': method,
        ...(headers === undefined ? {} : { 'access-control-request-headers': headers }),
      },
    })

  it('answers an allowed preflight with 204 and no token needed', async () => {
    const res = await preflight(APP, 'GET', 'authorization, range')
    assert.equal(res.status, 204)
    assert.equal(res.headers['access-control-allow-origin'], APP)
    assert.equal(res.headers['access-control-allow-methods'], 'GET, HEAD, OPTIONS')
    assert.equal(res.headers['access-control-allow-headers'], 'authorization, range')
    assert.equal(res.headers['access-control-allow-credentials'], 'true')
    assert.equal(res.headers['access-control-max-age'], '300')
    assert.match(String(res.headers.vary), /Origin/)
  })

  it('refuses a preflight from another origin, for a write method, or with other headers', async () => {
    assert.equal((await preflight('https://evil.test', 'GET')).status, 403)
    assert.equal((await preflight(APP, 'PUT')).status, 403)
    assert.equal((await preflight(APP, 'GET', 'x-custom')).status, 403)
  })

  it('adds CORS headers to responses for an allowed origin, errors included', async () => {
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
    const ok = await send(proxy.url, '/web/app.js', { headers: { origin: APP, authorization: `Bearer ${token}` } })
    assert.equal(ok.status, 200)
    assert.equal(ok.headers['access-control-allow-origin'], APP)
    assert.equal(ok.headers['access-control-expose-headers'], 'Content-Range, ETag')
    assert.equal(ok.headers['access-control-allow-credentials'], 'true')
    const denied = await send(proxy.url, '/web/app.js', { headers: { origin: APP } })
    assert.equal(denied.status, 401)
    assert.equal(denied.headers['access-control-allow-origin'], APP)
  })

  it('adds nothing for an origin that is not allowed', async () => {
    const res = await send(proxy.url, '/web/app.js', { headers: { origin: 'https://evil.test' } })
    assert.equal(res.headers['access-control-allow-origin'], undefined)
  })

  it('answers any origin with * on a bucket that allows all', async () => {
    const res = await send(proxy.url, '/open/app.js', { headers: { origin: 'https://anyone.test' } })
    assert.equal(res.status, 200)
    assert.equal(res.headers['access-control-allow-origin'], '*')
  })
})

describe('probes', () => {
  it('reports liveness on /health', async () => {
    const res = await send(proxy.url, '/health')
    assert.equal(res.status, 200)
    const body = res.json<{ status: string; uptime_seconds: number; version: string }>()
    assert.equal(body.status, 'healthy')
    assert.equal(typeof body.uptime_seconds, 'number')
    assert.match(body.version, /^\d+\.\d+\.\d+/)
  })

  it('answers a method the probes do not take with a JSON 404 carrying the request id', async () => {
    const res = await send(proxy.url, '/health', { method: 'DELETE', headers: { 'x-request-id': 'probe-1' } })
    assert.equal(res.status, 404)
    assert.equal(res.headers['x-request-id'], 'probe-1')
    assert.deepEqual(res.json(), { error: { code: 'ROUTE_NOT_FOUND', message: res.json<{ error: { message: string } }>().error.message, request_id: 'probe-1' } })
  })

  it('reports 503 on /ready while a bucket has no reachable backend, naming it', async () => {
    const res = await send(proxy.url, '/ready')
    assert.equal(res.status, 503)
    assert.deepEqual(res.json(), {
      status: 'unavailable',
      backends: {
        web: { status: 'ready', replicas: { primary: 'healthy' } },
        open: { status: 'ready', replicas: { primary: 'healthy' } },
        down: { status: 'unavailable', replicas: { primary: 'unhealthy' } },
      },
    })
  })

  it('reports 200 on /ready when every backend answers', async () => {
    const ready = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'web', prefix: '/web', bucket: 'web-assets', endpoint: s3.endpoint })}
`)
    try {
      const res = await send(ready.url, '/ready')
      assert.equal(res.status, 200)
      assert.equal(res.json<{ status: string }>().status, 'ready')
    } finally {
      await ready.stop()
    }
  })
})
