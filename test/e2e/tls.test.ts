// HTTPS with certificates generated here (selfsigned): objects served over TLS, the minimum version
// enforced, a rotated certificate picked up by a reload, and a broken one refused with the old kept;
// a large cached object (one write) served to a slow but steady TLS reader to the end, while one that
// stopped reading is cut after idle_timeout_seconds.
import assert from 'node:assert/strict'
import https from 'node:https'
import tls, { type TLSSocket } from 'node:tls'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { generate } from 'selfsigned'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
let proxy: TestProxy
let dir: string
let certFile: string
let keyFile: string

const certificate = () =>
  generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
  })

interface TlsAnswer {
  status: number
  body: string
  protocol: string | null
  fingerprint: string
}

function get(path: string, ca: string, maxVersion?: 'TLSv1.2'): Promise<TlsAnswer> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${proxy.url}${path}`, { ca, maxVersion, agent: false }, (res) => {
      const socket = res.socket as TLSSocket
      let body = ''
      res.on('data', (chunk: Buffer) => (body += chunk.toString()))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, protocol: socket.getProtocol(), fingerprint: socket.getPeerCertificate().fingerprint })
      )
    })
    req.on('error', reject)
  })
}

let first: Awaited<ReturnType<typeof certificate>>

before(async () => {
  s3 = await startS3()
  await s3.createBucket('secure')
  await s3.put('secure', 'a.txt', 'over tls')
  first = await certificate()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-tls-'))
  certFile = join(dir, 'cert.pem')
  keyFile = join(dir, 'key.pem')
  await writeFile(certFile, first.cert)
  await writeFile(keyFile, first.private)
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  https: { enabled: true, cert_path: "${certFile}", key_path: "${keyFile}", min_version: TLSv1.3 }
buckets:
${bucketYaml({ name: 'secure', prefix: '/secure', bucket: 'secure', endpoint: s3.endpoint })}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  await rm(dir, { recursive: true, force: true })
})

it('serves objects over TLS 1.3 with the configured certificate, and refuses older clients', async () => {
  const answer = await get('/secure/a.txt', first.cert)
  assert.equal(answer.status, 200)
  assert.equal(answer.body, 'over tls')
  assert.equal(answer.protocol, 'TLSv1.3')
  assert.equal(answer.fingerprint, first.fingerprint.toUpperCase())
  assert.ok(proxy.url.startsWith('https://'))
  await assert.rejects(get('/secure/a.txt', first.cert, 'TLSv1.2'), /protocol|version|alert/i)
})

it('picks up a rotated certificate on reload, and keeps it when the next files are broken', async () => {
  const second = await certificate()
  await writeFile(certFile, second.cert)
  await writeFile(keyFile, second.private)
  const result = await proxy.proxy.reload()
  assert.equal(result.ok, true)
  assert.equal((await get('/secure/a.txt', second.cert)).fingerprint, second.fingerprint.toUpperCase())

  await writeFile(certFile, 'not a certificate')
  const refused = await proxy.proxy.reload()
  assert.equal(refused.ok, false)
  assert.match(refused.ok ? '' : refused.error, /server\.https: .*cert\.pem and .*key\.pem are not a usable PEM certificate and key/)
  const still = await get('/secure/a.txt', second.cert)
  assert.equal(still.status, 200)
  assert.equal(still.fingerprint, second.fingerprint.toUpperCase())
})

it('a plain-HTTP proxy reloads a file that turns https on: the rest applies, TLS waits for a restart', async () => {
  const plain = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'secure', prefix: '/secure', bucket: 'secure', endpoint: s3.endpoint })}
`)
  try {
    // The previous test left a broken certificate behind.
    await writeFile(certFile, first.cert)
    await writeFile(keyFile, first.private)
    await plain.rewrite(`
server:
  address: "127.0.0.1:0"
  https: { enabled: true, cert_path: "${certFile}", key_path: "${keyFile}" }
buckets:
${bucketYaml({ name: 'renamed', prefix: '/renamed', bucket: 'secure', endpoint: s3.endpoint })}
`)
    const result = await plain.proxy.reload()
    assert.equal(result.ok, true)
    const warned = await plain.logged((l) => l.msg === 'this setting changes only at restart; the running value is kept' && l.key === 'server.https.enabled')
    assert.equal(warned.running, false)
    const res = await send(plain.url, '/renamed/a.txt')
    assert.equal(res.text, 'over tls')
  } finally {
    await plain.stop()
  }
})

describe('a large cached object over TLS, with idle_timeout_seconds: 2', () => {
  const IDLE_TIMEOUT_S = 2
  /** One write of the whole body (a memory hit), far larger than the socket buffers on both sides. */
  const SIZE = 16 * 1024 * 1024
  let slow: TestProxy
  let port: number

  before(async () => {
    await s3.put('secure', 'big.bin', Buffer.alloc(SIZE, 7))
    const own = join(dir, 'large')
    await mkdir(own)
    await writeFile(join(own, 'cert.pem'), first.cert)
    await writeFile(join(own, 'key.pem'), first.private)
    slow = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  idle_timeout_seconds: ${IDLE_TIMEOUT_S}
  https: { enabled: true, cert_path: "${join(own, 'cert.pem')}", key_path: "${join(own, 'key.pem')}" }
cache:
  enabled: true
  layers: [memory]
  max_item_size: 64MB
  memory: { max_size: 128MB }
buckets:
${bucketYaml({ name: 'secure', prefix: '/secure', bucket: 'secure', endpoint: s3.endpoint })}
`)
    port = Number(new URL(slow.url).port)
    // Fill the cache at full speed.
    await new Promise<void>((resolve, reject) => {
      https.get(`${slow.url}/secure/big.bin`, { ca: first.cert, agent: false }, (res) => res.resume().on('end', resolve)).on('error', reject)
    })
  })

  after(async () => {
    await slow?.stop()
  })

  const request = () => {
    const socket = tls.connect({ port, host: '127.0.0.1', ca: first.cert }, () =>
      socket.write('GET /secure/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    )
    return socket
  }

  it('serves a client that reads steadily at about 2 MB/s to the end, long past the idle timeout', async () => {
    const socket = request()
    socket.pause()
    let received = Buffer.alloc(0)
    let total = 0
    const started = performance.now()
    // At most 100 kB every 50 ms: never a pause near the idle timeout, but far slower than the proxy writes.
    const reader = setInterval(() => {
      let read = 0
      let chunk: Buffer | null
      while (read < 100_000 && (chunk = socket.read() as Buffer | null) !== null) {
        if (received.length < 1024) received = Buffer.concat([received, chunk.subarray(0, 1024)])
        read += chunk.length
      }
      total += read
    }, 50)
    const closed = await new Promise<string>((resolve) => {
      socket.on('close', () => resolve('closed'))
      socket.on('error', (err) => resolve(String(err)))
    })
    clearInterval(reader)
    for (let chunk: Buffer | null; (chunk = socket.read() as Buffer | null) !== null; ) total += chunk.length
    const elapsed = performance.now() - started
    assert.equal(closed, 'closed')
    const head = received.toString('latin1')
    assert.match(head, /^HTTP\/1\.1 200 /)
    assert.match(head, /\r\nx-cache: HIT\r\n/i)
    const headLength = head.indexOf('\r\n\r\n') + 4
    assert.equal(total - headLength, SIZE, `received ${total} bytes in ${Math.round(elapsed)} ms`)
    assert.ok(elapsed > IDLE_TIMEOUT_S * 1000 * 4, `read slowly: ${Math.round(elapsed)} ms`)
    const line = await slow.logged((l) => l.msg === 'request' && l.path === '/secure/big.bin' && l.complete === true && l.bytes === SIZE && (l.duration_ms as number) > 4000)
    assert.equal(line.status, 200)
  })

  it('cuts a TLS client that stopped reading after idle_timeout_seconds, not before', async () => {
    const socket = request()
    socket.on('error', () => {})
    // Stop reading as soon as the response starts.
    const head = await new Promise<string>((resolve) =>
      socket.once('data', (d: Buffer) => {
        socket.pause()
        resolve(d.toString('latin1'))
      })
    )
    const stopped = performance.now()
    const requestId = /\r\nx-request-id: ([^\r]+)\r\n/i.exec(head)?.[1]
    assert.ok(requestId !== undefined, head.slice(0, 300))
    const line = await slow.logged((l) => l.msg === 'request' && l.request_id === requestId)
    const elapsed = performance.now() - stopped
    socket.destroy()
    assert.equal(line.complete, false)
    const idleMs = IDLE_TIMEOUT_S * 1000
    assert.ok(elapsed >= idleMs * 0.9, `cut after ${Math.round(elapsed)} ms, before the idle timeout`)
    assert.ok(elapsed < idleMs * 1.9, `cut after ${Math.round(elapsed)} ms`)
  })
})
