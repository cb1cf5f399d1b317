// rclone and s3cmd (Debian's packages) through the S3 API listener, against s3rver behind the
// SigV4-verifying layer: rclone with a config file (provider Other, path style), with env vars
// only, with env_auth after an STS exchange by the aws cli, and with its own web-identity exchange
// (AWS_WEB_IDENTITY_TOKEN_FILE: rclone sends AssumeRoleWithWebIdentity to its S3 endpoint); s3cmd
// with a config file (SigV4). A missing client fails the test, naming the package (.ci/run
// installs them). Each client runs with a bare environment and a home of its own.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'

const execFileAsync = promisify(execFile)
const RCLONE = '/usr/bin/rclone'
const S3CMD = '/usr/bin/s3cmd'
const AWS = '/usr/bin/aws'
const KEY = { id: 'TOOLSREADER00001', secret: 'tools-reader-secret-0123456789-abcdefghijk' }
const JWT_SECRET = 'tools-test-jwt-secret-0123456789abcdefghij'
const ROLE = 'arn:aws:iam::000000000000:role/reader'
const BIG = randomBytes(12 * 1024 * 1024)
const FILES: Record<string, Buffer> = {
  'big.bin': BIG,
  'small.txt': Buffer.from('small object\n'),
  'dir/with space+plus%.txt': Buffer.from('spaced\n'),
  'dir/ünï 日本.txt': Buffer.from('unicode\n'),
}
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex')
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

let s3: TestS3
let proxy: TestProxy
let s3Url: string
let home: string

before(async () => {
  s3 = await startS3()
  for (const name of ['tools-backend', 'other-backend', 'reports-backend']) await s3.createBucket(name)
  for (const [key, body] of Object.entries(FILES)) await s3.put('tools-backend', key, body)
  await s3.put('other-backend', 'secret.txt', 'not for this key\n')
  await s3.put('reports-backend', 'q3.txt', 'quarterly report\n')
  proxy = await startTestProxy(
    `
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory]
  memory: { max_size: 64MB }
jwt:
  secret: "${JWT_SECRET}"
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - { access_key_id: ${KEY.id}, secret_access_key: "${KEY.secret}", buckets: [tools] }
  sts:
    enabled: true
    keys: ["\${STS_KEY}"]
buckets:
${bucketYaml({ name: 'tools', prefix: '/tools', bucket: 'tools-backend', endpoint: s3.endpoint })}
${bucketYaml({ name: 'other', prefix: '/other', bucket: 'other-backend', endpoint: s3.endpoint, extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        claims_verification:
          - { claim: role, operator: equals, value: admin }` })}
${bucketYaml({ name: 'reports', prefix: '/reports', bucket: 'reports-backend', endpoint: s3.endpoint, extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        claims_verification:
          - { claim: role, operator: equals, value: reader }` })}
`,
    { STS_KEY: randomBytes(32).toString('hex') }
  )
  s3Url = proxy.proxy.s3Url as string
  home = await mkdtemp(join(tmpdir(), 'yatagarasu-tools-'))
  await writeFile(
    join(home, 'rclone.conf'),
    `[proxy]
type = s3
provider = Other
endpoint = ${s3Url}
access_key_id = ${KEY.id}
secret_access_key = ${KEY.secret}
region = us-east-1
force_path_style = true
`
  )
  const host = new URL(s3Url).host
  await writeFile(
    join(home, 's3cfg'),
    `[default]
access_key = ${KEY.id}
secret_key = ${KEY.secret}
host_base = ${host}
host_bucket = ${host}
use_https = False
signature_v2 = False
bucket_location = us-east-1
`
  )
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (home !== undefined) await rm(home, { recursive: true, force: true })
})

function requireTool(path: string, pkg: string): void {
  if (!existsSync(path)) throw new Error(`${path} is missing: install Debian's ${pkg} (.ci/run does)`)
}

/** Runs a client with a bare environment (no CA bundle or credentials of the machine's). */
async function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(file, args, { env: { PATH: '/usr/bin:/bin', HOME: home, ...env }, maxBuffer: 32 * 1024 * 1024 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

async function ok(file: string, args: string[], env?: Record<string, string>): Promise<string> {
  const result = await run(file, args, env)
  assert.equal(result.code, 0, `${file} ${args.join(' ')}: ${result.stderr}`)
  return result.stdout
}

const rclone = (...args: string[]) => ok(RCLONE, ['--config', join(home, 'rclone.conf'), ...args])
const s3cmd = (...args: string[]) => ok(S3CMD, ['-c', join(home, 's3cfg'), ...args])

/** Statuses of the listener's access-log lines for one path so far. */
function statusesOf(path: string): number[] {
  return proxy.logs.filter((l) => l.path === path && typeof l.status === 'number').map((l) => l.status as number)
}

async function jwt(claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(now - 60)
    .setExpirationTime(now + 1800)
    .sign(new TextEncoder().encode(JWT_SECRET))
}

describe('rclone', () => {
  it('lists with hashes, copies with multi-thread ranged reads, checks, and cats a range', async () => {
    requireTool(RCLONE, 'rclone')
    const listed = JSON.parse(await rclone('lsjson', '-R', '--hash', '--files-only', 'proxy:tools')) as Array<{ Path: string; Size: number; Hashes: { md5: string } }>
    assert.deepEqual(
      listed.map((e) => [e.Path, e.Size, e.Hashes.md5]).sort(),
      Object.entries(FILES).map(([key, body]) => [key, body.length, md5(body)]).sort()
    )
    assert.deepEqual((await rclone('lsd', 'proxy:')).trim().split('\n').map((l) => l.trim().split(/\s+/).at(-1)), ['tools'])

    const out = join(home, 'rclone-out')
    await rclone('copy', 'proxy:tools', out, '--multi-thread-cutoff', '1M', '--multi-thread-streams', '4')
    for (const [key, body] of Object.entries(FILES)) assert.equal(sha256(await readFile(join(out, key))), sha256(body), key)
    // rclone read big.bin in four ranges of the listener (answered 206), not one GET.
    assert.ok(statusesOf('/tools/big.bin').filter((s) => s === 206).length >= 4, `statuses ${statusesOf('/tools/big.bin').join(',')}`)
    assert.match((await run(RCLONE, ['--config', join(home, 'rclone.conf'), 'check', 'proxy:tools', out])).stderr, /0 differences found/)

    assert.equal(await rclone('cat', 'proxy:tools/small.txt', '--offset', '2', '--count', '5'), 'all o')
    const at = 5 * 1024 * 1024 + 3
    const part = await execFileAsync(RCLONE, ['--config', join(home, 'rclone.conf'), 'cat', 'proxy:tools/big.bin', '--offset', String(at), '--count', '4096'], {
      env: { PATH: '/usr/bin:/bin', HOME: home },
      encoding: 'buffer',
      maxBuffer: 1024 * 1024,
    })
    assert.deepEqual(part.stdout, BIG.subarray(at, at + 4096))
    assert.equal(await rclone('cat', 'proxy:tools/dir/ünï 日本.txt'), 'unicode\n')
  })

  it('works configured by environment variables alone, and finds no bucket outside the key', async () => {
    requireTool(RCLONE, 'rclone')
    const env = {
      RCLONE_CONFIG: join(home, 'absent.conf'),
      RCLONE_CONFIG_ENVPROXY_TYPE: 's3',
      RCLONE_CONFIG_ENVPROXY_PROVIDER: 'Other',
      RCLONE_CONFIG_ENVPROXY_ENDPOINT: s3Url,
      RCLONE_CONFIG_ENVPROXY_ACCESS_KEY_ID: KEY.id,
      RCLONE_CONFIG_ENVPROXY_SECRET_ACCESS_KEY: KEY.secret,
      RCLONE_CONFIG_ENVPROXY_REGION: 'us-east-1',
      RCLONE_CONFIG_ENVPROXY_FORCE_PATH_STYLE: 'true',
    }
    const listed = await ok(RCLONE, ['ls', 'envproxy:tools/dir'], env)
    assert.deepEqual(listed.trim().split('\n').map((l) => l.trim()).sort(), ['7 with space+plus%.txt', '8 ünï 日本.txt'])
    const refused = await run(RCLONE, ['ls', 'envproxy:other'], env)
    assert.notEqual(refused.code, 0)
    assert.match(refused.stderr, /directory not found/)
  })

  it('reads with env_auth and the credentials of an aws sts exchange', async () => {
    requireTool(RCLONE, 'rclone')
    requireTool(AWS, 'awscli')
    const token = await jwt({ sub: 'rclone-user', role: 'reader' })
    const exchanged = await run(AWS, ['--endpoint-url', s3Url, 'sts', 'assume-role-with-web-identity', '--role-arn', ROLE, '--role-session-name', 'rclone', '--web-identity-token', token], {
      AWS_CONFIG_FILE: join(home, 'absent'),
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_PAGER: '',
    })
    assert.equal(exchanged.code, 0, exchanged.stderr)
    const { Credentials: c } = JSON.parse(exchanged.stdout) as { Credentials: { AccessKeyId: string; SecretAccessKey: string; SessionToken: string } }
    const env = {
      RCLONE_CONFIG: join(home, 'absent.conf'),
      RCLONE_CONFIG_TEMP_TYPE: 's3',
      RCLONE_CONFIG_TEMP_PROVIDER: 'Other',
      RCLONE_CONFIG_TEMP_ENV_AUTH: 'true',
      RCLONE_CONFIG_TEMP_ENDPOINT: s3Url,
      RCLONE_CONFIG_TEMP_REGION: 'us-east-1',
      RCLONE_CONFIG_TEMP_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: c.AccessKeyId,
      AWS_SECRET_ACCESS_KEY: c.SecretAccessKey,
      AWS_SESSION_TOKEN: c.SessionToken,
    }
    assert.equal(await ok(RCLONE, ['cat', 'temp:reports/q3.txt'], env), 'quarterly report\n')
    // The claims open reports and the buckets without auth; other's rules refuse them.
    const buckets = (await ok(RCLONE, ['lsd', 'temp:'], env)).trim().split('\n').map((l) => l.trim().split(/\s+/).at(-1))
    assert.deepEqual(buckets.sort(), ['reports', 'tools'])
  })

  it('exchanges a web-identity token file itself (env_auth) at its S3 endpoint, and reads with it', async () => {
    requireTool(RCLONE, 'rclone')
    const tokenFile = join(home, 'token.jwt')
    // As a file written with echo: a trailing newline, which rclone sends along.
    await writeFile(tokenFile, `${await jwt({ sub: 'pod-7', role: 'reader' })}\n`)
    const exchanges = () => proxy.logs.filter((l) => l.method === 'POST' && l.path === '/' && l.status === 200).length
    const before = exchanges()
    const env = {
      RCLONE_CONFIG: join(home, 'absent.conf'),
      RCLONE_CONFIG_POD_TYPE: 's3',
      RCLONE_CONFIG_POD_PROVIDER: 'Other',
      RCLONE_CONFIG_POD_ENV_AUTH: 'true',
      RCLONE_CONFIG_POD_ENDPOINT: s3Url,
      RCLONE_CONFIG_POD_REGION: 'us-east-1',
      RCLONE_CONFIG_POD_FORCE_PATH_STYLE: 'true',
      AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
      AWS_ROLE_ARN: ROLE,
      AWS_ROLE_SESSION_NAME: 'pod-7',
      AWS_REGION: 'us-east-1',
    }
    assert.equal(await ok(RCLONE, ['cat', 'pod:reports/q3.txt'], env), 'quarterly report\n')
    assert.ok(exchanges() > before, 'rclone exchanged the token at the listener')
  })
})

describe('s3cmd', () => {
  it('lists buckets and keys and gets objects whole, special characters included', async () => {
    requireTool(S3CMD, 's3cmd')
    assert.match(await s3cmd('ls'), /^\S+ \S+\s+s3:\/\/tools\n$/)
    const recursive = await s3cmd('ls', '--recursive', 's3://tools')
    for (const [key, body] of Object.entries(FILES)) assert.match(recursive, new RegExp(`\\s${body.length}\\s+s3://tools/${key.replace(/[.+%]/g, '\\$&')}\\n`))
    assert.match(await s3cmd('ls', 's3://tools'), /\s+DIR\s+s3:\/\/tools\/dir\/\n/)

    const out = join(home, 's3cmd-out')
    await mkdir(join(out, 'dir'), { recursive: true })
    await s3cmd('get', 's3://tools/big.bin', join(out, 'big.bin'))
    await s3cmd('get', '--recursive', 's3://tools/dir/', join(out, 'dir/'))
    for (const [key, body] of Object.entries(FILES)) {
      if (key === 'small.txt') continue
      assert.equal(sha256(await readFile(join(out, key))), sha256(body), key)
    }
    // info also asks for ?acl, ?policy and ?cors, which the listener refuses (501); s3cmd says none.
    assert.match(await s3cmd('info', 's3://tools/small.txt'), new RegExp(`MD5 sum:\\s+${md5(FILES['small.txt'] as Buffer)}`))

    const refused = await run(S3CMD, ['-c', join(home, 's3cfg'), 'get', 's3://other/secret.txt', join(out, 'secret.txt')])
    assert.notEqual(refused.code, 0)
    assert.match(refused.stderr, /Source object 's3:\/\/other\/secret.txt' does not exist/)
    assert.ok(statusesOf('/other/secret.txt').includes(404))
    assert.equal(s3.requests.filter((r) => r.method !== 'PUT' && r.url.startsWith('/other-backend/secret.txt')).length, 0)
  })
})
