// SigV4 verification against signatures made by real signers: the AWS SDK for JavaScript
// (@aws-sdk/client-s3 sending to a recording server, @smithy/signature-v4 presigning as the S3
// presigner does) and botocore (boto3 run through python3, when installed). Keys with spaces, `+`,
// `%`, unicode, `//` and S3's reserved characters check the canonical request is built from the raw
// path exactly as each client encoded it.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { GetObjectCommand, HeadObjectCommand, ListBucketsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
import { createHash, createHmac } from 'node:crypto'
import { EMPTY_SHA256, hasAwsAuth, SigningKeyCache, SigV4Error, verifySigV4, type SignedRequest, type VerifyOptions } from './sigv4.ts'
import { PYTHON, requireBoto3 } from '../../../test/support/python.ts'

const AKID = 'YTGAKIDEXAMPLE000001'
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+x'
const REGION = 'eu-test-1'
const KEYS = ['plain.txt', 'with space.txt', 'a+b.txt', '100%.txt', 'ünïcødé/日本語.txt', 'a//b', "it's (x)!*~.txt", 'q?x=1&y#z']

const options = (now: number, extra: Partial<VerifyOptions> = {}): VerifyOptions => ({
  region: REGION,
  secretOf: (id) => (id === AKID ? SECRET : undefined),
  now,
  ...extra,
})

interface Recorded extends SignedRequest {
  at: number
}

let server: http.Server
let endpoint = ''
const recorded: Recorded[] = []

before(async () => {
  server = http.createServer((req, res) => {
    recorded.push({ method: req.method ?? 'GET', target: req.url ?? '/', rawHeaders: req.rawHeaders, at: Date.now() })
    req.resume()
    res.writeHead(404, { 'content-type': 'application/xml' })
    res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>none</Message></Error>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
after(() => {
  server.closeAllConnections()
  return new Promise<void>((resolve) => server.close(() => resolve()))
})

function sdk(): S3Client {
  return new S3Client({ endpoint, region: REGION, forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: AKID, secretAccessKey: SECRET } })
}

/** Sends one command with a fresh client (destroyed after) and returns the request as received. */
async function sent(command: unknown, client = sdk()): Promise<Recorded> {
  const before = recorded.length
  await client.send(command as never).catch(() => {})
  client.destroy()
  assert.equal(recorded.length, before + 1)
  return recorded[before] as Recorded
}

function refusal(run: () => unknown): SigV4Error {
  try {
    run()
  } catch (err) {
    assert.ok(err instanceof SigV4Error, String(err))
    return err
  }
  assert.fail('the request was accepted')
}

describe('requests signed by the AWS SDK for JavaScript', () => {
  for (const key of KEYS) {
    it(`verifies GetObject of ${JSON.stringify(key)}`, async () => {
      const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: key, Range: 'bytes=0-9' }))
      assert.ok(hasAwsAuth(req))
      assert.deepEqual(verifySigV4(req, options(req.at)), { accessKeyId: AKID, sessionToken: undefined, presigned: false })
    })
  }

  it('verifies HeadObject, ListObjectsV2 with special characters in the prefix, and ListBuckets', async () => {
    for (const command of [
      new HeadObjectCommand({ Bucket: 'media', Key: 'dir/x y+z' }),
      new ListObjectsV2Command({ Bucket: 'media', Prefix: 'a b+c/ü%', Delimiter: '/', MaxKeys: 0, StartAfter: 'a=b&c' }),
      new ListBucketsCommand({}),
    ]) {
      const req = await sent(command)
      assert.equal(verifySigV4(req, options(req.at)).accessKeyId, AKID)
    }
  })

  it('returns the session token of temporary credentials', async () => {
    const client = new S3Client({ endpoint, region: REGION, forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: AKID, secretAccessKey: SECRET, sessionToken: 'tok/en+==' } })
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }), client)
    const seen: (string | undefined)[] = []
    const result = verifySigV4(req, options(req.at, { secretOf: (id, token) => (seen.push(token), id === AKID ? SECRET : undefined) }))
    assert.equal(result.sessionToken, 'tok/en+==')
    assert.deepEqual(seen, ['tok/en+=='])
  })

  it('refuses a wrong secret and an unknown access key id the same way', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }))
    const wrong = refusal(() => verifySigV4(req, options(req.at, { secretOf: () => 'another-secret-that-is-forty-characters-long' })))
    const unknown = refusal(() => verifySigV4(req, options(req.at, { secretOf: () => undefined })))
    assert.equal(wrong.code, 'SignatureDoesNotMatch')
    assert.equal(unknown.code, 'SignatureDoesNotMatch')
    assert.equal(wrong.status, 403)
    assert.equal(wrong.message, unknown.message)
    assert.equal(wrong.reason, 'bad_signature')
    assert.equal(unknown.reason, 'unknown_access_key')
  })

  it('keeps verifying through the signing-key cache, and a changed secret is not served from it', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }))
    const keys = new SigningKeyCache()
    assert.equal(verifySigV4(req, options(req.at, { keys })).accessKeyId, AKID)
    assert.equal(verifySigV4(req, options(req.at, { keys })).accessKeyId, AKID)
    const rotated = options(req.at, { keys, secretOf: () => 'a-rotated-secret-that-is-forty-characters' })
    assert.equal(refusal(() => verifySigV4(req, rotated)).code, 'SignatureDoesNotMatch')
    assert.equal(refusal(() => verifySigV4(req, options(req.at, { keys, secretOf: () => undefined }))).code, 'SignatureDoesNotMatch')
  })

  it('refuses a malformed access key id before any lookup, and never caches unknown ids', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }))
    const withId = (id: string): SignedRequest => ({ ...req, rawHeaders: req.rawHeaders.map((v) => v.replace(`Credential=${AKID}/`, `Credential=${id}/`)) })
    const keys = new SigningKeyCache()
    const looked: string[] = []
    const tracked = options(req.at, { keys, secretOf: (id) => (looked.push(id), id === AKID ? SECRET : undefined) })
    for (const id of ['A'.repeat(60_000), 'AK', 'AKID+x0000000000', 'AKIDÄ00000000000']) {
      const refused = refusal(() => verifySigV4(withId(id), tracked))
      assert.deepEqual([refused.code, refused.status, refused.reason], ['AuthorizationHeaderMalformed', 400, 'bad_access_key_id'])
    }
    assert.deepEqual(looked, [])
    assert.equal(verifySigV4(req, tracked).accessKeyId, AKID)
    // A spray of well-formed unknown ids: each refused as a wrong signature, none kept, the real key still cached.
    for (let i = 0; i < 2000; i++) assert.equal(refusal(() => verifySigV4(withId(`AKIA${String(i).padStart(16, '0')}`), tracked)).code, 'SignatureDoesNotMatch')
    assert.equal(keys.size, 1)
    assert.equal(verifySigV4(req, tracked).accessKeyId, AKID)
  })

  it('refuses a request whose path, query or signed header was changed', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'a b', Range: 'bytes=0-9' }))
    const tampered: SignedRequest[] = [
      { ...req, target: req.target.replace('a%20b', 'a%20c') },
      { ...req, target: req.target.replace('a%20b', 'a+b') },
      { ...req, target: `${req.target}&response-content-type=text%2Fhtml` },
      { ...req, rawHeaders: req.rawHeaders.map((v) => (v === 'bytes=0-9' ? 'bytes=0-99' : v)) },
      { ...req, method: 'HEAD' },
    ]
    for (const t of tampered) assert.equal(refusal(() => verifySigV4(t, options(req.at))).code, 'SignatureDoesNotMatch')
  })

  it('refuses a clock more than 15 minutes off with RequestTimeTooSkewed, and accepts 14 minutes', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }))
    assert.equal(verifySigV4(req, options(req.at + 14 * 60_000)).accessKeyId, AKID)
    assert.equal(verifySigV4(req, options(req.at - 14 * 60_000)).accessKeyId, AKID)
    for (const now of [req.at + 16 * 60_000, req.at - 16 * 60_000]) {
      const err = refusal(() => verifySigV4(req, options(now)))
      assert.equal(err.code, 'RequestTimeTooSkewed')
      assert.equal(err.status, 403)
    }
  })

  it('checks the region and the service of the scope', async () => {
    const req = await sent(new GetObjectCommand({ Bucket: 'media', Key: 'k' }))
    const err = refusal(() => verifySigV4(req, options(req.at, { region: 'us-east-1' })))
    assert.equal(err.code, 'AuthorizationHeaderMalformed')
    assert.match(err.message, /'eu-test-1' is wrong; expecting 'us-east-1'/)
    const signer = new SignatureV4({ credentials: { accessKeyId: AKID, secretAccessKey: SECRET }, region: REGION, service: 'sqs', sha256: Sha256, uriEscapePath: false })
    const signed = await signer.sign(new HttpRequest({ method: 'GET', protocol: 'http:', hostname: 'h', path: '/media/k', headers: { host: 'h', 'x-amz-content-sha256': EMPTY_SHA256 } }))
    const asSent = { method: 'GET', target: '/media/k', rawHeaders: Object.entries(signed.headers).flat() }
    assert.equal(refusal(() => verifySigV4(asSent, options(Date.now()))).code, 'AuthorizationHeaderMalformed')
  })
})

describe('presigned URLs (as the S3 presigner of the AWS SDK for JavaScript makes them)', () => {
  async function presign(key: string, expiresIn: number, signingDate = new Date(), query: Record<string, string> = {}): Promise<SignedRequest> {
    const signer = new SignatureV4({ credentials: { accessKeyId: AKID, secretAccessKey: SECRET }, region: REGION, service: 's3', sha256: Sha256, uriEscapePath: false })
    const path = `/media/${key.split('/').map((s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)).join('/')}`
    const request = new HttpRequest({ method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: 9000, path, query: { 'x-id': 'GetObject', ...query }, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } })
    // As @aws-sdk/s3-request-presigner does: the UNSIGNED-PAYLOAD header is hoisted into the query.
    const signed = await signer.presign(request, { expiresIn, signingDate })
    const qs = Object.entries(signed.query ?? {})
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&')
    return { method: 'GET', target: `${signed.path}?${qs}`, rawHeaders: ['Host', '127.0.0.1:9000'] }
  }

  for (const key of KEYS) {
    it(`verifies a presigned GET of ${JSON.stringify(key)}`, async () => {
      const req = await presign(key, 3600, new Date(), { 'response-content-disposition': 'attachment; filename="x y.txt"' })
      assert.ok(hasAwsAuth(req))
      assert.deepEqual(verifySigV4(req, options(Date.now())), { accessKeyId: AKID, sessionToken: undefined, presigned: true })
    })
  }

  it('refuses an expired URL and one that is not valid yet, but not one that is merely old', async () => {
    const signedAt = Date.now() - 2 * 3600_000
    const req = await presign('k', 3 * 3600, new Date(signedAt))
    assert.equal(verifySigV4(req, options(Date.now())).presigned, true)
    const expired = refusal(() => verifySigV4(req, options(signedAt + 3 * 3600_000 + 1000)))
    assert.equal(expired.code, 'AccessDenied')
    assert.equal(expired.message, 'Request has expired')
    const early = refusal(() => verifySigV4(req, options(signedAt - 16 * 60_000)))
    assert.equal(early.code, 'AccessDenied')
  })

  it('refuses expiry over 7 days', async () => {
    const req = await presign('k', 604_800)
    assert.equal(verifySigV4(req, options(Date.now())).accessKeyId, AKID)
    const tooLong = { ...req, target: req.target.replace('X-Amz-Expires=604800', 'X-Amz-Expires=604801') }
    assert.equal(refusal(() => verifySigV4(tooLong, options(Date.now()))).code, 'AuthorizationQueryParametersError')
  })

  it('refuses a presigned URL whose key or overrides were changed', async () => {
    const req = await presign('a b', 3600, new Date(), { 'response-content-type': 'text/plain' })
    for (const target of [req.target.replace('a%20b', 'a%20c'), req.target.replace('text%2Fplain', 'text%2Fhtml'), `${req.target}&response-cache-control=no-store`]) {
      assert.equal(refusal(() => verifySigV4({ ...req, target }, options(Date.now()))).code, 'SignatureDoesNotMatch')
    }
  })

  it('refuses a presigned URL that also has an Authorization header', async () => {
    const req = await presign('k', 60)
    const both = { ...req, rawHeaders: [...req.rawHeaders, 'Authorization', 'AWS4-HMAC-SHA256 Credential=x'] }
    assert.equal(refusal(() => verifySigV4(both, options(Date.now()))).code, 'InvalidArgument')
  })
})

describe('what a read never accepts', () => {
  const base = (headers: Record<string, string>): SignedRequest => ({ method: 'GET', target: '/media/k', rawHeaders: ['Host', 'h', ...Object.entries(headers).flat()] })
  const auth = `AWS4-HMAC-SHA256 Credential=${AKID}/20240101/${REGION}/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${'0'.repeat(64)}`

  it('refuses STREAMING-* payloads and a payload hash other than the empty one', () => {
    const now = Date.UTC(2024, 0, 1)
    for (const hash of ['STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'STREAMING-UNSIGNED-PAYLOAD-TRAILER']) {
      const err = refusal(() => verifySigV4(base({ authorization: auth, 'x-amz-date': '20240101T000000Z', 'x-amz-content-sha256': hash }), options(now)))
      assert.equal(err.code, 'NotImplemented')
      assert.match(err.message, /Streaming payloads/)
    }
    const body = refusal(() => verifySigV4(base({ authorization: auth, 'x-amz-date': '20240101T000000Z', 'x-amz-content-sha256': 'a'.repeat(64) }), options(now)))
    assert.equal(body.code, 'InvalidRequest')
  })

  it('refuses SigV2 in the header and in the query, and SigV4A', () => {
    for (const req of [
      base({ authorization: `AWS ${AKID}:c2lnbmF0dXJl` }),
      { method: 'GET', target: `/media/k?AWSAccessKeyId=${AKID}&Expires=1700000000&Signature=abc%3D`, rawHeaders: ['Host', 'h'] },
      base({ authorization: 'AWS4-ECDSA-P256-SHA256 Credential=x, SignedHeaders=host, Signature=00' }),
    ]) {
      assert.ok(hasAwsAuth(req))
      const err = refusal(() => verifySigV4(req, options(Date.now())))
      assert.equal(err.code, 'InvalidRequest')
      assert.match(err.message, /Please use AWS4-HMAC-SHA256/)
    }
  })

  it('sees no AWS authentication on an anonymous request', () => {
    assert.equal(hasAwsAuth({ method: 'GET', target: '/media/k?prefix=Signature', rawHeaders: ['Host', 'h'] }), false)
  })
})

describe('Date-based signatures (no x-amz-date)', () => {
  // Built by hand from the algorithm in AWS's documentation: no signer at hand produces them.
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest()
  it('verifies a signature whose time comes from the Date header', () => {
    const now = Date.UTC(2024, 4, 6, 7, 8, 9)
    const date = new Date(now).toUTCString()
    const canonical = ['GET', '/media/a%20b', '', `date:${date}\nhost:h\nx-amz-content-sha256:${EMPTY_SHA256}\n`, 'date;host;x-amz-content-sha256', EMPTY_SHA256].join('\n')
    const scope = `20240506/${REGION}/s3/aws4_request`
    const toSign = ['AWS4-HMAC-SHA256', '20240506T070809Z', scope, createHash('sha256').update(canonical).digest('hex')].join('\n')
    const key = hmac(hmac(hmac(hmac(`AWS4${SECRET}`, '20240506'), REGION), 's3'), 'aws4_request')
    const signature = createHmac('sha256', key).update(toSign).digest('hex')
    const req: SignedRequest = {
      method: 'GET',
      target: '/media/a%20b',
      rawHeaders: ['Host', 'h', 'Date', date, 'x-amz-content-sha256', EMPTY_SHA256, 'Authorization', `AWS4-HMAC-SHA256 Credential=${AKID}/${scope},SignedHeaders=date;host;x-amz-content-sha256,Signature=${signature}`],
    }
    assert.equal(verifySigV4(req, options(now + 60_000)).accessKeyId, AKID)
    assert.equal(refusal(() => verifySigV4(req, options(now + 16 * 60_000))).code, 'RequestTimeTooSkewed')
  })
})

// boto3 sends each request to the recording server and prints the presigned URLs it makes.
const BOTO = `
import json, sys, boto3
from botocore.config import Config
a = json.loads(sys.argv[1])
c = boto3.client('s3', endpoint_url=a['endpoint'], region_name=a['region'], aws_access_key_id=a['akid'],
  aws_secret_access_key=a['secret'], config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}, retries={'max_attempts': 1, 'mode': 'standard'}))
urls = []
for k in a['keys']:
  try: c.get_object(Bucket='media', Key=k, Range='bytes=0-3')
  except Exception: pass
  urls.append(c.generate_presigned_url('get_object', Params={'Bucket': 'media', 'Key': k, 'ResponseContentDisposition': 'attachment'}, ExpiresIn=600))
try: c.list_objects_v2(Bucket='media', Prefix='a b+c/ü%', Delimiter='/', MaxKeys=0)
except Exception: pass
print(json.dumps(urls))
`

describe('requests signed by botocore (boto3)', () => {
  it('verifies get_object, list_objects_v2 and presigned URLs for every special key', async () => {
    requireBoto3()
    const start = recorded.length
    // Asynchronously: the recording server in this process answers boto3's requests meanwhile.
    const { stdout: out } = await promisify(execFile)(PYTHON, ['-c', BOTO, JSON.stringify({ endpoint, region: REGION, akid: AKID, secret: SECRET, keys: KEYS })], { encoding: 'utf8' })
    const sentByBoto = recorded.slice(start)
    assert.equal(sentByBoto.length, KEYS.length + 1)
    for (const req of sentByBoto) assert.equal(verifySigV4(req, options(req.at)).accessKeyId, AKID, req.target)
    const urls = JSON.parse(out) as string[]
    assert.equal(urls.length, KEYS.length)
    for (const url of urls) {
      const u = new URL(url)
      const req: SignedRequest = { method: 'GET', target: url.slice(url.indexOf(u.pathname)), rawHeaders: ['Host', u.host] }
      assert.equal(verifySigV4(req, options(Date.now())).presigned, true, url)
    }
  })
})
