// The S3 API listener with the AWS SDK for JavaScript (and raw signed requests where the SDK hides
// what a client sees), against the proxy in front of s3rver behind the SigV4-verifying layer:
// objects through the same cache and serve stage as the HTTP path, bucket operations answered from
// the credential's scope, writes refused before the backend, errors in S3's XML.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'

import { after, before, describe, it } from 'node:test'
import {
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketLocationCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  PutBucketPolicyCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send, type RawResponse } from '../support/http.ts'

const READER = { id: 'READER0000000001', secret: 'reader-secret-0123456789-abcdefghij-KLMNOPQR' }
const SCOPED = { id: 'SCOPED0000000001', secret: 'scoped-secret-0123456789-abcdefghij-KLMNOPQR' }
const CLAIMLESS = { id: 'NOCLAIM000000001', secret: 'noclaim-secret-0123456789-abcdefghij-KLMNOPQ' }
const JWT_SECRET = 'jwt-secret-for-the-private-bucket-0123456789'
const BIG = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 256))

let s3: TestS3
let proxy: TestProxy
let s3Url: string

before(async () => {
  s3 = await startS3()
  for (const name of ['media-backend', 'private-backend', 'hidden-backend']) await s3.createBucket(name)
  await s3.put('media-backend', 'hello.txt', 'hello, s3\n', { ContentType: 'text/plain', Metadata: { owner: 'team-a' } })
  await s3.put('media-backend', 'big.bin', BIG)
  await s3.put('private-backend', 'team-a/report.txt', 'team a report')
  await s3.put('private-backend', 'team-b/report.txt', 'team b report')
  await s3.put('hidden-backend', 'x.txt', 'hidden')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
metrics: { enabled: true, port: 0 }
cache:
  enabled: true
  layers: [memory]
  memory: { max_size: 10MB }
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - access_key_id: ${READER.id}
      secret_access_key: "${READER.secret}"
      buckets: [media, private]
      claims: { sub: reader-1, role: reader }
    - access_key_id: ${SCOPED.id}
      secret_access_key: "${SCOPED.secret}"
      buckets: [private]
      prefixes: [team-a/]
      claims: { role: reader }
    - access_key_id: ${CLAIMLESS.id}
      secret_access_key: "${CLAIMLESS.secret}"
      buckets: [private]
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'media-backend', endpoint: s3.endpoint })}
${bucketYaml({
  name: 'private',
  prefix: '/private',
  bucket: 'private-backend',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        claims_verification:
          - { claim: role, operator: equals, value: reader }`,
})}
${bucketYaml({ name: 'hidden', prefix: '/hidden', bucket: 'hidden-backend', endpoint: s3.endpoint })}
`)
  assert.ok(proxy.proxy.s3Url !== undefined)
  s3Url = proxy.proxy.s3Url
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

/** An SDK client for the listener; `seen` gets every response's headers. */
function client(credential: { id: string; secret: string }, seen?: Array<Record<string, string>>): S3Client {
  const c = new S3Client({
    endpoint: s3Url,
    region: 'us-east-1',
    forcePathStyle: true,
    maxAttempts: 1,
    credentials: { accessKeyId: credential.id, secretAccessKey: credential.secret },
  })
  if (seen !== undefined) {
    c.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args)
        seen.push((out.response as { headers: Record<string, string> }).headers)
        return out
      },
      { step: 'deserialize', name: 'seeHeaders' }
    )
  }
  return c
}

async function failure(promise: Promise<unknown>): Promise<S3ServiceException> {
  try {
    await promise
  } catch (err) {
    if (err instanceof S3ServiceException) return err
    throw err
  }
  assert.fail('the request succeeded')
}

/** A raw request signed as SDKs sign (header form), optionally with another date or secret. */
async function signed(
  path: string,
  options: { method?: string; credential?: { id: string; secret: string }; date?: Date; headers?: Record<string, string> } = {}
): Promise<RawResponse> {
  const url = new URL(s3Url)
  const credential = options.credential ?? READER
  const q = path.indexOf('?')
  const query: Record<string, string> = {}
  for (const [k, v] of new URLSearchParams(q === -1 ? '' : path.slice(q + 1))) query[k] = v
  const signer = new SignatureV4({ credentials: { accessKeyId: credential.id, secretAccessKey: credential.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
  const request = await signer.sign(
    new HttpRequest({
      method: options.method ?? 'GET',
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: q === -1 ? path : path.slice(0, q),
      query,
      headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...options.headers },
    }),
    { signingDate: options.date ?? new Date() }
  )
  return send(s3Url, path, { method: request.method, headers: request.headers })
}

function backendGets(key: string): number {
  return s3.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0]?.endsWith(`/${key}`)).length
}

describe('objects through the S3 API', () => {
  it('reads an object with its metadata, a range, and a 304 for a matching ETag', async () => {
    const c = client(READER)
    const got = await c.send(new GetObjectCommand({ Bucket: 'media', Key: 'hello.txt' }))
    assert.equal(await got.Body?.transformToString(), 'hello, s3\n')
    assert.equal(got.ContentType, 'text/plain')
    assert.deepEqual(got.Metadata, { owner: 'team-a' })
    assert.match(String(got.ETag), /^"[0-9a-f]{32}"$/)
    const part = await c.send(new GetObjectCommand({ Bucket: 'media', Key: 'big.bin', Range: 'bytes=1000-1999' }))
    assert.equal(part.ContentRange, `bytes 1000-1999/${BIG.length}`)
    assert.deepEqual(Buffer.from(await part.Body!.transformToByteArray()), BIG.subarray(1000, 2000))
    const notModified = await failure(c.send(new GetObjectCommand({ Bucket: 'media', Key: 'hello.txt', IfNoneMatch: got.ETag })))
    assert.equal(notModified.$metadata.httpStatusCode, 304)
    const head = await c.send(new HeadObjectCommand({ Bucket: 'media', Key: 'big.bin' }))
    assert.equal(head.ContentLength, BIG.length)
    assert.equal(head.AcceptRanges, 'bytes')
    c.destroy()
  })

  it('answers from the cache with the X-Cache and Cache-Status of the HTTP path', async () => {
    const seen: Array<Record<string, string>> = []
    const c = client(READER, seen)
    const before = backendGets('big.bin')
    const first = await c.send(new GetObjectCommand({ Bucket: 'media', Key: 'big.bin' }))
    const firstBytes = Buffer.from(await first.Body!.transformToByteArray())
    // The fill is written once the body has gone out: the HTTP path sees the same entry.
    let http1: RawResponse | undefined
    for (let i = 0; i < 100; i++) {
      http1 = await send(proxy.url, '/media/big.bin')
      if (http1.headers['x-cache'] === 'HIT') break
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    assert.equal(http1?.headers['x-cache'], 'HIT')
    const second = await c.send(new GetObjectCommand({ Bucket: 'media', Key: 'big.bin' }))
    assert.deepEqual(Buffer.from(await second.Body!.transformToByteArray()), BIG)
    assert.deepEqual(firstBytes, BIG)
    assert.equal(backendGets('big.bin') - before, 1, 'one origin GET for three reads')
    assert.equal(seen.at(-1)?.['x-cache'], 'HIT')
    assert.equal(seen.at(-1)?.['cache-status'], 'yatagarasu; hit; detail=memory')
    assert.match(String(seen.at(-1)?.['x-amz-request-id']), /^[0-9a-f-]{36}$/)
    assert.ok(String(seen.at(-1)?.['x-amz-id-2']).length > 20)
    c.destroy()
  })

  it('applies response-* overrides on signed requests only', async () => {
    const c = client(READER)
    const got = await c.send(
      new GetObjectCommand({ Bucket: 'media', Key: 'hello.txt', ResponseContentType: 'text/x-override', ResponseContentDisposition: 'attachment; filename="h.txt"' })
    )
    assert.equal(got.ContentType, 'text/x-override')
    assert.equal(got.ContentDisposition, 'attachment; filename="h.txt"')
    await got.Body?.transformToString()
    c.destroy()
    const anonymous = await send(s3Url, '/media/hello.txt?response-content-type=text/html')
    assert.equal(anonymous.status, 400)
    assert.match(anonymous.text, /<Code>InvalidRequest<\/Code>/)
  })

  it('sends a non-ASCII filename as RFC 6266 does, other values beyond Latin-1 as UTF-8 bytes, and refuses control characters', async () => {
    const disposition = 'attachment; filename="日本語 ü.txt"'
    const got = await signed(`/media/hello.txt?response-content-disposition=${encodeURIComponent(disposition)}`)
    assert.equal(got.status, 200)
    assert.equal(got.headers['content-disposition'], `attachment; filename="___ _.txt"; filename*=UTF-8''${encodeURIComponent('日本語 ü.txt')}`)
    const language = await signed(`/media/hello.txt?response-content-language=${encodeURIComponent('日本語')}`)
    assert.equal(language.status, 200)
    assert.equal(Buffer.from(String(language.headers['content-language']), 'latin1').toString('utf8'), '日本語')
    const other = await signed(`/media/hello.txt?response-content-disposition=${encodeURIComponent('attachment; note="日本"')}`)
    assert.equal(other.status, 400)
    assert.match(other.text, /<Code>InvalidArgument<\/Code>/)
    for (const value of ['a\r\nx-injected: 1', 'text/plain\u0000']) {
      const refused = await signed(`/media/hello.txt?response-content-type=${encodeURIComponent(value)}`)
      assert.equal(refused.status, 400)
      assert.match(refused.text, /<Code>InvalidArgument<\/Code>/)
      assert.equal(refused.headers['x-injected'], undefined)
    }
  })

  it('serves anonymous reads on buckets whose auth is off, and nowhere else', async () => {
    const pub = await send(s3Url, '/media/hello.txt')
    assert.equal(pub.status, 200)
    assert.equal(pub.text, 'hello, s3\n')
    const priv = await send(s3Url, '/private/team-a/report.txt')
    assert.equal(priv.status, 403)
    assert.match(priv.text, /<Code>AccessDenied<\/Code>/)
    const missing = await send(s3Url, '/no-such-bucket/x')
    assert.equal(missing.status, 403, 'an anonymous client cannot tell a missing bucket from a private one')
    const list = await send(s3Url, '/')
    assert.equal(list.status, 403)
  })

  it('reads a private bucket with a credential whose claims pass its rules, and refuses one without', async () => {
    const ok = await client(READER).send(new GetObjectCommand({ Bucket: 'private', Key: 'team-b/report.txt' }))
    assert.equal(await ok.Body?.transformToString(), 'team b report')
    const refused = await failure(client(CLAIMLESS).send(new GetObjectCommand({ Bucket: 'private', Key: 'team-b/report.txt' })))
    assert.equal(refused.name, 'AccessDenied')
  })
})

describe('credential scope', () => {
  it('lists only the buckets the credential may read', async () => {
    const listed = await client(READER).send(new ListBucketsCommand({}))
    assert.deepEqual(listed.Buckets?.map((b) => b.Name), ['media', 'private'])
    const scoped = await client(SCOPED).send(new ListBucketsCommand({}))
    assert.deepEqual(scoped.Buckets?.map((b) => b.Name), ['private'])
  })

  it('answers a bucket the credential may not read exactly as a bucket that does not exist', async () => {
    const c = client(READER)
    const hidden = await failure(c.send(new GetObjectCommand({ Bucket: 'hidden', Key: 'x.txt' })))
    const missing = await failure(c.send(new GetObjectCommand({ Bucket: 'nothing-here', Key: 'x.txt' })))
    assert.equal(hidden.name, 'NoSuchBucket')
    assert.equal(missing.name, 'NoSuchBucket')
    assert.equal(hidden.$metadata.httpStatusCode, 404)
    const head = await failure(c.send(new HeadBucketCommand({ Bucket: 'hidden' })))
    assert.equal(head.$metadata.httpStatusCode, 404)
    const raw = await signed('/hidden/x.txt')
    assert.doesNotMatch(raw.text, /hidden-backend/)
    assert.match(raw.text, /<Resource>\/hidden\/x.txt<\/Resource>/)
  })

  it('refuses a key outside the credential\'s prefixes with AccessDenied', async () => {
    const c = client(SCOPED)
    const inside = await c.send(new GetObjectCommand({ Bucket: 'private', Key: 'team-a/report.txt' }))
    assert.equal(await inside.Body?.transformToString(), 'team a report')
    const outside = await failure(c.send(new GetObjectCommand({ Bucket: 'private', Key: 'team-b/report.txt' })))
    assert.equal(outside.name, 'AccessDenied')
    assert.equal(outside.$metadata.httpStatusCode, 403)
  })

  it('answers HeadBucket and GetBucketLocation for a readable bucket', async () => {
    const c = client(READER)
    const head = await c.send(new HeadBucketCommand({ Bucket: 'media' }))
    assert.equal(head.$metadata.httpStatusCode, 200)
    assert.equal(head.BucketRegion, 'us-east-1')
    const location = await c.send(new GetBucketLocationCommand({ Bucket: 'media' }))
    assert.equal(location.LocationConstraint, undefined)
  })
})

describe('refusals', () => {
  it('refuses a wrong secret and an unknown key id alike with SignatureDoesNotMatch', async () => {
    const wrong = await failure(client({ id: READER.id, secret: `${READER.secret}x` }).send(new GetObjectCommand({ Bucket: 'media', Key: 'hello.txt' })))
    const unknown = await failure(client({ id: 'UNKNOWN000000001', secret: READER.secret }).send(new GetObjectCommand({ Bucket: 'media', Key: 'hello.txt' })))
    assert.equal(wrong.name, 'SignatureDoesNotMatch')
    assert.equal(unknown.name, 'SignatureDoesNotMatch')
    assert.equal(wrong.$metadata.httpStatusCode, 403)
  })

  it('refuses a request signed more than 15 minutes off with RequestTimeTooSkewed', async () => {
    const skewed = await signed('/media/hello.txt', { date: new Date(Date.now() - 16 * 60 * 1000) })
    assert.equal(skewed.status, 403)
    assert.match(skewed.text, /<Code>RequestTimeTooSkewed<\/Code>/)
    const fine = await signed('/media/hello.txt', { date: new Date(Date.now() - 10 * 60 * 1000) })
    assert.equal(fine.status, 200)
  })

  it('refuses every write with S3 XML and never reaches the backend', async () => {
    const c = client(READER)
    const backendBefore = s3.requests.length
    const writes = [
      new PutObjectCommand({ Bucket: 'media', Key: 'new.txt', Body: 'x' }),
      new DeleteObjectCommand({ Bucket: 'media', Key: 'hello.txt' }),
      new CopyObjectCommand({ Bucket: 'media', Key: 'copy.txt', CopySource: 'media/hello.txt' }),
      new CreateMultipartUploadCommand({ Bucket: 'media', Key: 'multi.bin' }),
      new DeleteObjectsCommand({ Bucket: 'media', Delete: { Objects: [{ Key: 'hello.txt' }] } }),
      new CreateBucketCommand({ Bucket: 'newbucket' }),
      new DeleteBucketCommand({ Bucket: 'media' }),
      new PutBucketPolicyCommand({ Bucket: 'media', Policy: '{}' }),
    ]
    for (const command of writes) {
      const refused = await failure(c.send(command as Parameters<S3Client['send']>[0]))
      assert.equal(refused.name, 'AccessDenied', command.constructor.name)
      assert.equal(refused.$metadata.httpStatusCode, 403, command.constructor.name)
      assert.match(String(refused.$metadata.requestId), /^[0-9a-f-]{36}$/)
    }
    const raw = await signed('/media/x.txt', { method: 'OPTIONS' })
    assert.equal(raw.status, 405)
    assert.match(raw.text, /<Code>MethodNotAllowed<\/Code>/)
    assert.equal(s3.requests.length, backendBefore, 'no write reached the backend')
    c.destroy()
  })

  it('refuses partNumber and versionId reads as not implemented', async () => {
    const part = await signed('/media/big.bin?partNumber=1')
    assert.equal(part.status, 501)
    assert.match(part.text, /<Code>NotImplemented<\/Code>/)
  })
})

describe('observability', () => {
  it('writes the access log line and the metrics of an S3 request like an HTTP one', async () => {
    const res = await signed('/media/hello.txt')
    assert.equal(res.status, 200)
    const id = String(res.headers['x-amz-request-id'])
    assert.equal(res.headers['x-request-id'], id)
    const line = await proxy.logged((l) => l.request_id === id)
    assert.equal(line.status, 200)
    assert.equal(line.bucket, 'media')
    assert.equal(line.path, '/media/hello.txt')
    const refused = await signed('/media/hello.txt', { credential: { id: READER.id, secret: 'x'.repeat(40) } })
    const refusedLine = await proxy.logged((l) => l.request_id === refused.headers['x-amz-request-id'])
    assert.equal(refusedLine.status, 403)
    assert.equal(refusedLine.reason, 'SignatureDoesNotMatch:bad_signature')
    const metrics = await (await fetch(proxy.proxy.metricsUrl as string)).text()
    assert.match(metrics, /http_requests_total\{bucket="media",method="GET",status="200"\} \d+/)
  })

  it('keeps the body hash of a read in the signature check (a payload hash other than the empty one is refused)', async () => {
    const hash = createHash('sha256').update('body').digest('hex')
    const res = await signed('/media/hello.txt', { headers: { 'x-amz-content-sha256': hash } })
    assert.equal(res.status, 400)
    assert.match(res.text, /<Code>InvalidRequest<\/Code>/)
  })
})


