// Request limits: oversized targets (414) and headers (431), request bodies (413), and requests
// the HTTP layer cannot parse (400), each answered with the JSON error shape.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy

before(async () => {
  s3 = await startS3()
  await s3.createBucket('limits')
  await s3.put('limits', 'a.txt', 'ok')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  security_limits:
    max_uri_length: 200
    max_header_size: 4096
buckets:
${bucketYaml({ name: 'limits', prefix: '/limits', bucket: 'limits', endpoint: s3.endpoint })}
`)
})

after(async () => {
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
