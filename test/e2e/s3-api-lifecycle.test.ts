// The S3 API listener's lifecycle beside the main one: TLS with the same certificate (rotated on
// reload for both), credentials replaced on reload, and closed on shutdown.
import assert from 'node:assert/strict'
import https from 'node:https'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { GetObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3'
import { NodeHttpHandler } from '@smithy/node-http-handler'
import { generate } from 'selfsigned'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const FIRST = { id: 'LIFEFIRST0000001', secret: 'lifecycle-first-secret-0123456789-abcdefghij' }
const SECOND = { id: 'LIFESECOND000001', secret: 'lifecycle-second-secret-0123456789-abcdefghi' }

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

const yaml = (credential: { id: string; secret: string }) => `
server:
  address: "127.0.0.1:0"
  https: { enabled: true, cert_path: "${certFile}", key_path: "${keyFile}" }
s3_api:
  enabled: true
  address: "127.0.0.1:0"
  credentials:
    - { access_key_id: ${credential.id}, secret_access_key: "${credential.secret}", buckets: [life] }
buckets:
${bucketYaml({ name: 'life', prefix: '/life', bucket: 'life-backend', endpoint: s3.endpoint })}
`

let first: Awaited<ReturnType<typeof certificate>>

before(async () => {
  s3 = await startS3()
  await s3.createBucket('life-backend')
  await s3.put('life-backend', 'a.txt', 'over tls')
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-s3-life-'))
  certFile = join(dir, 'cert.pem')
  keyFile = join(dir, 'key.pem')
  first = await certificate()
  await writeFile(certFile, first.cert)
  await writeFile(keyFile, first.private)
  proxy = await startTestProxy(yaml(FIRST))
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
  await rm(dir, { recursive: true, force: true })
})

/** Reads life/a.txt over TLS trusting `ca`; returns the body and the server certificate's fingerprint. */
async function read(credential: { id: string; secret: string }, ca: string): Promise<{ body: string; fingerprint: string }> {
  let fingerprint = ''
  const agent = new https.Agent({ ca })
  const client = new S3Client({
    endpoint: proxy.proxy.s3Url,
    region: 'us-east-1',
    forcePathStyle: true,
    maxAttempts: 1,
    credentials: { accessKeyId: credential.id, secretAccessKey: credential.secret },
    requestHandler: new NodeHttpHandler({ httpsAgent: agent }),
  })
  client.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args)
      const socket = (out.response as { body?: { socket?: TLSSocket } }).body?.socket
      fingerprint = socket?.getPeerCertificate().fingerprint ?? ''
      return out
    },
    { step: 'deserialize', name: 'peer' }
  )
  try {
    const got = await client.send(new GetObjectCommand({ Bucket: 'life', Key: 'a.txt' }))
    return { body: (await got.Body?.transformToString()) ?? '', fingerprint }
  } finally {
    client.destroy()
    agent.destroy()
  }
}

it('serves the S3 API over TLS with the main listener\'s certificate', async () => {
  assert.ok(proxy.proxy.s3Url?.startsWith('https://'))
  const answer = await read(FIRST, first.cert)
  assert.equal(answer.body, 'over tls')
  assert.equal(answer.fingerprint, first.fingerprint.toUpperCase())
})

it('takes new credentials and a rotated certificate on reload', async () => {
  const second = await certificate()
  await writeFile(certFile, second.cert)
  await writeFile(keyFile, second.private)
  await proxy.rewrite(yaml(SECOND))
  const result = await proxy.proxy.reload()
  assert.equal(result.ok, true)
  const answer = await read(SECOND, second.cert)
  assert.equal(answer.body, 'over tls')
  assert.equal(answer.fingerprint, second.fingerprint.toUpperCase())
  await assert.rejects(read(FIRST, second.cert), (err: unknown) => err instanceof S3ServiceException && err.name === 'SignatureDoesNotMatch')
})

it('closes the S3 listener on shutdown', async () => {
  const url = proxy.proxy.s3Url as string
  await proxy.stop()
  await assert.rejects(fetch(url), /fetch failed/)
})
