// The proxy's SigV4 signs GET and HEAD exactly as @smithy/signature-v4 does: same headers, same
// Authorization, for the paths, headers and credentials the origin sends.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Sha256 } from '@aws-crypto/sha256-js'
import { SignatureV4 } from '@smithy/signature-v4'
import { encodeKey } from './s3-endpoint.ts'
import { SigV4, type Credentials } from './sigv4.ts'

async function sdkSign(
  method: string,
  host: string,
  path: string,
  query: Record<string, string>,
  headers: Record<string, string>,
  credentials: Credentials,
  region: string,
  service: string,
  at: Date
): Promise<Record<string, string>> {
  const signer = new SignatureV4({ credentials, sha256: Sha256, region, service, uriEscapePath: false, applyChecksum: true })
  const [hostname, port] = host.split(':')
  const signed = await signer.sign(
    {
      method,
      protocol: 'http:',
      hostname: hostname as string,
      port: port === undefined ? undefined : Number(port),
      path,
      query,
      headers: { host, 'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', ...headers },
    },
    { signingDate: at }
  )
  return signed.headers as Record<string, string>
}

function record(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < flat.length; i += 2) out[flat[i] as string] = flat[i + 1] as string
  return out
}

const KEYS = ['hello.txt', 'dir/sub dir/file name.bin', 'a%2Fb', 'ünïcödé/日本語.txt', "sp!ec'ial(*)~&$@=;:+,?#[].txt", 'x  y\tz']
const STATIC: Credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' }
const SESSION: Credentials = { ...STATIC, sessionToken: 'FQoGZXIvYXdzEJr//////////wEaDOsession+token/with=chars' }

describe('SigV4', () => {
  for (const key of KEYS) {
    it(`signs a GET of ${JSON.stringify(key)} as the SDK does`, async () => {
      const at = new Date('2026-03-04T05:06:07.890Z')
      const path = `/bucket/${encodeKey(key)}`
      const ours = record(new SigV4('us-east-1', 's3').sign('GET', path, 'x-id=GetObject', { host: '127.0.0.1:4566' }, STATIC, at.getTime()))
      const sdk = await sdkSign('GET', '127.0.0.1:4566', path, { 'x-id': 'GetObject' }, {}, STATIC, 'us-east-1', 's3', at)
      assert.deepEqual(ours, sdk)
    })
  }

  it('signs a ranged, conditional GET with a session token as the SDK does', async () => {
    const at = new Date('2026-12-31T23:59:59.999Z')
    const headers = { range: 'bytes=0-99', 'if-match': '"abc  def"', 'if-none-match': ' "x" ' }
    const ours = record(new SigV4('eu-west-3', 's3').sign('GET', '/b/k', 'x-id=GetObject', { host: 's3.eu-west-3.amazonaws.com', ...headers }, SESSION, at.getTime()))
    const sdk = await sdkSign('GET', 's3.eu-west-3.amazonaws.com', '/b/k', { 'x-id': 'GetObject' }, headers, SESSION, 'eu-west-3', 's3', at)
    assert.deepEqual(ours, sdk)
    assert.equal(ours['x-amz-security-token'], SESSION.sessionToken)
  })

  it('signs a HEAD of the bucket itself as the SDK does', async () => {
    const at = new Date('2026-01-01T00:00:00.000Z')
    const ours = record(new SigV4('us-west-2', 's3').sign('HEAD', '/bucket', '', { host: 'minio:9000' }, STATIC, at.getTime()))
    const sdk = await sdkSign('HEAD', 'minio:9000', '/bucket', {}, {}, STATIC, 'us-west-2', 's3', at)
    assert.deepEqual(ours, sdk)
  })

  it('derives a new signing key for a new day and a new secret', async () => {
    const signer = new SigV4('us-east-1', 's3')
    const first = new Date('2026-05-01T23:59:59.000Z')
    const next = new Date('2026-05-02T00:00:01.000Z')
    const rotated: Credentials = { accessKeyId: 'AKID2', secretAccessKey: 'other-secret' }
    for (const [at, credentials] of [
      [first, STATIC],
      [next, STATIC],
      [next, rotated],
    ] as const) {
      const ours = record(signer.sign('GET', '/b/k', 'x-id=GetObject', { host: 'h' }, credentials, at.getTime()))
      assert.deepEqual(ours, await sdkSign('GET', 'h', '/b/k', { 'x-id': 'GetObject' }, {}, credentials, 'us-east-1', 's3', at))
    }
  })
})
