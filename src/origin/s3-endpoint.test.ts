// Where the SDK's endpoint rules put a bucket, and how keys are written into the path.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { S3Client } from '@aws-sdk/client-s3'
import { ProxyError } from '../errors.ts'
import { encodeKey, resolveTarget } from './s3-endpoint.ts'

const clients: S3Client[] = []
after(() => clients.forEach((c) => c.destroy()))

function target(bucket: string, region: string, endpoint?: string, forcePathStyle = endpoint !== undefined) {
  const client = new S3Client({ region, endpoint, forcePathStyle, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
  clients.push(client)
  return resolveTarget({ bucket, region, endpoint, forcePathStyle }, async () => client)
}

/** The SDK's own answer for a bucket on a custom endpoint addressed path-style. */
function sdkPathStyleUrl(bucket: string, endpoint: string): URL {
  const client = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
  clients.push(client)
  return client.config.endpointProvider({ Bucket: bucket, Region: 'us-east-1', Endpoint: endpoint, ForcePathStyle: true }).url
}

describe('resolveTarget', () => {
  it('addresses an AWS bucket virtual-hosted', async () => {
    assert.deepEqual(await target('media-bucket', 'eu-west-1'), {
      protocol: 'https:',
      hostname: 'media-bucket.s3.eu-west-1.amazonaws.com',
      port: undefined,
      host: 'media-bucket.s3.eu-west-1.amazonaws.com',
      base: '/',
      signingRegion: 'eu-west-1',
      signingService: 's3',
    })
  })

  it('addresses an AWS bucket whose name is not DNS-safe over TLS path-style', async () => {
    const t = await target('my.dotted.bucket', 'eu-west-1')
    assert.equal(t.host, 's3.eu-west-1.amazonaws.com')
    assert.equal(t.base, '/my.dotted.bucket/')
  })

  it('uses the partition of the region', async () => {
    assert.equal((await target('media-bucket', 'cn-north-1')).host, 'media-bucket.s3.cn-north-1.amazonaws.com.cn')
  })

  it('addresses a custom endpoint path-style, with its port and base path', async () => {
    const t = await target('media', 'us-east-1', 'http://127.0.0.1:9000/base')
    assert.deepEqual([t.protocol, t.hostname, t.port, t.host, t.base], ['http:', '127.0.0.1', 9000, '127.0.0.1:9000', '/base/media/'])
    assert.equal(t.signingRegion, 'us-east-1')
  })

  it('addresses a custom endpoint path-style as the SDK does, without loading it', async () => {
    const endpoints = ['http://127.0.0.1:9000', 'http://127.0.0.1:9000/', 'https://minio.example.com/a/b', 'https://minio.example.com:443/a/b/', 'http://[::1]:80']
    for (const endpoint of endpoints) {
      const t = await resolveTarget({ bucket: 'media.v2', region: 'us-east-1', endpoint, forcePathStyle: true }, () =>
        Promise.reject(new Error('the SDK was asked for'))
      )
      const url = sdkPathStyleUrl('media.v2', endpoint)
      assert.deepEqual([t.protocol, t.host, t.base], [url.protocol, url.host, `${url.pathname}/`], endpoint)
    }
  })

  it('addresses a custom endpoint virtual-hosted when force_path_style is false', async () => {
    const t = await target('media', 'us-east-1', 'https://minio.example.com', false)
    assert.equal(t.host, 'media.minio.example.com')
    assert.equal(t.base, '/')
  })

  it('takes an IPv6 endpoint', async () => {
    const t = await target('media', 'us-east-1', 'http://[::1]:9000')
    assert.deepEqual([t.hostname, t.host], ['::1', '[::1]:9000'])
  })

  it('refuses a directory bucket, which needs S3 Express session signing', async () => {
    await assert.rejects(
      target('logs--usw2-az1--x-s3', 'us-west-2'),
      (err) => err instanceof ProxyError && err.code === 'ORIGIN_ERROR' && err.reason === 'unsupported_signing:sigv4-s3express'
    )
  })
})

describe('encodeKey', () => {
  const cases: Array<[string, string]> = [
    ['plain/key-1_2.~txt', 'plain/key-1_2.~txt'],
    ['with space.txt', 'with%20space.txt'],
    ['plus+sign.txt', 'plus%2Bsign.txt'],
    ["bang!star*quote'(paren).txt", 'bang%21star%2Aquote%27%28paren%29.txt'],
    ['ünï/日本.txt', '%C3%BCn%C3%AF/%E6%97%A5%E6%9C%AC.txt'],
    ['literal%25.txt', 'literal%2525.txt'],
    ['hash#q?.txt', 'hash%23q%3F.txt'],
    ['a//b/./c', 'a//b/./c'],
    ['emoji 😀', 'emoji%20%F0%9F%98%80'],
  ]
  for (const [key, encoded] of cases) {
    it(`writes ${JSON.stringify(key)} as ${encoded}`, () => assert.equal(encodeKey(key), encoded))
  }
})
