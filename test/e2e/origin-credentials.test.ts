// A bucket without access_key/secret_key signs with the AWS default credential chain: here the
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), read by the proxy
// process itself, including a rotation that happens while it runs. This file sets process.env
// for its own process only (node --test runs each file in a process of its own).
import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { send } from '../support/http.ts'
import { startTestProxy, type TestProxy } from '../support/proxy.ts'
import { ACCESS_KEY, SECRET_KEY, startS3, type TestS3 } from '../support/s3.ts'

const ROTATED_SECRET = 'rotated/env+Secret=2'

let s3: TestS3
let proxy: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('env-creds')
  await s3.put('env-creds', 'a.txt', 'signed from the environment')
  for (const name of ['AWS_PROFILE', 'AWS_DEFAULT_PROFILE', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE']) delete process.env[name]
  process.env.AWS_ACCESS_KEY_ID = ACCESS_KEY
  process.env.AWS_SECRET_ACCESS_KEY = SECRET_KEY
  process.env.AWS_SESSION_TOKEN = 'first-session'
  // Credentials that expire within five minutes are refreshed from the chain in the background
  // (what instance and task roles do shortly before their credentials expire).
  process.env.AWS_CREDENTIAL_EXPIRATION = new Date(Date.now() + 120_000).toISOString()
  s3.requireSessionToken('first-session')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
  - name: env
    path_prefix: /env
    s3:
      bucket: env-creds
      region: us-east-1
      endpoint: ${s3.endpoint}
      timeout: 2
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

it('signs with credentials and the session token from the environment', async () => {
  const res = await send(proxy.url, '/env/a.txt')
  assert.equal(res.status, 200)
  assert.equal(res.text, 'signed from the environment')
  assert.equal((await send(proxy.url, '/env/a.txt', { method: 'HEAD' })).status, 200)
  const sent = s3.requests.filter((r) => r.url.startsWith('/env-creds/a.txt')).at(-1)
  assert.equal(sent?.headers['x-amz-security-token'], 'first-session')
})

it('picks up rotated credentials from the environment without a restart', async () => {
  process.env.AWS_SECRET_ACCESS_KEY = ROTATED_SECRET
  process.env.AWS_SESSION_TOKEN = 'second-session'
  // The old credentials are still good for this request, which starts the refresh.
  assert.equal((await send(proxy.url, '/env/a.txt')).status, 200)
  // From now on the backend accepts only the new ones.
  s3.rotateSecret(ROTATED_SECRET)
  s3.requireSessionToken('second-session')
  const res = await send(proxy.url, '/env/a.txt')
  assert.equal(res.status, 200, res.text)
  assert.equal(res.text, 'signed from the environment')
  const sent = s3.requests.filter((r) => r.url.startsWith('/env-creds/a.txt')).at(-1)
  assert.equal(sent?.headers['x-amz-security-token'], 'second-session')
})

it('is refused once the environment holds credentials the backend does not accept', async () => {
  process.env.AWS_SECRET_ACCESS_KEY = 'revoked-secret'
  // One request starts the refresh, the next signs with what the environment now says.
  await send(proxy.url, '/env/a.txt')
  const res = await send(proxy.url, '/env/a.txt')
  assert.equal(res.status, 502)
  assert.equal(res.json<{ error: { code: string } }>().error.code, 'ORIGIN_AUTH_FAILED')
})
