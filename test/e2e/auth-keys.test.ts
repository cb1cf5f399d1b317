// Key sources beyond a single key: a real JWKS endpoint (rotation, outage, refetch limits), key
// lists chosen by kid, path-scoped tokens, and the verified-token cache across a reload.
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

interface Jwks {
  url: string
  fetches: number
  publish(keys: JWK[]): void
  stop(): Promise<void>
  start(): Promise<void>
}

/** A real JWKS endpoint serving keys that jose generated. */
async function startJwks(): Promise<Jwks> {
  let keys: JWK[] = []
  const state = { fetches: 0 }
  const server = http.createServer((_req, res) => {
    state.fetches++
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ keys }))
  })
  let port = 0
  const start = () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()))
  await start()
  port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get fetches() {
      return state.fetches
    },
    publish(next) {
      keys = next
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
    start,
  }
}

async function rsaKey(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const pair = await generateKeyPair('RS256', { extractable: true })
  return { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid, alg: 'RS256', use: 'sig' } }
}

const sign = (key: CryptoKey, kid: string, claims: Record<string, unknown> = {}, alg = 'RS256') =>
  new SignJWT(claims).setProtectedHeader({ alg, kid }).setExpirationTime('5m').sign(key)
const get = (proxy: TestProxy, path: string, token: string) =>
  send(proxy.url, path, { headers: { authorization: `Bearer ${token}` } })

let s3: TestS3
before(async () => {
  s3 = await startS3()
  await s3.createBucket('keyed')
  for (const key of ['doc.txt', 'videos/course-7/intro.mp4', 'videos/course-7/notes.txt', 'videos/course-8/intro.mp4']) {
    await s3.put('keyed', key, `body of ${key}`)
  }
})
after(async () => {
  await s3?.stop()
})

describe('JWKS', () => {
  let jwks: Jwks
  let proxy: TestProxy
  let first: Awaited<ReturnType<typeof rsaKey>>
  let second: Awaited<ReturnType<typeof rsaKey>>

  before(async () => {
    jwks = await startJwks()
    first = await rsaKey('key-1')
    second = await rsaKey('key-2')
    jwks.publish([first.jwk])
    proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({
  name: 'keyed',
  prefix: '/keyed',
  bucket: 'keyed',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        jwks_url: ${jwks.url}
        algorithm: RS256
        jwks_refetch_cooldown_seconds: 0.2
        jwks_cache_seconds: 0.2
        jwks_stale_max_seconds: 1.5
        token_cache_size: 0`,
})}
`)
  })
  after(async () => {
    await proxy?.stop()
    await jwks?.stop()
  })

  it('verifies tokens signed with a published key', async () => {
    assert.equal((await get(proxy, '/keyed/doc.txt', await sign(first.privateKey, 'key-1'))).status, 200)
  })

  it('follows a key rotation: the new kid is fetched, the removed one stops working', async () => {
    await new Promise((resolve) => setTimeout(resolve, 250)) // let the refetch cooldown pass
    jwks.publish([second.jwk])
    assert.equal((await get(proxy, '/keyed/doc.txt', await sign(second.privateKey, 'key-2'))).status, 200)
    const old = await get(proxy, '/keyed/doc.txt', await sign(first.privateKey, 'key-1'))
    assert.equal(old.status, 401)
  })

  it('limits refetches when tokens carry unknown kids', async () => {
    await new Promise((resolve) => setTimeout(resolve, 250))
    const before = jwks.fetches
    const forged = await rsaKey('forged')
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => (await get(proxy, '/keyed/doc.txt', await sign(forged.privateKey, `made-up-${i}`))).status)
    )
    assert.deepEqual(new Set(results), new Set([401]))
    assert.ok(jwks.fetches - before <= 1, `${jwks.fetches - before} fetches for 20 unknown kids`)
  })

  it('keeps serving the last good key set while the endpoint is down, then fails closed', async () => {
    const token = await sign(second.privateKey, 'key-2')
    await jwks.stop()
    assert.equal((await get(proxy, '/keyed/doc.txt', token)).status, 200)
    // jwks_stale_max_seconds is 1.5: after that the stale set is no longer trusted.
    await new Promise((resolve) => setTimeout(resolve, 1600))
    const res = await send(proxy.url, '/keyed/doc.txt', { headers: { authorization: `Bearer ${token}`, 'x-request-id': 'jwks-expired' } })
    assert.equal(res.status, 401)
    assert.equal((await proxy.logged((l) => l.request_id === 'jwks-expired')).reason, 'jwks_unavailable')
    await jwks.start()
  })
})

describe('key lists, path scopes and the token cache', () => {
  const secretA = 'key-a-secret-that-is-long-enough-for-hs256'
  const secretB = 'key-b-secret-that-is-long-enough-for-hs256'
  let proxy: TestProxy
  const config = (secret: string) => `
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({
  name: 'keyed',
  prefix: '/keyed',
  bucket: 'keyed',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        keys:
          - { id: a, algorithm: HS256, secret: "${secret}" }
          - { id: b, algorithm: HS512, secret: "${secretB}" }
        path_scope_claim: paths`,
})}
`
  const hs = (kid: string, secret: string, paths: unknown, alg = 'HS256') =>
    new SignJWT(paths === undefined ? {} : { paths })
      .setProtectedHeader({ alg, kid })
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(secret))

  before(async () => {
    proxy = await startTestProxy(config(secretA))
  })
  after(async () => {
    await proxy?.stop()
  })

  it('picks the key by kid and refuses unknown kids or a mismatched algorithm', async () => {
    assert.equal((await get(proxy, '/keyed/doc.txt', await hs('a', secretA, ['doc.txt']))).status, 200)
    assert.equal((await get(proxy, '/keyed/doc.txt', await hs('b', secretB, ['doc.txt'], 'HS512'))).status, 200)
    assert.equal((await get(proxy, '/keyed/doc.txt', await hs('c', secretA, ['doc.txt']))).status, 401)
    assert.equal((await get(proxy, '/keyed/doc.txt', await hs('b', secretB, ['doc.txt'], 'HS256'))).status, 401)
  })

  it('lets a path-scoped token read only the keys its claim lists', async () => {
    const token = await hs('a', secretA, ['videos/course-7/*.mp4'])
    assert.equal((await get(proxy, '/keyed/videos/course-7/intro.mp4', token)).status, 200)
    assert.equal((await get(proxy, '/keyed/videos/course-7/notes.txt', token)).status, 403)
    assert.equal((await get(proxy, '/keyed/videos/course-8/intro.mp4', token)).status, 403)
    assert.equal((await get(proxy, '/keyed/videos%2Fcourse-8%2Fintro.mp4', token)).status, 403)
    const prefix = await hs('a', secretA, 'videos/course-7/')
    assert.equal((await get(proxy, '/keyed/videos/course-7/notes.txt', prefix)).status, 200)
  })

  it('refuses a token without the scope claim on a path-scoped bucket', async () => {
    const res = await send(proxy.url, '/keyed/doc.txt', {
      headers: { authorization: `Bearer ${await hs('a', secretA, undefined)}`, 'x-request-id': 'no-scope' },
    })
    assert.equal(res.status, 403)
    assert.equal((await proxy.logged((l) => l.request_id === 'no-scope')).reason, 'path_scope_missing')
  })

  it('forgets cached verifications on reload: a token for a rotated secret stops working', async () => {
    const token = await hs('a', secretA, ['doc.txt'])
    assert.equal((await get(proxy, '/keyed/doc.txt', token)).status, 200)
    assert.equal((await get(proxy, '/keyed/doc.txt', token)).status, 200)
    await proxy.rewrite(config('a-rotated-secret-that-is-long-enough-too'))
    assert.equal((await proxy.proxy.reload()).ok, true)
    assert.equal((await get(proxy, '/keyed/doc.txt', token)).status, 401)
  })
})
