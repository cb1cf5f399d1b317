import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseS3Request, type S3Request } from './request.ts'

const ok = (r: S3Request) => {
  assert.ok(r.ok, JSON.stringify(r))
  return r
}
const refused = (r: S3Request) => {
  assert.ok(!r.ok, JSON.stringify(r))
  return r
}

describe('parseS3Request', () => {
  it('reads path-style bucket and key, decoding the key exactly once', () => {
    const r = ok(parseS3Request('GET', '/media/dir/a%20b%2Bc%252F+x%2Fy//z?x-id=GetObject', 'h:9000', undefined))
    assert.equal(r.operation, 'GetObject')
    assert.equal(r.bucket, 'media')
    assert.equal(r.key, 'dir/a b+c%2F+x/y//z')
    assert.equal(ok(parseS3Request('HEAD', '/media/%E6%97%A5.txt', 'h', undefined)).key, '日.txt')
    assert.equal(ok(parseS3Request('HEAD', '/media/k', 'h', undefined)).operation, 'HeadObject')
  })

  it('reads virtual-host style only under the configured domain', () => {
    const r = ok(parseS3Request('GET', '/a/b.txt', 'Media.S3.Example.com:9443', 's3.example.com'))
    assert.deepEqual([r.operation, r.bucket, r.key], ['GetObject', 'media', 'a/b.txt'])
    const path = ok(parseS3Request('GET', '/media/a/b.txt', 's3.example.com', 's3.example.com'))
    assert.deepEqual([path.bucket, path.key], ['media', 'a/b.txt'])
    const other = ok(parseS3Request('GET', '/media/a', 'media.elsewhere.com', 's3.example.com'))
    assert.deepEqual([other.bucket, other.key], ['media', 'a'])
  })

  it('classifies the bucket and service operations', () => {
    const op = (method: string, target: string) => ok(parseS3Request(method, target, 'h', undefined)).operation
    assert.equal(op('GET', '/'), 'ListBuckets')
    assert.equal(op('HEAD', '/media'), 'HeadBucket')
    assert.equal(op('GET', '/media?location'), 'GetBucketLocation')
    assert.equal(op('GET', '/media/?list-type=2&prefix=a%2F&delimiter=%2F'), 'ListObjectsV2')
    assert.equal(op('GET', '/media?prefix=a&marker=b'), 'ListObjects')
  })

  it('refuses every write before anything else looks at it', () => {
    for (const method of ['PUT', 'POST', 'DELETE', 'PATCH']) {
      for (const target of ['/media/k', '/media', '/media?delete', '/']) {
        const r = refused(parseS3Request(method, target, 'h', undefined))
        assert.equal(r.code, 'AccessDenied', `${method} ${target}`)
      }
    }
    assert.equal(refused(parseS3Request('TRACE', '/media/k', 'h', undefined)).code, 'MethodNotAllowed')
  })

  it('refuses reads it does not serve, naming them', () => {
    const code = (target: string) => refused(parseS3Request('GET', target, 'h', undefined))
    assert.equal(code('/media/k?partNumber=1').code, 'NotImplemented')
    assert.match(code('/media/k?partNumber=1').message, /partNumber/)
    assert.equal(code('/media/k?versionId=abc').code, 'NotImplemented')
    assert.equal(code('/media/k?acl').code, 'NotImplemented')
    assert.equal(code('/media?versioning').code, 'NotImplemented')
    assert.equal(code('/media?list-type=3').code, 'InvalidArgument')
    assert.equal(code('/media/a/../b').code, 'InvalidArgument')
    assert.equal(code('/media/a%2F..%2Fb').code, 'InvalidArgument')
    assert.equal(code('/media/%E0%A4%A').code, 'InvalidURI')
    assert.equal(code('/Bad_Bucket/k').code, 'InvalidBucketName')
  })

  it('reads the query as SigV4 signs it: + is a plus, and a parameter it reads appears once', () => {
    const prefix = (target: string) => ok(parseS3Request('GET', target, 'h', undefined)).query.get('prefix')
    assert.equal(prefix('/files?list-type=2&prefix=a+b'), 'a+b')
    assert.equal(prefix('/files?list-type=2&prefix=a%2Bb'), 'a+b')
    assert.equal(prefix('/files?list-type=2&prefix=a%20b'), 'a b')
    for (const target of ['/files?list-type=2&prefix=x/&prefix=y/', '/files?list-type=2&list-type=2', '/files/k?response-content-type=a&response-content-type=b', '/files?prefix=%ZZ']) {
      const r = refused(parseS3Request('GET', target, 'h', undefined))
      assert.equal(r.code, 'InvalidArgument', target)
    }
    // Parameters the front end does not read may repeat (the signature covers every copy).
    assert.equal(ok(parseS3Request('GET', '/files/k?x-id=GetObject&x-id=GetObject', 'h', undefined)).operation, 'GetObject')
  })
})
