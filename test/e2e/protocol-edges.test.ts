// What hostile or broken clients get, over raw sockets: a missing, repeated or malformed Host (400,
// RFC 9112 §3.2), a request the HTTP parser refuses (400 with a request id that is also in the
// access log), headers sent too slowly (408 within headers_timeout_seconds, not Node's 30 s check
// interval), and a download the client stopped reading (cut after idle_timeout_seconds, not twice
// that), while a slow reader whose bytes still move is served to the end.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const HEADERS_TIMEOUT_S = 1
const IDLE_TIMEOUT_S = 2
/** Large enough that the socket buffers on both sides fill long before the client has it all. */
const BIG = 16 * 1024 * 1024

let s3: TestS3
let proxy: TestProxy
let port: number

before(async () => {
  s3 = await startS3()
  await s3.createBucket('edges')
  await s3.put('edges', 'a.txt', 'hello')
  await s3.put('edges', 'big.bin', Buffer.alloc(BIG, 7))
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  headers_timeout_seconds: ${HEADERS_TIMEOUT_S}
  idle_timeout_seconds: ${IDLE_TIMEOUT_S}
buckets:
${bucketYaml({ name: 'edges', prefix: '/edges', bucket: 'edges', endpoint: s3.endpoint })}
`)
  port = Number(new URL(proxy.url).port)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

interface Parsed {
  status: number
  head: string
  headers: Map<string, string>
  body: string
}

function parse(text: string): Parsed {
  const split = text.indexOf('\r\n\r\n')
  assert.ok(split > 0, `no response head in ${JSON.stringify(text)}`)
  const head = text.slice(0, split)
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers = new Map<string, string>()
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim())
  }
  return { status: Number(statusLine.split(' ')[1]), head, headers, body: text.slice(split + 4) }
}

/** Writes `request` as given and reads until the proxy closes the connection. */
function exchange(request: string): Promise<Parsed> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    let text = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (text += d))
    socket.on('error', reject)
    socket.on('close', () => resolve(parse(text)))
  })
}

const errorOf = (res: Parsed) => (JSON.parse(res.body) as { error: { code: string; request_id: string } }).error

/** The access-log line of a request id. */
const accessLine = (requestId: string) => proxy.logged((l) => l.msg === 'request' && l.request_id === requestId)

describe('Host', () => {
  it('refuses two Host headers with a JSON 400 that closes the connection, and logs why', async () => {
    const res = await exchange('GET /edges/a.txt HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n')
    assert.equal(res.status, 400)
    const error = errorOf(res)
    assert.equal(error.code, 'GUARD_BAD_HOST')
    assert.equal(res.headers.get('x-request-id'), error.request_id)
    assert.equal(res.headers.get('connection'), 'close')
    const line = await accessLine(error.request_id)
    assert.equal(line.status, 400)
    assert.equal(line.error, 'GUARD_BAD_HOST')
    assert.equal(line.reason, 'duplicate_host')
    assert.equal(line.path, '/edges/a.txt')
  })

  it('refuses a Host that is not host[:port]', async () => {
    for (const host of ['a b', 'ex.com:80:90', 'ex.com:99999', '[::1', 'user@ex.com', 'caf\u00e9.example', '']) {
      const res = await exchange(`GET /edges/a.txt HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      assert.equal(res.status, 400, JSON.stringify(host))
      assert.equal(errorOf(res).code, 'GUARD_BAD_HOST', JSON.stringify(host))
    }
  })

  it('refuses an HTTP/1.1 request without Host with the JSON error, but serves HTTP/1.0 without one', async () => {
    const missing = await exchange('GET /edges/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n')
    assert.equal(missing.status, 400)
    assert.equal(errorOf(missing).code, 'GUARD_BAD_HOST')
    assert.equal((await accessLine(errorOf(missing).request_id)).reason, 'missing_host')

    const old = await exchange('GET /edges/a.txt HTTP/1.0\r\n\r\n')
    assert.equal(old.status, 200)
    assert.equal(old.body, 'hello')
  })

  it('serves names, IPv4 and IPv6 literals with a port', async () => {
    for (const host of ['cdn.example.com', 'CDN.Example.com:443', `127.0.0.1:${port}`, '[::1]:8080', '[2001:db8::1]']) {
      const res = await exchange(`GET /edges/a.txt HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      assert.equal(res.status, 200, host)
      assert.equal(res.body, 'hello')
    }
  })

  it('applies the same rules to the own endpoints', async () => {
    const twice = await exchange('GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')
    assert.equal(twice.status, 400)
    assert.equal(errorOf(twice).code, 'GUARD_BAD_HOST')
    assert.equal((await accessLine(errorOf(twice).request_id)).path, '/health')

    const bad = await exchange('GET /ready HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n')
    assert.equal(bad.status, 400)
    assert.equal(errorOf(bad).code, 'GUARD_BAD_HOST')

    const good = await exchange(`GET /health HTTP/1.1\r\nHost: [::1]:${port}\r\nConnection: close\r\n\r\n`)
    assert.equal(good.status, 200)
    assert.equal((JSON.parse(good.body) as { status: string }).status, 'healthy')

    const old = await exchange('GET /health HTTP/1.0\r\n\r\n')
    assert.equal(old.status, 200)
  })
})

describe('requests the parser refuses', () => {
  it('answers a malformed header with a JSON 400 whose request id is in the access log', async () => {
    const res = await exchange('GET /edges/a.txt HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n')
    assert.equal(res.status, 400)
    assert.match(res.head, /^HTTP\/1\.1 400 Bad Request\r\n/)
    const error = errorOf(res)
    assert.equal(error.code, 'GUARD_BAD_REQUEST')
    assert.equal(res.headers.get('x-request-id'), error.request_id)
    assert.equal(res.headers.get('connection'), 'close')
    const line = await accessLine(error.request_id)
    assert.equal(line.status, 400)
    assert.equal(line.error, 'GUARD_BAD_REQUEST')
    assert.equal(line.client_ip, '127.0.0.1')
    assert.equal(line.complete, true)
    assert.equal(line.bytes, Buffer.byteLength(res.body))
    assert.match(String(line.reason), /^HPE_/)
    // Nothing of the request was understood: no method or path is made up.
    assert.equal('method' in line, false)
    assert.equal('path' in line, false)
  })

  it('answers a malformed request line the same way', async () => {
    const res = await exchange('GET /edges/a.txt HTTP/9.Z\r\nHost: x\r\n\r\n')
    assert.equal(res.status, 400)
    const error = errorOf(res)
    assert.equal(error.code, 'GUARD_BAD_REQUEST')
    assert.equal((await accessLine(error.request_id)).status, 400)
  })
})

describe('timeouts', () => {
  it('answers headers still arriving after headers_timeout_seconds with 408 and closes, not before', async () => {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.setEncoding('latin1')
    const request = `GET /edges/a.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ${'s'.repeat(200)}\r\n\r\n`
    await new Promise((resolve) => socket.once('connect', resolve))
    const started = performance.now()
    // One byte every 50 ms: the connection is never idle, the headers never complete in time.
    let sent = 0
    const trickle = setInterval(() => {
      if (sent < request.length && socket.writable) socket.write(request[sent++] as string)
    }, 50)
    let text = ''
    socket.on('data', (d: string) => (text += d))
    await new Promise((resolve) => socket.once('close', resolve))
    clearInterval(trickle)
    const elapsed = performance.now() - started
    assert.ok(elapsed >= HEADERS_TIMEOUT_S * 1000 * 0.9, `closed after ${Math.round(elapsed)} ms, before the timeout`)
    assert.ok(elapsed < HEADERS_TIMEOUT_S * 1000 + 3000, `closed after ${Math.round(elapsed)} ms`)
    assert.ok(sent < request.length, 'the headers were still incomplete')
    const res = parse(text)
    assert.match(res.head, /^HTTP\/1\.1 408 Request Timeout\r\n/)
    assert.equal(res.headers.get('connection'), 'close')
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8')
    const error = errorOf(res)
    assert.equal(error.code, 'GUARD_REQUEST_TIMEOUT')
    assert.equal(res.headers.get('x-request-id'), error.request_id)
    const line = await accessLine(error.request_id)
    assert.equal(line.status, 408)
    assert.equal(line.error, 'GUARD_REQUEST_TIMEOUT')
  })

  it('cuts a download the client stopped reading after idle_timeout_seconds, not before', async () => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /edges/big.bin HTTP/1.1\r\nHost: x\r\n\r\n'))
    socket.on('error', () => {})
    // Stop reading as soon as the response starts; the proxy keeps writing until the buffers fill.
    const head = await new Promise<string>((resolve) =>
      socket.once('data', (d: Buffer) => {
        socket.pause()
        resolve(d.toString('latin1'))
      })
    )
    const stopped = performance.now()
    const requestId = parse(head.slice(0, head.indexOf('\r\n\r\n') + 4)).headers.get('x-request-id') as string
    // The access line is written when the proxy closes the response.
    const line = await proxy.logged((l) => l.msg === 'request' && l.request_id === requestId)
    const elapsed = performance.now() - stopped
    socket.destroy()
    assert.equal(line.complete, false)
    assert.ok((line.bytes as number) < BIG)
    const idleMs = IDLE_TIMEOUT_S * 1000
    assert.ok(elapsed >= idleMs * 0.9, `cut after ${Math.round(elapsed)} ms, before the idle timeout`)
    // Twice the timeout is what net.Socket's own timeout alone allows a stalled write.
    assert.ok(elapsed < idleMs * 1.9, `cut after ${Math.round(elapsed)} ms`)
  })

  it('serves a slow reader to the end, past the idle timeout, while its pauses are shorter', async () => {
    const request = 'GET /edges/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    socket.on('error', () => {})
    // Reads 4 MiB, stops for half the idle timeout (the proxy's writes are stuck meanwhile), again
    // until the end: four pauses, twice the timeout in all.
    const pauseMs = (IDLE_TIMEOUT_S * 1000) / 2
    const burst = 4 * 1024 * 1024
    let received = 0
    let pauses = 0
    const started = performance.now()
    socket.on('data', (d: Buffer) => {
      received += d.length
      if (received < burst * (pauses + 1)) return
      socket.pause()
      pauses++
      setTimeout(() => socket.resume(), pauseMs)
    })
    await new Promise((resolve) => socket.once('close', resolve))
    const elapsed = performance.now() - started
    // The whole body and its head arrived: the connection was not cut.
    assert.ok(received > BIG, `received ${received} bytes`)
    assert.ok(pauses >= 3 && elapsed > IDLE_TIMEOUT_S * 1000, `${pauses} pauses in ${Math.round(elapsed)} ms`)
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/edges/big.bin' && l.complete === true)
    assert.equal(line.bytes, BIG)
  })
})
