// Request limits: oversized targets (414) and headers (431), request bodies (413), requests the HTTP
// layer cannot parse (400), concurrency over max_concurrent_requests (503), each answered with the
// JSON error shape; and idle connections closed after idle_timeout_seconds.
import assert from 'node:assert/strict'
import http from 'node:http'
import net from 'node:net'
import { after, before, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { eventually } from '../support/eventually.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy
/** max_concurrent_requests: 2 */
let small: TestProxy
/** idle_timeout_seconds: 1 */
let impatient: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('limits')
  await s3.put('limits', 'a.txt', 'ok')
  await s3.put('limits', 'big.bin', Buffer.alloc(256 * 1024, 7))
  /** A proxy for the one bucket, with these `server` settings. */
  const withServer = (settings: string) =>
    startTestProxy(`
server:
  address: "127.0.0.1:0"
${settings}
buckets:
${bucketYaml({ name: 'limits', prefix: '/limits', bucket: 'limits', endpoint: s3.endpoint })}
`)
  small = await withServer('  max_concurrent_requests: 2')
  impatient = await withServer('  idle_timeout_seconds: 1')
  proxy = await withServer('  security_limits:\n    max_uri_length: 200\n    max_header_size: 4096')
})

after(async () => {
  await small?.stop()
  await impatient?.stop()
  await proxy?.stop()
  await s3?.stop()
})

const codeOf = (res: { json<T>(): T }) => res.json<{ error: { code: string; request_id: string } }>().error

it('answers a request target over max_uri_length with 414', async () => {
  const res = await send(proxy.url, `/limits/${'a'.repeat(300)}`)
  assert.equal(res.status, 414)
  assert.equal(codeOf(res).code, 'GUARD_URI_TOO_LONG')
})

it('answers headers over max_header_size with 431 and a request id', async () => {
  const res = await send(proxy.url, '/limits/a.txt', { headers: { 'x-big': 'b'.repeat(8000) } })
  assert.equal(res.status, 431)
  assert.equal(codeOf(res).code, 'GUARD_HEADERS_TOO_LARGE')
  assert.equal(res.headers['x-request-id'], codeOf(res).request_id)
})

it('answers a GET with a body with 413', async () => {
  const res = await send(proxy.url, '/limits/a.txt', { headers: { 'content-length': '0' } })
  assert.equal(res.status, 200)
  const withBody = await new Promise<string>((resolve) => {
    const socket = net.connect(Number(new URL(proxy.url).port), '127.0.0.1', () => {
      socket.end('GET /limits/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello')
    })
    let text = ''
    socket.on('data', (d: Buffer) => (text += d.toString()))
    socket.on('close', () => resolve(text))
  })
  assert.match(withBody, /^HTTP\/1\.1 413 /)
  assert.match(withBody, /GUARD_BODY_NOT_ALLOWED/)
})

it('answers an unparseable request target with a JSON 400', async () => {
  const res = await send(proxy.url, '/limits/a\\b.txt')
  assert.equal(res.status, 400)
  assert.equal(codeOf(res).code, 'GUARD_BAD_REQUEST')
})

it('answers requests beyond max_concurrent_requests with 503 and Retry-After, and recovers', async () => {
  // Two downloads whose backend stalls mid-body stay in flight until the client hangs up.
  const inFlight: http.ClientRequest[] = []
  for (let i = 0; i < 2; i++) {
    s3.stallNextGet(64 * 1024)
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`${small.url}/limits/big.bin`, { agent: false }, (res) => {
        // Errors after the headers are the hang-up this test causes itself.
        req.removeListener('error', reject).on('error', () => {})
        res.on('error', () => {})
        resolve()
      })
      req.once('error', reject)
      inFlight.push(req)
    })
  }
  const refused = await send(small.url, '/limits/a.txt')
  assert.equal(refused.status, 503)
  assert.equal(refused.headers['retry-after'], '1')
  assert.equal(codeOf(refused).code, 'GUARD_OVERLOADED')
  assert.equal(refused.headers['x-request-id'], codeOf(refused).request_id)
  for (const req of inFlight) req.destroy()
  await eventually(async () => (await send(small.url, '/limits/a.txt')).status === 200, 'a slot freed by the hang-ups')
})

it('frees the slots of pipelined requests whose connection died before they were answered', async () => {
  // One connection: a download that stalls, then two requests queued behind it; then it dies.
  s3.stallNextGet(64 * 1024)
  const socket = net.connect(Number(new URL(small.url).port), '127.0.0.1')
  socket.on('error', () => {})
  const firstBytes = new Promise((resolve) => socket.once('data', resolve))
  socket.write('GET /limits/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n')
  await firstBytes
  socket.destroy()
  // Both slots free again: two concurrent requests are served.
  await eventually(async () => {
    const answers = await Promise.all([send(small.url, '/limits/a.txt'), send(small.url, '/limits/a.txt')])
    return answers.every((a) => a.status === 200)
  }, 'both slots free')
})

it('closes a connection on which nothing moves for idle_timeout_seconds', async () => {
  const socket = net.connect(Number(new URL(impatient.url).port), '127.0.0.1')
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.on('error', () => {})
  const started = Date.now()
  await closed
  // Closed by the idle timeout (1 s), long before the headers timeout (10 s) would have.
  assert.ok(Date.now() - started < 5000, `closed after ${Date.now() - started} ms`)
})
