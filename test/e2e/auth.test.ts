// JWT authentication through the running proxy: every token source, each algorithm family with
// real jose-generated keys, the classic attacks, claim rules, and 401 vs 403.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SECRET = 'an-hmac-secret-that-is-long-enough-32+'
const ISSUER = 'https://issuer.test'
const AUDIENCE = 'yatagarasu'

let s3: TestS3
let proxy: TestProxy
let keyDir: string
const keys: Record<string, { privateKey: CryptoKey; pem: string }> = {}

async function hs(claims: JWTPayload = {}, options: { alg?: string; secret?: string | Uint8Array; exp?: string | number } = {}) {
  const secret = typeof options.secret === 'string' || options.secret === undefined ? new TextEncoder().encode(options.secret ?? SECRET) : options.secret
  return new SignJWT({ role: 'reader', ...claims })
    .setProtectedHeader({ alg: options.alg ?? 'HS256' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject('user-1')
    .setIssuedAt()
    .setExpirationTime(options.exp ?? '5m')
    .sign(secret)
}

async function signed(alg: string, claims: JWTPayload = {}) {
  const key = keys[alg]
  assert.ok(key !== undefined)
  return new SignJWT({ role: 'reader', ...claims })
    .setProtectedHeader({ alg })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setExpirationTime('5m')
    .sign(key.privateKey)
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const codeOf = (res: { json<T>(): T }) => res.json<{ error: { code: string } }>().error.code

before(async () => {
  s3 = await startS3()
  await s3.createBucket('secret-files')
  await s3.put('secret-files', 'doc.txt', 'top secret')
  keyDir = await mkdtemp(join(tmpdir(), 'yatagarasu-keys-'))
  for (const alg of ['RS256', 'PS256', 'ES256', 'EdDSA']) {
    const pair = await generateKeyPair(alg, { extractable: true })
    const pem = await exportSPKI(pair.publicKey)
    await writeFile(join(keyDir, `${alg}.pem`), pem)
    keys[alg] = { privateKey: pair.privateKey, pem }
  }
  const asymmetric = (alg: string, prefix: string) =>
    bucketYaml({
      name: alg.toLowerCase(),
      prefix,
      bucket: 'secret-files',
      endpoint: s3.endpoint,
      extra: `    auth:
      enabled: true
      jwt:
        public_key_path: ${join(keyDir, `${alg}.pem`)}
        algorithm: ${alg}
        issuer: ${ISSUER}
        audience: ${AUDIENCE}`,
    })
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
jwt:
  secret: "${SECRET}"
  algorithms: [HS256, HS512]
  issuer: ${ISSUER}
  audience: ${AUDIENCE}
  token_sources:
    - type: bearer
    - type: header
      name: X-Auth-Token
      prefix: "Token "
    - type: query
      name: token
    - type: cookie
      name: auth
  claims:
    - claim: role
      operator: in
      value: [reader, admin]
buckets:
${bucketYaml({ name: 'private', prefix: '/private', bucket: 'secret-files', endpoint: s3.endpoint, extra: '    auth: { enabled: true }' })}
${bucketYaml({
  name: 'admins',
  prefix: '/admins',
  bucket: 'secret-files',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        secret: "${SECRET}"
        claims_verification:
          - claim: org.role
            operator: equals
            value: admin`,
})}
${asymmetric('RS256', '/rs')}
${asymmetric('PS256', '/ps')}
${asymmetric('ES256', '/es')}
${asymmetric('EdDSA', '/ed')}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (keyDir !== undefined) await rm(keyDir, { recursive: true, force: true })
})

describe('token sources', () => {
  it('accepts a bearer token, whatever the scheme’s case', async () => {
    const token = await hs()
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      const res = await send(proxy.url, '/private/doc.txt', { headers: { authorization: `${scheme} ${token}` } })
      assert.equal(res.status, 200, scheme)
      assert.equal(res.text, 'top secret')
    }
  })

  it('refuses two Authorization headers, even when the first carries a valid token', async () => {
    const res = await send(proxy.url, '/private/doc.txt', { headers: { authorization: [`Bearer ${await hs()}`, 'Bearer junk'] } })
    assert.equal(res.status, 401)
  })

  it('accepts a custom header with its prefix', async () => {
    const res = await send(proxy.url, '/private/doc.txt', { headers: { 'x-auth-token': `Token ${await hs()}` } })
    assert.equal(res.status, 200)
  })

  it('accepts a cookie', async () => {
    const res = await send(proxy.url, '/private/doc.txt', { headers: { cookie: `theme=dark; auth=${await hs()}` } })
    assert.equal(res.status, 200)
  })

  it('accepts a query token, keeps it out of logs and S3, and sets Referrer-Policy', async () => {
    const token = await hs()
    const res = await send(proxy.url, `/private/doc.txt?token=${token}`, { headers: { 'x-request-id': 'query-token' } })
    assert.equal(res.status, 200)
    assert.equal(res.headers['referrer-policy'], 'no-referrer')
    const forwarded = s3.getsOf('secret-files', 'doc.txt').at(-1)
    assert.ok(forwarded !== undefined)
    assert.doesNotMatch(forwarded.url + JSON.stringify(forwarded.headers), new RegExp(token.slice(-20)))
    await proxy.logged((l) => l.request_id === 'query-token')
    assert.doesNotMatch(JSON.stringify(proxy.logs), new RegExp(token.slice(-20)))
  })

  it('sets Referrer-Policy on any response to a request that carried a query token', async () => {
    const withBearerToo = await send(proxy.url, `/private/doc.txt?token=x`, { headers: bearer(await hs()) })
    assert.equal(withBearerToo.status, 200)
    assert.equal(withBearerToo.headers['referrer-policy'], 'no-referrer')
    const notFound = await send(proxy.url, '/nowhere/doc.txt?token=x')
    assert.equal(notFound.status, 404)
    assert.equal(notFound.headers['referrer-policy'], 'no-referrer')
    assert.equal((await send(proxy.url, '/nowhere/doc.txt')).headers['referrer-policy'], undefined)
  })

  it('sets Referrer-Policy on a refused query token too', async () => {
    const res = await send(proxy.url, '/private/doc.txt?token=not.a.jwt')
    assert.equal(res.status, 401)
    assert.equal(res.headers['referrer-policy'], 'no-referrer')
  })
})

describe('401 and 403', () => {
  it('answers a missing token with 401 and WWW-Authenticate: Bearer', async () => {
    const res = await send(proxy.url, '/private/doc.txt')
    assert.equal(res.status, 401)
    assert.equal(res.headers['www-authenticate'], 'Bearer')
    assert.equal(codeOf(res), 'AUTH_TOKEN_MISSING')
  })

  const invalid: Array<[string, () => Promise<string>, string]> = [
    ['an expired token', () => hs({}, { exp: Math.floor(Date.now() / 1000) - 120 }), 'expired'],
    ['a token not yet valid', async () => new SignJWT({ role: 'reader' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).setNotBefore('10m').setExpirationTime('20m').sign(new TextEncoder().encode(SECRET)), 'not_yet_valid'],
    ['a wrong issuer', async () => new SignJWT({ role: 'reader' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://evil.test').setAudience(AUDIENCE).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET)), 'wrong_issuer'],
    ['a wrong audience', async () => new SignJWT({ role: 'reader' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience('other').setExpirationTime('5m').sign(new TextEncoder().encode(SECRET)), 'wrong_audience'],
    ['a token without exp', async () => new SignJWT({ role: 'reader' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).sign(new TextEncoder().encode(SECRET)), 'claim_missing:exp'],
    ['a tampered payload', async () => { const [h, , sig] = (await hs()).split('.'); const body = Buffer.from(JSON.stringify({ role: 'admin', iss: ISSUER, aud: AUDIENCE, exp: 9999999999 })).toString('base64url'); return `${h}.${body}.${sig}` }, 'bad_signature'],
    ['a token signed with another secret', () => hs({}, { secret: 'another-secret-that-is-also-long-enough' }), 'bad_signature'],
    ['alg none', async () => `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ role: 'admin', iss: ISSUER, aud: AUDIENCE, exp: 9999999999 })).toString('base64url')}.`, 'alg_not_allowed'],
    ['an algorithm outside the allow-list', () => hs({}, { alg: 'HS384' }), 'alg_not_allowed'],
    ['a key embedded in the header', async () => new SignJWT({ role: 'reader' }).setProtectedHeader({ alg: 'HS256', jku: 'https://evil.test/jwks' }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET)), 'embedded_key'],
    ['an oversized token', async () => `${'a'.repeat(5000)}.${'b'.repeat(5000)}.c`, 'oversized'],
    ['garbage', async () => 'not-a-jwt', 'malformed'],
  ]
  for (const [name, make, reason] of invalid) {
    it(`answers ${name} with 401 invalid_token (logged as ${reason})`, async () => {
      const requestId = `invalid-${reason}-${name.length}`
      const res = await send(proxy.url, '/private/doc.txt', { headers: { ...bearer(await make()), 'x-request-id': requestId } })
      assert.equal(res.status, 401)
      assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
      assert.equal(codeOf(res), 'AUTH_TOKEN_INVALID')
      assert.equal(res.json<{ error: { message: string } }>().error.message, 'The token is invalid')
      const line = await proxy.logged((l) => l.request_id === requestId)
      assert.equal(line.reason, reason)
    })
  }

  it('refuses an HS256 token signed with the RSA public key (algorithm confusion)', async () => {
    const token = await hs({}, { secret: keys.RS256?.pem })
    const res = await send(proxy.url, '/rs/doc.txt', { headers: bearer(token) })
    assert.equal(res.status, 401)
  })

  it('answers a valid token that fails a claim rule with 403', async () => {
    const res = await send(proxy.url, '/private/doc.txt', { headers: { ...bearer(await hs({ role: 'guest' })), 'x-request-id': 'claim-403' } })
    assert.equal(res.status, 403)
    assert.equal(codeOf(res), 'AUTHZ_DENIED')
    assert.equal((await proxy.logged((l) => l.request_id === 'claim-403')).reason, 'claim:role')
  })

  it('lets a bucket’s own jwt block replace the global one (nested claim rule)', async () => {
    const admin = await hs({ org: { role: 'admin' } }, { exp: '5m' })
    assert.equal((await send(proxy.url, '/admins/doc.txt', { headers: bearer(admin) })).status, 200)
    const reader = await hs({ org: { role: 'reader' } })
    assert.equal((await send(proxy.url, '/admins/doc.txt', { headers: bearer(reader) })).status, 403)
    // The bucket block has no query source: the global one does not leak into it.
    assert.equal((await send(proxy.url, `/admins/doc.txt?token=${admin}`)).status, 401)
  })
})

describe('algorithms', () => {
  for (const [alg, prefix] of [['RS256', '/rs'], ['PS256', '/ps'], ['ES256', '/es'], ['EdDSA', '/ed']] as const) {
    it(`verifies ${alg} tokens against a PEM public key`, async () => {
      const res = await send(proxy.url, `${prefix}/doc.txt`, { headers: bearer(await signed(alg)) })
      assert.equal(res.status, 200)
      assert.equal(res.text, 'top secret')
    })
  }

  it('accepts HS512 from the allow-list', async () => {
    const res = await send(proxy.url, '/private/doc.txt', { headers: bearer(await hs({}, { alg: 'HS512' })) })
    assert.equal(res.status, 200)
  })
})
