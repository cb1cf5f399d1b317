// AssumeRoleWithWebIdentity on the S3 API listener: a JWT exchanged for temporary credentials by
// Debian's awscli and python3-boto3 (as they send it: an unsigned form POST), then used to read
// through the listener; what a tampered, expired or foreign credential gets; which buckets the
// claims open. Against s3rver behind the SigV4-verifying layer.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { GetObjectCommand, ListBucketsCommand, ListObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { decodeJwt, SignJWT } from 'jose'
import { ConfigError, parseConfig } from '../../src/config/load.ts'
import { SessionSealer } from '../../src/frontends/s3-api/session-token.ts'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { PYTHON, requireBoto3 } from '../support/python.ts'

const run = promisify(execFile)
const AWS = '/usr/bin/aws'
const JWT_SECRET = 'sts-test-jwt-secret-0123456789abcdefghijkl'
const FOREIGN_SECRET = 'another-issuers-secret-0123456789abcdefghij'
const STS_KEY = randomBytes(32)
const OLD_KEY = randomBytes(32)
const ROLE = 'arn:aws:iam::000000000000:role/reader'

let s3: TestS3
let proxy: TestProxy
let s3Url: string
let home: string

async function jwt(claims: Record<string, unknown>, options: { secret?: string; expiresIn?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(now - 60)
    .setExpirationTime(now + (options.expiresIn ?? 3600))
    .sign(new TextEncoder().encode(options.secret ?? JWT_SECRET))
}

const authBucket = (name: string, role: string, secret = JWT_SECRET) =>
  bucketYaml({
    name,
    prefix: `/${name}`,
    bucket: `${name}-backend`,
    endpoint: s3.endpoint,
    extra: `    auth:
      enabled: true
      jwt:
        secret: "${secret}"
        claims_verification:
          - { claim: role, operator: equals, value: ${role} }`,
  })

before(async () => {
  s3 = await startS3()
  for (const name of ['reports', 'admins', 'foreign', 'open']) {
    await s3.createBucket(`${name}-backend`)
    await s3.put(`${name}-backend`, 'doc.txt', `${name} document\n`, { ContentType: 'text/plain' })
  }
  await s3.createBucket('home-backend')
  for (const key of ['users/alice/notes.txt', 'users/alice/sub/deep.txt', 'users/bob/layoffs.xlsx', 'users/carol/leave.pdf', 'shared/a.txt', 'shared/b.bin', 'shared/x/c.txt']) {
    await s3.put('home-backend', key, 'x')
  }
  await s3.createBucket('payroll-backend')
  await s3.put('payroll-backend', 'salaries.csv', 'ceo,9999999\n')
  proxy = await startTestProxy(
    `
server:
  address: "127.0.0.1:0"
jwt:
  secret: "${JWT_SECRET}"
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  sts:
    enabled: true
    keys: ["\${STS_KEY}", "\${OLD_KEY}"]
    max_duration_seconds: 3600
buckets:
${authBucket('reports', 'reader')}
${authBucket('admins', 'admin')}
${authBucket('foreign', 'reader', FOREIGN_SECRET)}
${bucketYaml({ name: 'open', prefix: '/open', bucket: 'open-backend', endpoint: s3.endpoint })}
${bucketYaml({ name: 'home', prefix: '/home', bucket: 'home-backend', endpoint: s3.endpoint, extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        path_scope_claim: paths
        claims_verification:
          - { claim: role, operator: equals, value: home }` })}
${bucketYaml({ name: 'payroll', prefix: '/payroll', bucket: 'payroll-backend', endpoint: s3.endpoint, extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        required_claims: [mfa_at]
        max_token_lifetime_seconds: 1200
        claims_verification:
          - { claim: role, operator: equals, value: payroll }` })}
`,
    { STS_KEY: STS_KEY.toString('hex'), OLD_KEY: OLD_KEY.toString('base64') }
  )
  s3Url = proxy.proxy.s3Url as string
  home = await mkdtemp(join(tmpdir(), 'yatagarasu-sts-'))
  await writeFile(join(home, 'config'), '[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n')
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (home !== undefined) await rm(home, { recursive: true, force: true })
})

interface Credentials {
  AccessKeyId: string
  SecretAccessKey: string
  SessionToken: string
  Expiration: string
}

/** Runs aws with an isolated home; resolves with the exit code and both outputs. */
async function aws(args: string[], credentials?: Credentials): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!existsSync(AWS)) throw new Error(`${AWS} is missing: install Debian's awscli (.ci/run does)`)
  const env: Record<string, string> = {
    PATH: '/usr/bin:/bin',
    HOME: home,
    AWS_CONFIG_FILE: join(home, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: join(home, 'credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_PAGER: '',
  }
  if (credentials !== undefined) {
    env.AWS_ACCESS_KEY_ID = credentials.AccessKeyId
    env.AWS_SECRET_ACCESS_KEY = credentials.SecretAccessKey
    env.AWS_SESSION_TOKEN = credentials.SessionToken
  }
  try {
    const { stdout, stderr } = await run(AWS, ['--endpoint-url', s3Url, ...args], { env, maxBuffer: 4 * 1024 * 1024 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

const assume = (token: string, ...extra: string[]) =>
  aws(['sts', 'assume-role-with-web-identity', '--role-arn', ROLE, '--role-session-name', 'tester', '--web-identity-token', token, ...extra])

/** An SDK client signing with temporary credentials. */
function sdk(credentials: { accessKeyId: string; secretAccessKey: string; sessionToken: string }): S3Client {
  return new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials })
}

async function refusal(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await promise
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } }
    return { name: e.name, status: e.$metadata?.httpStatusCode }
  }
  throw new Error('the request was not refused')
}

describe('aws sts assume-role-with-web-identity', () => {
  it('exchanges a JWT for credentials that aws s3 cp and ls use, seeing only the buckets the claims open', async () => {
    const token = await jwt({ sub: 'user-1', role: 'reader' }, { expiresIn: 1800 })
    const exchanged = await assume(token)
    assert.equal(exchanged.code, 0, exchanged.stderr)
    const answer = JSON.parse(exchanged.stdout) as { Credentials: Credentials; SubjectFromWebIdentityToken: string; AssumedRoleUser: { Arn: string } }
    const { Credentials: credentials } = answer
    assert.match(credentials.AccessKeyId, /^ASIA[A-Z2-7]{16}$/)
    assert.equal(answer.SubjectFromWebIdentityToken, 'user-1')
    assert.equal(answer.AssumedRoleUser.Arn, 'arn:aws:sts::000000000000:assumed-role/reader/tester')
    // At most the token's remaining lifetime (30 minutes), not the default hour.
    const lifetime = Date.parse(credentials.Expiration) - Date.now()
    assert.ok(lifetime > 1700_000 && lifetime <= 1800_000, `credentials live ${lifetime} ms`)

    const out = join(home, 'doc.txt')
    const [copied, listed, expired] = await Promise.all([
      aws(['s3', 'cp', 's3://reports/doc.txt', out], credentials),
      aws(['s3', 'ls'], credentials),
      assume(await jwt({ sub: 'user-1', role: 'reader' }, { expiresIn: -120 })),
    ])
    assert.equal(copied.code, 0, copied.stderr)
    assert.equal(await readFile(out, 'utf8'), 'reports document\n')
    assert.equal(listed.code, 0, listed.stderr)
    // admins (rules refuse the claims) and foreign (another issuer's tokens) do not exist for it.
    assert.deepEqual(listed.stdout.trim().split('\n').map((line) => line.split(' ').at(-1)), ['reports', 'open'])
    assert.notEqual(expired.code, 0)
    assert.match(expired.stderr, /ExpiredTokenException/)
  })
})

describe('boto3', () => {
  it('exchanges a JWT and reads with the credentials; the errors are the codes botocore raises', async () => {
    requireBoto3()
    const token = await jwt({ sub: 'user-2', role: 'reader' })
    const adminToken = await jwt({ sub: 'admin-1', role: 'admin' })
    const script = `
import json, sys, boto3, botocore.exceptions
from botocore.config import Config
url, token, admin_token, forged = sys.argv[1:5]
sts = boto3.client('sts', endpoint_url=url, region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')
def code_of(call):
    try:
        call()
        return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
def s3_for(t):
    c = sts.assume_role_with_web_identity(RoleArn='${ROLE}', RoleSessionName='boto', WebIdentityToken=t, DurationSeconds=900)['Credentials']
    return boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id=c['AccessKeyId'],
        aws_secret_access_key=c['SecretAccessKey'], aws_session_token=c['SessionToken'],
        config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}))
reader, admin = s3_for(token), s3_for(admin_token)
print(json.dumps({
  'body': reader.get_object(Bucket='reports', Key='doc.txt')['Body'].read().decode(),
  'buckets': [b['Name'] for b in reader.list_buckets()['Buckets']],
  'keys': [o['Key'] for o in reader.list_objects_v2(Bucket='reports').get('Contents', [])],
  'admin_reads_reports': code_of(lambda: admin.head_object(Bucket='reports', Key='doc.txt')),
  'admin_body': admin.get_object(Bucket='admins', Key='doc.txt')['Body'].read().decode(),
  'admin_buckets': [b['Name'] for b in admin.list_buckets()['Buckets']],
  'refused': code_of(lambda: reader.get_object(Bucket='admins', Key='doc.txt')),
  'foreign': code_of(lambda: reader.get_object(Bucket='foreign', Key='doc.txt')),
  'forged': code_of(lambda: sts.assume_role_with_web_identity(RoleArn='${ROLE}', RoleSessionName='boto', WebIdentityToken=forged)),
  'too_long': code_of(lambda: sts.assume_role_with_web_identity(RoleArn='${ROLE}', RoleSessionName='boto', WebIdentityToken=token, DurationSeconds=3601)),
}))
`
    const forged = `${token.slice(0, -4)}AAAA`
    const { stdout } = await run(PYTHON, ['-c', script, s3Url, token, adminToken, forged], { env: { PATH: '/usr/bin:/bin', HOME: home, AWS_CONFIG_FILE: join(home, 'config'), AWS_EC2_METADATA_DISABLED: 'true' } })
    assert.deepEqual(JSON.parse(stdout), {
      body: 'reports document\n',
      buckets: ['reports', 'open'],
      keys: ['doc.txt'],
      // HEAD has no body: botocore names the error by its status.
      admin_reads_reports: '404',
      admin_body: 'admins document\n',
      admin_buckets: ['admins', 'open'],
      refused: 'NoSuchBucket',
      foreign: 'NoSuchBucket',
      forged: 'InvalidIdentityToken',
      too_long: 'ValidationError',
    })
  })
})

describe('temporary credentials', () => {
  it('refuses a tampered session token, an expired credential, and one sealed with a key it does not hold', async () => {
    const exchanged = await fetch(`${s3Url}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
      body: new URLSearchParams({ Action: 'AssumeRoleWithWebIdentity', Version: '2011-06-15', RoleArn: ROLE, RoleSessionName: 'sdk-session', WebIdentityToken: await jwt({ role: 'reader' }) }),
    })
    assert.equal(exchanged.status, 200)
    const xml = await exchanged.text()
    const field = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1] as string
    const good = { accessKeyId: field('AccessKeyId'), secretAccessKey: field('SecretAccessKey'), sessionToken: field('SessionToken') }
    assert.match(xml, /<ResponseMetadata><RequestId>[^<]+<\/RequestId><\/ResponseMetadata>/)

    const read = (c: typeof good) => sdk(c).send(new GetObjectCommand({ Bucket: 'reports', Key: 'doc.txt' }))
    assert.equal(await (await read(good)).Body?.transformToString(), 'reports document\n')
    const t = good.sessionToken
    const flipped = `${t.slice(0, 20)}${t[20] === 'A' ? 'B' : 'A'}${t.slice(21)}`
    assert.deepEqual(await refusal(read({ ...good, sessionToken: flipped })), { name: 'InvalidToken', status: 400 })
    // Another session's token with this one's key id and secret: the signature's secret does not match.
    const other = new SessionSealer([STS_KEY]).seal({ role: 'reader' }, Math.floor(Date.now() / 1000) + 600, ['reports'])
    assert.deepEqual(await refusal(read({ ...good, sessionToken: other.token })), { name: 'SignatureDoesNotMatch', status: 403 })

    const expired = new SessionSealer([STS_KEY]).seal({ role: 'reader' }, Math.floor(Date.now() / 1000) - 1, ['reports'])
    assert.deepEqual(await refusal(read({ accessKeyId: expired.accessKeyId, secretAccessKey: expired.secret, sessionToken: expired.token })), { name: 'ExpiredToken', status: 400 })
    // Sealed with the second (older) key: still opens, so keys rotate.
    const rotated = new SessionSealer([OLD_KEY]).seal({ role: 'reader' }, Math.floor(Date.now() / 1000) + 600, ['reports'])
    assert.equal(await (await read({ accessKeyId: rotated.accessKeyId, secretAccessKey: rotated.secret, sessionToken: rotated.token })).Body?.transformToString(), 'reports document\n')
    const unknown = new SessionSealer([randomBytes(32)]).seal({ role: 'reader' }, Math.floor(Date.now() / 1000) + 600, ['reports'])
    assert.deepEqual(await refusal(read({ accessKeyId: unknown.accessKeyId, secretAccessKey: unknown.secret, sessionToken: unknown.token })), { name: 'InvalidToken', status: 400 })
    // Its claims are what the buckets' rules decide on, per request.
    const admin = new SessionSealer([STS_KEY]).seal({ role: 'admin' }, Math.floor(Date.now() / 1000) + 600, ['admins', 'reports'])
    const buckets = await sdk({ accessKeyId: admin.accessKeyId, secretAccessKey: admin.secret, sessionToken: admin.token }).send(new ListBucketsCommand({}))
    assert.deepEqual(buckets.Buckets?.map((b) => b.Name), ['admins', 'open'])
  })

  it('answers the exchange in the query too, and STS errors as ErrorResponse', async () => {
    const query = new URLSearchParams({ Action: 'AssumeRoleWithWebIdentity', Version: '2011-06-15', RoleArn: ROLE, RoleSessionName: 'query-session', WebIdentityToken: await jwt({ role: 'reader' }), DurationSeconds: '900' })
    const viaQuery = await fetch(`${s3Url}/?${query}`)
    assert.equal(viaQuery.status, 200)
    assert.match(viaQuery.headers.get('content-type') ?? '', /^text\/xml/)
    assert.match(await viaQuery.text(), /^<AssumeRoleWithWebIdentityResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/"><AssumeRoleWithWebIdentityResult>.*<Credentials><AccessKeyId>ASIA/)

    const missing = await fetch(`${s3Url}/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'Action=AssumeRoleWithWebIdentity&Version=2011-06-15' })
    assert.equal(missing.status, 400)
    const text = await missing.text()
    assert.match(text, /^<ErrorResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/"><Error><Type>Sender<\/Type><Code>ValidationError<\/Code><Message>[^<]*webIdentityToken[^<]*<\/Message><\/Error><RequestId>([^<]+)<\/RequestId><\/ErrorResponse>$/)
    assert.equal(/<RequestId>([^<]+)</.exec(text)?.[1], missing.headers.get('x-amz-request-id'))

    query.set('DurationSeconds', '7200')
    const tooLong = await fetch(`${s3Url}/?${query}`)
    assert.equal(tooLong.status, 400)
    assert.match(await tooLong.text(), /<Code>ValidationError<\/Code><Message>The requested DurationSeconds exceeds the MaxSessionDuration set for this role \(3600\)\.<\/Message>/)

    const other = await fetch(`${s3Url}/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'Action=AssumeRole&Version=2011-06-15' })
    assert.equal(other.status, 400)
    assert.match(await other.text(), /<Code>InvalidAction<\/Code>/)

    const huge = await fetch(`${s3Url}/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `Action=AssumeRoleWithWebIdentity&Pad=${'x'.repeat(70 * 1024)}` })
    assert.equal(huge.status, 413)
    assert.match(await huge.text(), /<Code>RequestEntityTooLarge<\/Code>/)

    // Any other POST is still a refused write, with S3's error.
    const upload = await fetch(`${s3Url}/reports/new.txt`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=b' })
    assert.equal(upload.status, 403)
    assert.match(await upload.text(), /<Error><Code>AccessDenied<\/Code>/)
  })
})

/** Exchanges a JWT with a plain form POST; the credentials for the SDK, and their expiry. */
async function exchange(token: string): Promise<{ accessKeyId: string; secretAccessKey: string; sessionToken: string; expiresAt: number }> {
  const res = await fetch(`${s3Url}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ Action: 'AssumeRoleWithWebIdentity', Version: '2011-06-15', RoleArn: ROLE, RoleSessionName: 'scoped', WebIdentityToken: token }),
  })
  const xml = await res.text()
  assert.equal(res.status, 200, xml)
  const field = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1] as string
  return { accessKeyId: field('AccessKeyId'), secretAccessKey: field('SecretAccessKey'), sessionToken: field('SessionToken'), expiresAt: Date.parse(field('Expiration')) }
}

describe('a path-scoped temporary credential', () => {
  it('lists only the keys its scope covers, as its GETs are limited', async () => {
    const { expiresAt: _, ...credentials } = await exchange(await jwt({ role: 'home', paths: ['users/alice/', 'shared/*.txt'] }))
    const client = sdk(credentials)
    const list = async (input: { Prefix?: string; Delimiter?: string }) => {
      const out = await client.send(new ListObjectsV2Command({ Bucket: 'home', ...input }))
      return { keys: (out.Contents ?? []).map((o) => o.Key), prefixes: (out.CommonPrefixes ?? []).map((p) => p.Prefix) }
    }
    assert.deepEqual(await list({}), { keys: ['shared/a.txt', 'users/alice/notes.txt', 'users/alice/sub/deep.txt'], prefixes: [] })
    assert.deepEqual(await list({ Prefix: 'users/bob/' }), { keys: [], prefixes: [] })
    assert.deepEqual(await list({ Prefix: 'users/' }), { keys: ['users/alice/notes.txt', 'users/alice/sub/deep.txt'], prefixes: [] })
    // A group shows only when a key in scope opens it: shared/x/ holds none (* stays in one segment).
    assert.deepEqual(await list({ Delimiter: '/' }), { keys: [], prefixes: ['shared/', 'users/'] })
    assert.deepEqual(await list({ Prefix: 'shared/', Delimiter: '/' }), { keys: ['shared/a.txt'], prefixes: [] })
    const v1 = await client.send(new ListObjectsCommand({ Bucket: 'home', Prefix: 'users/' }))
    assert.deepEqual((v1.Contents ?? []).map((o) => o.Key), ['users/alice/notes.txt', 'users/alice/sub/deep.txt'])
    assert.equal(await (await client.send(new GetObjectCommand({ Bucket: 'home', Key: 'users/alice/notes.txt' }))).Body?.transformToString(), 'x')
    assert.deepEqual(await refusal(client.send(new GetObjectCommand({ Bucket: 'home', Key: 'users/bob/layoffs.xlsx' }))), { name: 'AccessDenied', status: 403 })
    // No scope claim: nothing to list.
    const { expiresAt: __, ...unscoped } = await exchange(await jwt({ role: 'home' }))
    const none = sdk(unscoped)
    assert.deepEqual((await none.send(new ListObjectsV2Command({ Bucket: 'home' }))).Contents ?? [], [])
  })
})

describe("a bucket's own token checks", () => {
  it('open a bucket to a temporary credential only if the exchanged token passes them', async () => {
    const read = (c: Awaited<ReturnType<typeof exchange>>) => {
      const { expiresAt: _, ...credentials } = c
      return sdk(credentials).send(new GetObjectCommand({ Bucket: 'payroll', Key: 'salaries.csv' }))
    }
    const now = Math.floor(Date.now() / 1000)
    // No mfa_at (a required claim of the bucket): the HTTP path refuses it, and so does the credential.
    const noMfa = await jwt({ role: 'payroll' }, { expiresIn: 600 })
    assert.equal((await fetch(`${proxy.proxy.url}/payroll/salaries.csv`, { headers: { authorization: `Bearer ${noMfa}` } })).status, 401)
    assert.deepEqual(await refusal(read(await exchange(noMfa))), { name: 'NoSuchBucket', status: 404 })
    // A lifetime over the bucket's max_token_lifetime_seconds (1200): refused alike.
    assert.deepEqual(await refusal(read(await exchange(await jwt({ role: 'payroll', mfa_at: now }, { expiresIn: 3600 })))), { name: 'NoSuchBucket', status: 404 })
    // Both checks passed: the bucket opens, for no longer than the token lives.
    const goodToken = await jwt({ role: 'payroll', mfa_at: now }, { expiresIn: 1000 })
    const good = await exchange(goodToken)
    assert.equal(await (await read(good)).Body?.transformToString(), 'ceo,9999999\n')
    // The token's own exp (signed a moment after `now`: a busy machine may cross a second).
    assert.ok(good.expiresAt <= decodeJwt(goodToken).exp! * 1000, 'the credential expires with the token')
    // The set is sealed in the token: the same claims sealed without the bucket do not open it.
    const unsealed = new SessionSealer([STS_KEY]).seal({ role: 'payroll', mfa_at: now }, now + 600, [])
    assert.deepEqual(await refusal(read({ accessKeyId: unsealed.accessKeyId, secretAccessKey: unsealed.secret, sessionToken: unsealed.token, expiresAt: 0 })), { name: 'NoSuchBucket', status: 404 })
  })
})

describe('s3_api.sts configuration', () => {
  const buckets = `
buckets:
  - name: media
    path_prefix: /media
    s3: { bucket: media, endpoint: "http://127.0.0.1:9", access_key: a, secret_key: b }
`
  const problems = async (yaml: string, env: Record<string, string> = {}): Promise<string> => {
    try {
      await parseConfig(yaml, '/etc/y.yaml', env)
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err))
      return err.message
    }
    assert.fail('the configuration should not load')
  }

  it('reads keys as hex or base64 from the environment, the global jwt block, and the default duration', async () => {
    const config = await parseConfig(
      `${buckets}jwt: { secret: "${JWT_SECRET}" }\ns3_api: { enabled: true, sts: { enabled: true, keys: ["\${A}", "\${B}"] } }\n`,
      '/etc/y.yaml',
      { A: STS_KEY.toString('hex'), B: OLD_KEY.toString('base64') }
    )
    const sts = config.s3_api?.sts
    assert.ok(sts != null)
    assert.deepEqual(sts.keys.map((k) => Buffer.from(k).toString('hex')), [STS_KEY.toString('hex'), OLD_KEY.toString('hex')])
    assert.equal(sts.max_duration_seconds, 3600)
    assert.deepEqual(sts.jwt.algorithms, ['HS256'])
  })

  it('refuses keys that are not 32 bytes, no key, a duration AWS does not allow, and no verifier', async () => {
    const short = randomBytes(16).toString('hex')
    const message = await problems(`${buckets}s3_api: { enabled: true, sts: { enabled: true, keys: ["\${SHORT}", "not a key"], max_duration_seconds: 60 } }\n`, { SHORT: short })
    assert.match(message, /s3_api\.sts\.keys\[0\]: must be 32 bytes, as 64 hex digits or base64/)
    assert.match(message, /s3_api\.sts\.keys\[1\]: must be 32 bytes/)
    assert.match(message, /s3_api\.sts\.max_duration_seconds: must be between 900 and 43200/)
    assert.match(message, /s3_api\.sts\.jwt: neither s3_api\.sts\.jwt nor a global jwt block is configured/)
    assert.ok(!message.includes(short), 'a key is never printed')
    assert.match(await problems(`${buckets}jwt: { secret: "${JWT_SECRET}" }\ns3_api: { enabled: true, sts: { enabled: true } }\n`), /s3_api\.sts\.keys: needs at least one key/)
  })
})
