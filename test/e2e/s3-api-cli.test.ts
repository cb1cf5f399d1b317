// Real S3 command-line clients through the S3 API listener, against s3rver behind the
// SigV4-verifying layer: Debian's awscli (`aws s3 ls/cp/sync/presign`, `aws s3api get-object
// --range`) and python3-boto3 (get_object, generate_presigned_url). A missing client fails the
// test, naming the package to install (.ci/run installs both).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { PYTHON, requireBoto3 } from '../support/python.ts'

const run = promisify(execFile)
const AWS = '/usr/bin/aws'
const KEY = { id: 'CLIREADER0000001', secret: 'cli-reader-secret-0123456789-abcdefghijklmn' }
const BIG = randomBytes(40 * 1024 * 1024)
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')
const SYNC = { 'sync/a.txt': 'file a\n', 'sync/nested/b.txt': 'file b\n', 'sync/with space.txt': 'spaced\n' }

let s3: TestS3
let proxy: TestProxy
let s3Url: string
let home: string

before(async () => {
  s3 = await startS3()
  await s3.createBucket('cli-backend')
  await s3.createBucket('other-backend')
  await s3.put('cli-backend', 'big.bin', BIG)
  await s3.put('cli-backend', 'small.txt', 'small object\n', { ContentType: 'text/plain' })
  for (const [key, body] of Object.entries(SYNC)) await s3.put('cli-backend', key, body)
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory]
  memory: { max_size: 16MB }
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - { access_key_id: ${KEY.id}, secret_access_key: "${KEY.secret}", buckets: [cli] }
buckets:
${bucketYaml({ name: 'cli', prefix: '/cli', bucket: 'cli-backend', endpoint: s3.endpoint })}
${bucketYaml({ name: 'other', prefix: '/other', bucket: 'other-backend', endpoint: s3.endpoint })}
`)
  s3Url = proxy.proxy.s3Url as string
  // A home of its own: no user config or cached credentials reach the clients.
  home = await mkdtemp(join(tmpdir(), 'yatagarasu-cli-'))
  await writeFile(join(home, 'config'), '[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n')
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  if (home !== undefined) await rm(home, { recursive: true, force: true })
})

function requireAws(): void {
  if (!existsSync(AWS)) throw new Error(`${AWS} is missing: install Debian's awscli (.ci/run does)`)
}

const env = () => ({
  PATH: '/usr/bin:/bin',
  HOME: home,
  AWS_CONFIG_FILE: join(home, 'config'),
  AWS_SHARED_CREDENTIALS_FILE: join(home, 'credentials'),
  AWS_ACCESS_KEY_ID: KEY.id,
  AWS_SECRET_ACCESS_KEY: KEY.secret,
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_PAGER: '',
})

async function aws(...args: string[]): Promise<string> {
  const { stdout } = await run(AWS, ['--endpoint-url', s3Url, ...args], { env: env(), maxBuffer: 16 * 1024 * 1024 })
  return stdout
}

describe('aws cli', () => {
  it('lists buckets and keys, copies 40 MiB in ranged parts, syncs a prefix down and reads a range', async () => {
    requireAws()
    const out = join(home, 'out')
    // get-object writes into `out` and does not create it; cp and sync, running beside it, would.
    await mkdir(out, { recursive: true })
    const rangesBefore = s3.requests.filter((r) => r.url.includes('/big.bin') && r.headers.range !== undefined).length
    const [buckets, keys, , , range] = await Promise.all([
      aws('s3', 'ls'),
      aws('s3', 'ls', 's3://cli/'),
      aws('s3', 'cp', 's3://cli/big.bin', join(out, 'big.bin')),
      aws('s3', 'sync', 's3://cli/sync/', join(out, 'sync')),
      aws('s3api', 'get-object', '--bucket', 'cli', '--key', 'big.bin', '--range', 'bytes=100-199', join(out, 'range.bin')),
    ])
    assert.match(buckets, /\scli\n/)
    assert.doesNotMatch(buckets, /other/)
    assert.match(keys, /PRE sync\/\n/)
    assert.match(keys, new RegExp(`\\s${BIG.length} big\\.bin\\n`))
    assert.equal(sha256(await readFile(join(out, 'big.bin'))), sha256(BIG))
    const ranged = s3.requests.filter((r) => r.url.includes('/big.bin') && r.headers.range !== undefined).length - rangesBefore
    assert.ok(ranged >= 5, `aws s3 cp read 40 MiB in ${ranged} ranged GETs`)
    for (const [key, body] of Object.entries(SYNC)) assert.equal(await readFile(join(out, key), 'utf8'), body)
    assert.equal(JSON.parse(range).ContentRange, `bytes 100-199/${BIG.length}`)
    assert.deepEqual(await readFile(join(out, 'range.bin')), BIG.subarray(100, 200))
  })

  it('serves a second aws s3 cp from the cache', async () => {
    requireAws()
    const gets = () => s3.requests.filter((r) => r.method === 'GET' && r.url.includes('/small.txt')).length
    const before = gets()
    await aws('s3', 'cp', 's3://cli/small.txt', join(home, 'small-1.txt'))
    await aws('s3', 'cp', 's3://cli/small.txt', join(home, 'small-2.txt'))
    assert.equal(await readFile(join(home, 'small-2.txt'), 'utf8'), 'small object\n')
    assert.equal(gets() - before, 1)
  })

  it('presigns a URL that plain HTTP can fetch, and refuses one that has expired', async () => {
    requireAws()
    const url = new URL((await aws('s3', 'presign', 's3://cli/small.txt', '--expires-in', '300')).trim())
    const res = await send(s3Url, url.pathname + url.search)
    assert.equal(res.status, 200)
    assert.equal(res.text, 'small object\n')
    const tampered = await send(s3Url, url.pathname.replace('small', 'big') + url.search)
    assert.equal(tampered.status, 403)
    assert.match(tampered.text, /<Code>SignatureDoesNotMatch<\/Code>/)

    const signer = new SignatureV4({ credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
    const host = new URL(s3Url).host
    const expired = await signer.presign(new HttpRequest({ method: 'GET', protocol: 'http:', hostname: host.split(':')[0] as string, port: Number(host.split(':')[1]), path: '/cli/small.txt', headers: { host } }), {
      signingDate: new Date(Date.now() - 120_000),
      expiresIn: 60,
    })
    const query = new URLSearchParams(expired.query as Record<string, string>).toString()
    const refused = await send(s3Url, `/cli/small.txt?${query}`)
    assert.equal(refused.status, 403)
    assert.match(refused.text, /<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/)
  })
})

describe('boto3', () => {
  it('reads an object and a SigV4 presigned URL, and refuses a SigV2 one saying why', async () => {
    requireBoto3()
    const script = `
import boto3, json, sys, urllib.request, urllib.error
from botocore.config import Config
args = dict(endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
s3 = boto3.client('s3', config=Config(signature_version='s3v4'), **args)
got = s3.get_object(Bucket='cli', Key='sync/with space.txt')
part = s3.get_object(Bucket='cli', Key='big.bin', Range='bytes=0-9')
url = s3.generate_presigned_url('get_object', Params={'Bucket': 'cli', 'Key': 'sync/nested/b.txt'}, ExpiresIn=300)
# Without signature_version='s3v4', botocore presigns with SigV2 for a custom endpoint.
legacy = boto3.client('s3', **args).generate_presigned_url('get_object', Params={'Bucket': 'cli', 'Key': 'sync/nested/b.txt'})
try:
    urllib.request.urlopen(legacy)
    refused = None
except urllib.error.HTTPError as e:
    refused = [e.code, e.read().decode()]
print(json.dumps({'body': got['Body'].read().decode(), 'range': part['ContentRange'], 'part': part['Body'].read().hex(), 'presigned': urllib.request.urlopen(url).read().decode(), 'legacy': refused}))
`
    const { stdout } = await run(PYTHON, ['-c', script, s3Url, KEY.id, KEY.secret], { env: { ...env(), PATH: '/usr/bin:/bin' } })
    const out = JSON.parse(stdout) as Record<string, string> & { legacy: [number, string] }
    assert.equal(out.body, 'spaced\n')
    assert.equal(out.range, `bytes 0-9/${BIG.length}`)
    assert.equal(out.part, BIG.subarray(0, 10).toString('hex'))
    assert.equal(out.presigned, 'file b\n')
    assert.equal(out.legacy[0], 400)
    assert.match(out.legacy[1], /<Code>InvalidRequest<\/Code><Message>The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.<\/Message>/)
  })
})
