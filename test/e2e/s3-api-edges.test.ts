// Protocol edges of the S3 API listener, over raw sockets and signed requests, against s3rver behind
// the SigV4-verifying layer: `Expect: 100-continue` (nothing to continue on a read; the STS form
// asks for its body), `x-amz-checksum-mode: ENABLED` (accepted; no checksum header the bytes sent
// would not match), requests Node's parser refuses (S3 XML with a request id, not the HTTP path's
// JSON), and `s3_api.list_cache_seconds` (a listing within the window does not reach the backend).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
import { SignJWT } from 'jose'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send, type RawResponse } from '../support/http.ts'

const KEY = { id: 'EDGEREADER000001', secret: 'edge-reader-secret-0123456789-abcdefghijkl' }
const JWT_SECRET = 'edges-test-jwt-secret-0123456789abcdefghi'
const LIST_CACHE_SECONDS = 2
const BODY = randomBytes(64 * 1024)

let s3: TestS3
let proxy: TestProxy
let s3Url: string
let port: number

before(async () => {
  s3 = await startS3()
  await s3.createBucket('edges-backend')
  await s3.put('edges-backend', 'obj.bin', BODY)
  for (let i = 0; i < 30; i++) await s3.put('edges-backend', `list/${String(i).padStart(2, '0')}.txt`, `item ${i}`)
  proxy = await startTestProxy(
    `
server:
  address: "127.0.0.1:0"
cache:
  enabled: true
  layers: [memory]
  memory: { max_size: 8MB }
jwt:
  secret: "${JWT_SECRET}"
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  list_cache_seconds: ${LIST_CACHE_SECONDS}
  credentials:
    - { access_key_id: ${KEY.id}, secret_access_key: "${KEY.secret}", buckets: [edges] }
  sts:
    enabled: true
    keys: ["\${STS_KEY}"]
buckets:
${bucketYaml({ name: 'edges', prefix: '/edges', bucket: 'edges-backend', endpoint: s3.endpoint })}
`,
    { STS_KEY: randomBytes(32).toString('hex') }
  )
  s3Url = proxy.proxy.s3Url as string
  port = Number(new URL(s3Url).port)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

/** A request signed as SDKs sign it (every header given is signed). */
async function signed(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> {
  const url = new URL(s3Url)
  const q = path.indexOf('?')
  const query: Record<string, string> = {}
  for (const [k, v] of new URLSearchParams(q === -1 ? '' : path.slice(q + 1))) query[k] = v
  const signer = new SignatureV4({ credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
  const request = await signer.sign(
    new HttpRequest({
      method,
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: q === -1 ? path : path.slice(0, q),
      query,
      headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...headers },
    })
  )
  return send(s3Url, path, { method, headers: request.headers })
}

interface RawAnswer {
  /** Everything the listener sent, in order (an interim 100 included). */
  text: string
  status: number
  headers: Map<string, string>
  body: string
}

/**
 * Writes `request` on a new connection and reads until the listener closes it; `then` runs when
 * the first bytes arrive (and may write more). Fails after 10 s: a hang is a failure, not a wait.
 */
function raw(request: string, then?: (socket: net.Socket, first: string) => void): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    socket.setEncoding('latin1')
    let text = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no end within 10 s; received: ${JSON.stringify(text)}`))
    }, 10_000)
    socket.on('data', (chunk: string) => {
      const first = text === ''
      text += chunk
      if (first) then?.(socket, chunk)
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      // The final answer: after any interim 1xx.
      const final = text.replace(/^(HTTP\/1\.1 1\d\d [^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, '')
      const end = final.indexOf('\r\n\r\n')
      const head = final.slice(0, end).split('\r\n')
      const headers = new Map(head.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()] as [string, string]))
      resolve({ text, status: Number(head[0]?.split(' ')[1]), headers, body: final.slice(end + 4) })
    })
  })
}

const codeOf = (xml: string) => /<Code>([^<]*)<\/Code>/.exec(xml)?.[1]
const requestIdOf = (xml: string) => /<RequestId>([^<]*)<\/RequestId>/.exec(xml)?.[1]

describe('Expect: 100-continue', () => {
  it('answers a GET and a HEAD at once, with no interim 100', async () => {
    const get = await raw('GET /edges/obj.bin HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
    assert.match(get.text, /^HTTP\/1\.1 200 OK\r\n/)
    assert.equal(get.body.length, BODY.length)
    assert.equal(Buffer.from(get.body, 'latin1').equals(BODY), true)
    const head = await raw('HEAD /edges/obj.bin HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
    assert.match(head.text, /^HTTP\/1\.1 200 OK\r\n/)
    assert.equal(head.headers.get('content-length'), String(BODY.length))
    assert.equal(head.body, '')
  })

  it('refuses a write before its body is sent, without inviting the body', async () => {
    const put = await raw('PUT /edges/new.bin HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10485760\r\n\r\n')
    assert.match(put.text, /^HTTP\/1\.1 403 Forbidden\r\n/)
    assert.equal(codeOf(put.body), 'AccessDenied')
    assert.equal(put.headers.get('connection'), 'close')
    assert.equal(s3.requests.filter((r) => r.method === 'PUT' && r.url.includes('new.bin')).length, 0)
  })

  it('sends 100 Continue to an STS form that waits for it, then answers the exchange', async () => {
    const now = Math.floor(Date.now() / 1000)
    const token = await new SignJWT({ sub: 'edge-user' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now).setExpirationTime(now + 1200).sign(new TextEncoder().encode(JWT_SECRET))
    const form = new URLSearchParams({ Action: 'AssumeRoleWithWebIdentity', Version: '2011-06-15', RoleArn: 'arn:aws:iam::000000000000:role/reader', RoleSessionName: 'edge', WebIdentityToken: token }).toString()
    const head = `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`
    // The form goes only after the 100: without it, the exchange would never be answered.
    const answer = await raw(head, (socket, first) => {
      if (first.startsWith('HTTP/1.1 100 Continue\r\n')) socket.write(form)
    })
    assert.match(answer.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/)
    assert.match(answer.body, /<AccessKeyId>ASIA[A-Z2-7]{16}<\/AccessKeyId>/)
  })

  it('refuses any other expectation with S3 XML and a request id', async () => {
    const res = await raw('GET /edges/obj.bin HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n')
    assert.equal(res.status, 501)
    assert.equal(codeOf(res.body), 'NotImplemented')
    assert.equal(requestIdOf(res.body), res.headers.get('x-amz-request-id'))
  })
})

describe('x-amz-checksum-mode: ENABLED', () => {
  it('is accepted on whole and ranged reads, and no checksum header is sent for bytes it would not describe', async () => {
    const whole = await signed('/edges/obj.bin', { 'x-amz-checksum-mode': 'ENABLED' })
    assert.equal(whole.status, 200)
    assert.equal(whole.body.equals(BODY), true)
    const ranged = await signed('/edges/obj.bin', { 'x-amz-checksum-mode': 'ENABLED', range: 'bytes=100-199' })
    assert.equal(ranged.status, 206)
    assert.equal(ranged.body.equals(BODY.subarray(100, 200)), true)
    const head = await signed('/edges/obj.bin', { 'x-amz-checksum-mode': 'ENABLED' }, 'HEAD')
    assert.equal(head.status, 200)
    for (const res of [whole, ranged, head]) assert.deepEqual(Object.keys(res.headers).filter((h) => h.startsWith('x-amz-checksum')), [])

    // The SDK asks for checksums and validates what it gets; it reads the object whole and in part.
    const client = new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret }, responseChecksumValidation: 'WHEN_SUPPORTED' })
    try {
      const got = await client.send(new GetObjectCommand({ Bucket: 'edges', Key: 'obj.bin', ChecksumMode: 'ENABLED' }))
      assert.equal(Buffer.from(await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray()).equals(BODY), true)
      const part = await client.send(new GetObjectCommand({ Bucket: 'edges', Key: 'obj.bin', ChecksumMode: 'ENABLED', Range: 'bytes=0-9' }))
      assert.equal(Buffer.from(await (part.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray()).equals(BODY.subarray(0, 10)), true)
    } finally {
      client.destroy()
    }
  })
})

describe('requests the parser refuses', () => {
  it('answers a malformed request with S3 XML whose request id is the header\'s and the access log\'s', async () => {
    const res = await raw('GET /edges/a b.txt HTTP/1.1\r\nHost: x\r\n\r\n')
    assert.equal(res.status, 400)
    assert.equal(res.headers.get('content-type'), 'application/xml')
    assert.equal(codeOf(res.body), 'InvalidRequest')
    const id = requestIdOf(res.body)
    assert.equal(res.headers.get('x-amz-request-id'), id)
    assert.equal(res.headers.get('x-request-id'), id)
    assert.ok(res.headers.has('x-amz-id-2'))
    const line = await proxy.logged((l) => l.request_id === id)
    assert.equal(line.status, 400)
    assert.match(String(line.reason), /^HPE_/)
  })

  it('answers headers past max_header_size with S3 XML', async () => {
    const res = await raw(`GET /edges/obj.bin HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`)
    assert.equal(res.status, 400)
    assert.equal(codeOf(res.body), 'RequestHeaderSectionTooLarge')
    assert.equal(requestIdOf(res.body), res.headers.get('x-amz-request-id'))
  })

  it('keeps the JSON answer on the HTTP listener', async () => {
    const { port: httpPort } = new URL(proxy.url)
    const text = await new Promise<string>((resolve) => {
      const socket = net.connect(Number(httpPort), '127.0.0.1', () => socket.write('GET /edges/a b.txt HTTP/1.1\r\nHost: x\r\n\r\n'))
      let out = ''
      socket.setEncoding('latin1')
      socket.on('data', (d: string) => (out += d))
      socket.on('error', () => {})
      socket.on('close', () => resolve(out))
    })
    assert.match(text, /^HTTP\/1\.1 400 Bad Request\r\n/)
    assert.match(text, /\r\n\r\n\{"error":\{"code":"GUARD_BAD_REQUEST"/)
  })
})

describe('s3_api.list_cache_seconds', () => {
  it('answers a second listing within the window without the backend, and reads it again after', async () => {
    const listings = () => s3.requests.filter((r) => r.method === 'GET' && /^\/edges-backend\/?(\?|$)/.test(r.url)).length
    const keysOf = (xml: string) => [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1])
    const expected = Array.from({ length: 30 }, (_, i) => `list/${String(i).padStart(2, '0')}.txt`)

    const before = listings()
    const first = await signed('/edges?list-type=2&prefix=list/')
    const filled = performance.now()
    assert.equal(first.status, 200)
    assert.deepEqual(keysOf(first.text), expected)
    const afterFirst = listings()
    assert.ok(afterFirst > before, 'the first listing read the backend')

    // Within the window (v1 and v2 share the backend's pages): no backend request.
    const [v2, v1] = await Promise.all([signed('/edges?list-type=2&prefix=list/'), signed('/edges?prefix=list/')])
    assert.ok(performance.now() - filled < LIST_CACHE_SECONDS * 1000, 'the second listings ran within the window')
    assert.deepEqual(keysOf(v2.text), expected)
    assert.deepEqual(keysOf(v1.text), expected)
    assert.equal(listings(), afterFirst)

    // Past the window (the page was kept no later than the first answer): read again.
    await sleep(LIST_CACHE_SECONDS * 1000 + 100 - (performance.now() - filled))
    const later = await signed('/edges?list-type=2&prefix=list/')
    assert.deepEqual(keysOf(later.text), expected)
    assert.ok(listings() > afterFirst, 'the listing after the window read the backend')
  })
})
