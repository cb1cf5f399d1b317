// The proxy's own signed requests to S3 (GET, HEAD, Range, the conditional GET of a revalidation)
// against s3rver behind the SigV4-verifying layer: every key the proxy can be asked for is encoded
// and signed the way S3 reads it, wrong credentials are refused, and session tokens are sent.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { SECRET_KEY, startS3, type RecordedRequest, type TestS3 } from '../support/s3.ts'

/** Keys with every character class a path can carry once decoded. */
const KEYS = [
  'plain.txt',
  'with space.txt',
  'plus+sign.txt',
  'paren(1).txt',
  'ünï/日本.txt',
  'dir/file.txt',
  'literal%25.txt',
  "bang!star*quote'.txt",
  'tilde~under_score-dash.txt',
  'semi;colon,comma=eq&amp$dollar@at.txt',
  'hash#question?.txt',
  '[brackets]{braces}^caret|pipe`tick.txt',
  'emoji 😀/deep/er.txt',
  'trailing dot.',
]

/** The proxy path for a key: each segment percent-encoded, as a browser would send it. */
const pathFor = (key: string) => `/signed/${key.split('/').map(encodeURIComponent).join('/')}`

/** Background readiness probes (HEAD on the bucket) reach the backend at their own pace. */
const notProbe = (r: RecordedRequest) => r.url !== '/signing'

let s3: TestS3
let proxy: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('signing')
  for (const key of KEYS) await s3.put('signing', key, `body of ${key}`, { ContentType: 'text/plain' })
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'signed', prefix: '/signed', bucket: 'signing', endpoint: s3.endpoint })}
${bucketYaml({ name: 'wrong-secret', prefix: '/wrong', bucket: 'signing', endpoint: s3.endpoint, secret: 'not-the-secret' })}
${bucketYaml({ name: 'with-token', prefix: '/token', bucket: 'signing', endpoint: s3.endpoint, extra: '      session_token: "session/token+with=chars"' })}
${bucketYaml({ name: 'cached', prefix: '/cached', bucket: 'signing', endpoint: s3.endpoint, extra: '    cache: { enabled: true, ttl_seconds: 1 }' })}
${bucketYaml({ name: 'small-pool', prefix: '/pool', bucket: 'signing', endpoint: s3.endpoint, extra: '      max_connections: 2' })}
cache:
  layers: [memory]
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('object keys', () => {
  for (const key of KEYS) {
    it(`signs GET, HEAD and Range for ${JSON.stringify(key)}`, async () => {
      const before = s3.requests.length
      const body = `body of ${key}`
      const got = await send(proxy.url, pathFor(key))
      assert.equal(got.status, 200, got.text)
      assert.equal(got.text, body)

      const head = await send(proxy.url, pathFor(key), { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(head.headers['content-length'], String(Buffer.byteLength(body)))
      assert.equal(head.headers['content-type'], 'text/plain')

      const ranged = await send(proxy.url, pathFor(key), { headers: { range: 'bytes=0-6' } })
      assert.equal(ranged.status, 206)
      assert.equal(ranged.text, 'body of')
      assert.equal(ranged.headers['content-range'], `bytes 0-6/${Buffer.byteLength(body)}`)

      const seen = s3.requests.slice(before).filter(notProbe).map((r) => r.method)
      assert.deepEqual(seen, ['GET', 'HEAD', 'GET'], 'each request passed the signature check once')
    })
  }

  it('signs a key with an empty segment as sent (a//b is its own key)', async () => {
    // s3rver cannot store such a key: a 404 (not a 502) says the signature was accepted.
    const before = s3.requests.length
    const res = await send(proxy.url, '/signed/a//b.txt')
    assert.equal(res.status, 404)
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ORIGIN_NOT_FOUND')
    assert.deepEqual(s3.requests.slice(before).filter(notProbe).map((r) => r.url), ['/signing/a//b.txt?x-id=GetObject'])
  })
})

describe('connections', () => {
  it('returns every socket to the pool: more requests than s3.max_connections all get answers', async () => {
    // Each answer that held on to its socket would leave one fewer of the two; the third request
    // would then wait for a socket until s3.timeout (504).
    for (let i = 0; i < 3; i++) {
      assert.equal((await send(proxy.url, '/pool/plain.txt', { method: 'HEAD' })).status, 200)
      assert.equal((await send(proxy.url, '/pool/plain.txt')).status, 200)
      assert.equal((await send(proxy.url, '/pool/missing.txt', { method: 'HEAD' })).status, 404)
      assert.equal((await send(proxy.url, '/pool/missing.txt')).status, 404)
      assert.equal((await send(proxy.url, '/pool/plain.txt', { headers: { range: 'bytes=0-3' } })).status, 206)
    }
  })
})

describe('revalidation', () => {
  it('revalidates a stale entry with a signed conditional GET', async () => {
    const key = 'semi;colon,comma=eq&amp$dollar@at.txt'
    const path = `/cached/${encodeURIComponent(key)}`
    assert.equal((await send(proxy.url, path)).status, 200)
    await new Promise((resolve) => setTimeout(resolve, 1100))
    const before = s3.requests.length
    const again = await send(proxy.url, path)
    assert.equal(again.status, 200)
    assert.equal(again.text, `body of ${key}`)
    const conditional = s3.requests.slice(before).find((r) => r.headers['if-none-match'] !== undefined)
    assert.ok(conditional !== undefined, 'a conditional GET reached the backend')
    assert.equal(conditional.method, 'GET')
  })
})

describe('credentials', () => {
  it('answers 502 ORIGIN_AUTH_FAILED when the backend refuses the secret, for GET and HEAD', async () => {
    const got = await send(proxy.url, '/wrong/plain.txt')
    assert.equal(got.status, 502)
    assert.equal(got.json<{ error: { code: string } }>().error.code, 'ORIGIN_AUTH_FAILED')
    assert.doesNotMatch(got.text, /SignatureDoesNotMatch|signing|<Error>/)
    const head = await send(proxy.url, '/wrong/plain.txt', { method: 'HEAD' })
    assert.equal(head.status, 502)
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/wrong/plain.txt' && l.method === 'GET')
    assert.equal(line.error, 'ORIGIN_AUTH_FAILED')
    assert.equal(line.reason, 'SignatureDoesNotMatch')
  })

  it('sends the configured session token, signed, and is refused without it', async () => {
    s3.requireSessionToken('session/token+with=chars')
    try {
      const withToken = await send(proxy.url, '/token/plain.txt')
      assert.equal(withToken.status, 200)
      assert.equal(withToken.text, 'body of plain.txt')
      const sent = s3.requests.filter(notProbe).at(-1)
      assert.equal(sent?.url, '/signing/plain.txt?x-id=GetObject')
      assert.equal(sent?.headers['x-amz-security-token'], 'session/token+with=chars')
      assert.equal((await send(proxy.url, '/token/plain.txt', { method: 'HEAD' })).status, 200)

      const without = await send(proxy.url, '/signed/plain.txt')
      assert.equal(without.status, 502)
      assert.equal(without.json<{ error: { code: string } }>().error.code, 'ORIGIN_AUTH_FAILED')
    } finally {
      s3.requireSessionToken(undefined)
    }
  })

  it('never sends the secret itself', async () => {
    await send(proxy.url, '/signed/plain.txt')
    const forwarded = s3.requests.filter(notProbe).at(-1)
    assert.ok(forwarded !== undefined)
    assert.doesNotMatch(JSON.stringify(forwarded.headers), new RegExp(SECRET_KEY.replace(/[+/]/g, '\\$&')))
    assert.match(String(forwarded.headers.authorization), /^AWS4-HMAC-SHA256 Credential=S3RVER\/\d{8}\/us-east-1\/s3\/aws4_request/)
  })
})
