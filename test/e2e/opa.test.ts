// OPA authorization through the running proxy: the in-process wasm path (with the ABI test module,
// as a .wasm file and as a bundle), policy load errors, and a remote OPA Data API stand-in for
// allow, deny, {"allow": ...} results, timeouts, errors, both fail modes and decision caching.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { ConfigError } from '../../src/config/load.ts'
import { buildAbiTestPolicy } from '../support/opa/policy.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SECRET = 'opa-test-secret-that-is-long-enough-for-hs256'
const token = (claims: Record<string, unknown>, expiresIn = '5m') =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime(expiresIn).sign(new TextEncoder().encode(SECRET))
const get = async (proxy: TestProxy, path: string, claims: Record<string, unknown>, requestId?: string) =>
  send(proxy.url, path, {
    headers: { authorization: `Bearer ${await token(claims)}`, ...(requestId === undefined ? {} : { 'x-request-id': requestId }) },
  })
const auth = `    auth:
      enabled: true
      jwt:
        secret: "${SECRET}"`

let s3: TestS3
let dir: string
let policy: { wasm: string; bundle: string }

before(async () => {
  s3 = await startS3()
  await s3.createBucket('department-files')
  await s3.put('department-files', 'finance/q3.pdf', 'finance numbers')
  await s3.put('department-files', 'sales/q3.pdf', 'sales numbers')
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-opa-'))
  policy = await buildAbiTestPolicy(dir)
})
after(async () => {
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('in-process wasm policy', () => {
  let proxy: TestProxy
  before(async () => {
    const bucket = (name: string, file: string) =>
      bucketYaml({
        name,
        prefix: `/${name}`,
        bucket: 'department-files',
        endpoint: s3.endpoint,
        extra: `${auth}
    authorization:
      type: opa
      policy_file: ${file}
      entrypoint: yatagarasu/authz/allow`,
      })
    proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucket('wasm', policy.wasm)}
${bucket('bundle', policy.bundle)}
`)
  })
  after(async () => {
    await proxy?.stop()
  })

  for (const prefix of ['/wasm', '/bundle']) {
    it(`allows and denies by policy (${prefix})`, async () => {
      assert.equal((await get(proxy, `${prefix}/sales/q3.pdf`, { roles: ['admin'] })).status, 200)
      assert.equal((await get(proxy, `${prefix}/finance/q3.pdf`, { department: 'finance' })).text, 'finance numbers')
      const requestId = `deny${prefix.replace('/', '-')}`
      const denied = await get(proxy, `${prefix}/sales/q3.pdf`, { department: 'finance' }, requestId)
      assert.equal(denied.status, 403)
      assert.equal(denied.json<{ error: { code: string } }>().error.code, 'AUTHZ_DENIED')
      assert.equal((await proxy.logged((l) => l.request_id === requestId)).reason, 'opa_deny')
    })
  }

  it('authorizes the decoded key that is fetched', async () => {
    const res = await get(proxy, '/wasm/finance%2F..%2Fsales/q3.pdf', { department: 'finance' })
    assert.equal(res.status, 400)
    assert.equal((await get(proxy, '/wasm/finance%2Fq3.pdf', { department: 'finance' })).status, 200)
  })
})

describe('policy load errors', () => {
  const attempt = async (file: string, entrypoint = 'yatagarasu/authz/allow') => {
    try {
      const proxy = await startTestProxy(`
buckets:
${bucketYaml({ name: 'p', prefix: '/p', bucket: 'department-files', endpoint: s3.endpoint, extra: `${auth}
    authorization: { type: opa, policy_file: "${file}", entrypoint: ${entrypoint} }` })}
`)
      await proxy.stop()
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err))
      return err.message
    }
    assert.fail('the proxy started with a broken policy')
  }

  it('names a missing policy file', async () => {
    assert.match(await attempt(join(dir, 'missing.wasm')), /buckets\[0\]\(p\)\.authorization\.policy_file: cannot read .*missing\.wasm \(ENOENT\)/)
  })

  it('names a file that is not a wasm policy', async () => {
    const bogus = join(dir, 'bogus.wasm')
    await writeFile(bogus, 'not wasm at all')
    assert.match(await attempt(bogus), /bogus\.wasm is not an OPA wasm policy/)
  })

  it('names a missing entrypoint and lists the ones there are', async () => {
    assert.match(await attempt(policy.wasm, 'other/allow'), /has no entrypoint "other\/allow" \(it has: yatagarasu\/authz\/allow\)/)
  })
})

describe('remote OPA server', () => {
  type Mode = 'true' | 'false' | 'object' | 'object-deny' | 'slow' | 'error'
  let mode: Mode = 'true'
  let calls = 0
  let lastInput: unknown
  let opa: http.Server
  let proxy: TestProxy

  before(async () => {
    opa = http.createServer((req, res) => {
      let body = ''
      req.on('data', (d: Buffer) => (body += d.toString()))
      req.on('end', () => {
        calls++
        assert.equal(req.url, '/v1/data/yatagarasu/authz/allow')
        lastInput = (JSON.parse(body) as { input: unknown }).input
        const reply = (result: unknown) => res.end(JSON.stringify(result === undefined ? {} : { result }))
        if (mode === 'slow') return
        if (mode === 'error') return void res.writeHead(500).end('{"code":"internal_error"}')
        res.setHeader('content-type', 'application/json')
        reply({ true: true, false: false, object: { allow: true }, 'object-deny': { allow: false } }[mode])
      })
    })
    await new Promise<void>((resolve) => opa.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(opa.address() as AddressInfo).port}`
    const bucket = (name: string, failMode: string, ttl: number) =>
      bucketYaml({
        name,
        prefix: `/${name}`,
        bucket: 'department-files',
        endpoint: s3.endpoint,
        extra: `${auth}
    authorization:
      type: opa
      url: ${url}
      policy_path: yatagarasu/authz/allow
      timeout_ms: 100
      fail_mode: ${failMode}
      cache_ttl_seconds: ${ttl}`,
      })
    proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucket('closed', 'closed', 0)}
${bucket('open', 'open', 0)}
${bucket('cached', 'closed', 60)}
`)
  })
  after(async () => {
    await proxy?.stop()
    opa.closeAllConnections()
    await new Promise((resolve) => opa.close(resolve))
  })

  it('sends the documented input document', async () => {
    mode = 'true'
    await get(proxy, '/closed/finance/q3.pdf', { sub: 'u1', department: 'finance' })
    const input = lastInput as Record<string, unknown>
    assert.deepEqual(Object.keys(input).sort(), ['bucket', 'client_ip', 'jwt_claims', 'key', 'method', 'path'])
    assert.equal(input.bucket, 'closed')
    assert.equal(input.path, '/closed/finance/q3.pdf')
    assert.equal(input.key, 'finance/q3.pdf')
    assert.equal(input.method, 'GET')
    assert.equal(input.client_ip, '127.0.0.1')
    assert.equal((input.jwt_claims as Record<string, unknown>).department, 'finance')
  })

  const cases: Array<[Mode, string, number]> = [
    ['true', 'closed', 200],
    ['false', 'closed', 403],
    ['object', 'closed', 200],
    ['object-deny', 'closed', 403],
    ['slow', 'closed', 403],
    ['error', 'closed', 403],
    ['slow', 'open', 200],
    ['error', 'open', 200],
    ['false', 'open', 403],
  ]
  for (const [m, bucket, status] of cases) {
    it(`answers ${status} when OPA ${m === 'slow' ? 'times out' : m === 'error' ? 'fails' : `answers ${m}`} (fail_mode ${bucket})`, async () => {
      mode = m
      assert.equal((await get(proxy, `/${bucket}/sales/q3.pdf`, { sub: 'u2' })).status, status)
    })
  }

  it('caches decisions, ignoring the token’s time claims', async () => {
    mode = 'true'
    const before = calls
    assert.equal((await get(proxy, '/cached/sales/q3.pdf', { sub: 'u3' })).status, 200)
    assert.equal((await get(proxy, '/cached/sales/q3.pdf', { sub: 'u3' })).status, 200)
    const refreshed = await token({ sub: 'u3' }, '10m')
    const res = await send(proxy.url, '/cached/sales/q3.pdf', { headers: { authorization: `Bearer ${refreshed}` } })
    assert.equal(res.status, 200)
    assert.equal(calls - before, 1)
    assert.equal((await get(proxy, '/cached/sales/q3.pdf', { sub: 'someone-else' })).status, 200)
    assert.equal(calls - before, 2)
  })
})
