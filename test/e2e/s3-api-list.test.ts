// ListObjectsV2 and ListObjects (v1) through the S3 API listener, over 2,500 keys in s3rver (behind
// the SigV4-verifying layer): the proxy's own paging tokens, delimiters, markers, max-keys 0,
// encoding-type=url and fetch-owner, keys with special characters, and a scoped credential that
// sees only its prefixes. The AWS SDK for JavaScript and boto3 page through the same listings.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { ListObjectsCommand, ListObjectsV2Command, S3Client, S3ServiceException, type ListObjectsV2CommandOutput } from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send, type RawResponse } from '../support/http.ts'
import { PYTHON, requireBoto3 } from '../support/python.ts'

const READER = { id: 'LISTREADER000001', secret: 'list-reader-secret-0123456789-abcdefghijklm' }
const SCOPED = { id: 'LISTSCOPED000001', secret: 'list-scoped-secret-0123456789-abcdefghijklm' }
// s3rver stores keys as files: no `//` here (signing such keys is covered by sigv4.test.ts), and
// it lists a directory where its name sorts, not byte by byte: no `a/x` beside an `a+x`.
const SPECIAL = ['special/with space.txt', 'special/a+b.txt', 'special/100%.txt', 'special/ünï/日本.txt', 'special/sub/b', "special/it's (x)!*~.txt", 'special/q?x=1&y#z', 'special/<tag>&amp;.txt']
const pad = (i: number) => String(i).padStart(4, '0')
const KEYS = [
  ...Array.from({ length: 1200 }, (_, i) => `dir-a/${pad(i)}.txt`),
  ...Array.from({ length: 600 }, (_, i) => `dir-b/sub/${pad(i)}`),
  ...Array.from({ length: 592 }, (_, i) => `top-${pad(i)}`),
  ...SPECIAL,
  ...Array.from({ length: 50 }, (_, i) => `team-a/${pad(i)}`),
  ...Array.from({ length: 50 }, (_, i) => `team-b/${pad(i)}`),
].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))

let s3: TestS3
let proxy: TestProxy
let s3Url: string

before(async () => {
  s3 = await startS3()
  await s3.createBucket('files-backend')
  const queue = [...KEYS]
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let key = queue.pop(); key !== undefined; key = queue.pop()) await s3.put('files-backend', key, `k:${key}`)
    })
  )
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - { access_key_id: ${READER.id}, secret_access_key: "${READER.secret}", buckets: [files] }
    - { access_key_id: ${SCOPED.id}, secret_access_key: "${SCOPED.secret}", buckets: [files], prefixes: [team-a/, special/ü] }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'files-backend', endpoint: s3.endpoint })}
`)
  s3Url = proxy.proxy.s3Url as string
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

function client(credential = READER): S3Client {
  return new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: credential.id, secretAccessKey: credential.secret } })
}

async function pagesV2(c: S3Client, input: { Prefix?: string; Delimiter?: string; MaxKeys?: number; StartAfter?: string }) {
  const keys: string[] = []
  const prefixes: string[] = []
  let token: string | undefined
  let pages = 0
  let last: ListObjectsV2CommandOutput
  do {
    last = await c.send(new ListObjectsV2Command({ Bucket: 'files', ...input, ContinuationToken: token }))
    pages++
    assert.equal(last.Name, 'files')
    keys.push(...(last.Contents ?? []).map((o) => o.Key as string))
    prefixes.push(...(last.CommonPrefixes ?? []).map((p) => p.Prefix as string))
    assert.equal(last.KeyCount, (last.Contents?.length ?? 0) + (last.CommonPrefixes?.length ?? 0))
    token = last.NextContinuationToken
    assert.equal(last.IsTruncated, token !== undefined)
  } while (token !== undefined)
  return { keys, prefixes, pages }
}

async function signed(path: string, credential = READER): Promise<RawResponse> {
  const url = new URL(s3Url)
  const q = path.indexOf('?')
  const query: Record<string, string> = {}
  for (const [k, v] of new URLSearchParams(q === -1 ? '' : path.slice(q + 1))) query[k] = v
  const signer = new SignatureV4({ credentials: { accessKeyId: credential.id, secretAccessKey: credential.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
  const request = await signer.sign(
    new HttpRequest({ method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: q === -1 ? path : path.slice(0, q), query, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } })
  )
  return send(s3Url, path, { headers: request.headers })
}

describe('ListObjectsV2', () => {
  it('pages through 2,500 keys in S3 order with the proxy\'s continuation tokens', async () => {
    const { keys, prefixes, pages } = await pagesV2(client(), {})
    assert.deepEqual(keys, KEYS)
    assert.deepEqual(prefixes, [])
    assert.equal(pages, 3)
  })

  it('groups by delimiter across small pages without paging through each group on the backend', async () => {
    const c = client()
    const backendBefore = s3.requests.length
    const first = await c.send(new ListObjectsV2Command({ Bucket: 'files', Delimiter: '/', MaxKeys: 50 }))
    assert.deepEqual(first.CommonPrefixes?.map((p) => p.Prefix), ['dir-a/', 'dir-b/', 'special/', 'team-a/', 'team-b/'])
    // 1,800 keys under dir-a/ and dir-b/ alone; a group's keys are skipped by restarting the
    // backend listing past them: one backend page per group, not one per 100 keys.
    assert.ok(s3.requests.length - backendBefore <= 5, `${s3.requests.length - backendBefore} backend requests`)
    const { keys, prefixes } = await pagesV2(c, { Delimiter: '/', MaxKeys: 50 })
    assert.deepEqual(prefixes, ['dir-a/', 'dir-b/', 'special/', 'team-a/', 'team-b/'])
    assert.deepEqual(keys, KEYS.filter((k) => !k.includes('/')))
  })

  it('lists a prefix with a delimiter, special characters included', async () => {
    const c = client()
    const sub = await pagesV2(c, { Prefix: 'dir-b/', Delimiter: '/' })
    assert.deepEqual(sub.prefixes, ['dir-b/sub/'])
    assert.deepEqual(sub.keys, [])
    const special = await pagesV2(c, { Prefix: 'special/', Delimiter: '/', MaxKeys: 2 })
    assert.deepEqual(special.prefixes, ['special/sub/', 'special/ünï/'])
    assert.deepEqual(special.keys, KEYS.filter((k) => k.startsWith('special/') && !k.slice(8).includes('/')))
    const after = await pagesV2(c, { Prefix: 'top-', StartAfter: 'top-0589' })
    assert.deepEqual(after.keys, ['top-0590', 'top-0591'])
  })

  it('answers max-keys=0 with nothing and not truncated', async () => {
    const out = await client().send(new ListObjectsV2Command({ Bucket: 'files', MaxKeys: 0 }))
    assert.equal(out.KeyCount, 0)
    assert.equal(out.IsTruncated, false)
    assert.equal(out.Contents, undefined)
  })

  it('encodes keys with encoding-type=url and adds owners only with fetch-owner', async () => {
    const res = await signed('/files?list-type=2&prefix=special%2F&encoding-type=url&max-keys=3')
    assert.equal(res.status, 200)
    assert.match(res.text, /<EncodingType>url<\/EncodingType>/)
    assert.match(res.text, /<Key>special\/100%25.txt<\/Key>/)
    assert.match(res.text, /<Key>special\/%3Ctag%3E%26amp%3B.txt<\/Key>/)
    assert.doesNotMatch(res.text, /<Owner>/)
    assert.doesNotMatch(res.text, /files-backend/)
    const owned = await signed('/files?list-type=2&prefix=top-&max-keys=1&fetch-owner=true')
    assert.match(owned.text, /<Owner><ID>yatagarasu<\/ID>/)
  })

  it('refuses a continuation token it did not issue', async () => {
    const res = await signed('/files?list-type=2&continuation-token=bm90LW91cnM')
    assert.equal(res.status, 400)
    assert.match(res.text, /<Code>InvalidArgument<\/Code>/)
  })
})

describe('ListObjects (v1)', () => {
  it('pages with markers and a delimiter (NextMarker), where s3rver itself gets it wrong', async () => {
    const c = client()
    const keys: string[] = []
    const prefixes: string[] = []
    let marker: string | undefined
    for (;;) {
      const out = await c.send(new ListObjectsCommand({ Bucket: 'files', Delimiter: '/', MaxKeys: 100, Marker: marker }))
      keys.push(...(out.Contents ?? []).map((o) => o.Key as string))
      prefixes.push(...(out.CommonPrefixes ?? []).map((p) => p.Prefix as string))
      assert.ok(out.Contents?.every((o) => o.Owner?.ID === 'yatagarasu'))
      if (out.IsTruncated !== true) break
      marker = out.NextMarker
      assert.ok(marker !== undefined)
    }
    assert.deepEqual(prefixes, ['dir-a/', 'dir-b/', 'special/', 'team-a/', 'team-b/'])
    assert.deepEqual(keys, KEYS.filter((k) => !k.includes('/')))
  })
})

describe('a credential scoped to prefixes', () => {
  it('sees only what it may read, in every listing', async () => {
    const c = client(SCOPED)
    const all = await pagesV2(c, {})
    assert.deepEqual(all.keys, KEYS.filter((k) => k.startsWith('team-a/') || k.startsWith('special/ü')))
    const top = await pagesV2(c, { Delimiter: '/' })
    assert.deepEqual(top.prefixes, ['special/', 'team-a/'])
    assert.deepEqual(top.keys, [])
    const other = await pagesV2(c, { Prefix: 'team-b/' })
    assert.deepEqual(other.keys, [])
    try {
      await c.send(new ListObjectsV2Command({ Bucket: 'nope-bucket' }))
      assert.fail('listed a bucket that does not exist')
    } catch (err) {
      assert.ok(err instanceof S3ServiceException)
      assert.equal(err.name, 'NoSuchBucket')
    }
  })
})

describe('boto3', () => {
  it('paginates list_objects_v2 with a delimiter and special characters', async () => {
    requireBoto3()
    const script = `
import boto3, json, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
keys, prefixes, pages = [], [], 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='files', PaginationConfig={'PageSize': 250}):
    pages += 1
    keys += [o['Key'] for o in page.get('Contents', [])]
sp = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='files', Prefix='special/', Delimiter='/', PaginationConfig={'PageSize': 3}):
    sp += [o['Key'] for o in page.get('Contents', [])] + [p['Prefix'] for p in page.get('CommonPrefixes', [])]
v1 = []
for page in s3.get_paginator('list_objects').paginate(Bucket='files', Prefix='special/', PaginationConfig={'PageSize': 2}):
    v1 += [o['Key'] for o in page.get('Contents', [])]
print(json.dumps({'keys': keys, 'pages': pages, 'special': sorted(sp), 'v1': v1}))
`
    const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, s3Url, READER.id, READER.secret], { maxBuffer: 16 * 1024 * 1024 })
    const out = JSON.parse(stdout) as { keys: string[]; pages: number; special: string[]; v1: string[] }
    assert.deepEqual(out.keys, KEYS)
    assert.equal(out.pages, 10)
    const specials = KEYS.filter((k) => k.startsWith('special/'))
    assert.deepEqual(out.v1, specials)
    assert.deepEqual(out.special, [...specials.filter((k) => !k.slice(8).includes('/')), 'special/sub/', 'special/ünï/'].sort())
  })
})
