// HTTPS with certificates generated here (selfsigned): objects served over TLS, the minimum version
// enforced, a rotated certificate picked up by a reload, and a broken one refused with the old kept.
import assert from 'node:assert/strict'
import https from 'node:https'
import type { TLSSocket } from 'node:tls'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
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
