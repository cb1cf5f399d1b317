// The core read path through the running proxy against s3rver (behind the SigV4-verifying layer):
// routing, keys, methods, HEAD parity, Range, conditional requests, error mapping, request ids.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startS3, type TestS3 } from '../support/s3.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'

const HELLO = 'hello, world\n'
const BYTES = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251))

let s3: TestS3
let proxy: TestProxy
let lastModified: string
let etag: string

before(async () => {
  s3 = await startS3()
  for (const name of ['public-assets', 'deeper-assets', 'assets', 'assets-private']) await s3.createBucket(name)
  await s3.put('public-assets', 'hello.txt', HELLO, {
    ContentType: 'text/plain; charset=utf-8',
    CacheControl: 'public, max-age=60',
    ContentDisposition: 'inline; filename="hello.txt"',
    ContentLanguage: 'en',
    Metadata: { owner: 'team-a' },
  })
  await s3.put('public-assets', 'bytes.bin', BYTES, { ContentType: 'application/octet-stream' })
  for (const key of ['dir/file.txt', 'with space.txt', 'plus+sign.txt', 'paren(1).txt', 'ünï/日本.txt']) {
    await s3.put('public-assets', key, `key=${key}`)
  }
  await s3.put('deeper-assets', 'x.txt', 'from deeper')
  await s3.put('assets', 'a.txt', 'from assets')
  await s3.put('assets-private', 'a.txt', 'from assets-private')

  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'pub', prefix: '/pub', bucket: 'public-assets', endpoint: s3.endpoint })}
${bucketYaml({ name: 'deeper', prefix: '/pub/deeper', bucket: 'deeper-assets', endpoint: s3.endpoint })}
${bucketYaml({ name: 'assets', prefix: '/assets', bucket: 'assets', endpoint: s3.endpoint })}
${bucketYaml({ name: 'assets-private', prefix: '/assets-private', bucket: 'assets-private', endpoint: s3.endpoint })}
${bucketYaml({ name: 'wrong-secret', prefix: '/wrong', bucket: 'public-assets', endpoint: s3.endpoint, secret: 'not-the-secret' })}
${bucketYaml({ name: 'down', prefix: '/down', bucket: 'public-assets', endpoint: 'http://127.0.0.1:1' })}
`)
  const res = await send(proxy.url, '/pub/hello.txt')
  lastModified = String(res.headers['last-modified'])
  etag = String(res.headers.etag)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

describe('routing', () => {
  it('serves an object under its prefix with its stored headers', async () => {
    const res = await send(proxy.url, '/pub/hello.txt')
    assert.equal(res.status, 200)
    assert.equal(res.text, HELLO)
    assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
    assert.equal(res.headers['content-length'], String(HELLO.length))
    assert.equal(res.headers['cache-control'], 'public, max-age=60')
    assert.equal(res.headers['content-disposition'], 'inline; filename="hello.txt"')
    assert.equal(res.headers['content-language'], 'en')
    assert.equal(res.headers['x-amz-meta-owner'], 'team-a')
    assert.equal(res.headers['accept-ranges'], 'bytes')
    assert.equal(res.headers['x-content-type-options'], 'nosniff')
    assert.match(String(res.headers.etag), /^"[^"]+"$/)
    assert.ok(!Number.isNaN(Date.parse(String(res.headers['last-modified']))))
  })

  it('picks the longest matching prefix', async () => {
    const res = await send(proxy.url, '/pub/deeper/x.txt')
    assert.equal(res.status, 200)
    assert.equal(res.text, 'from deeper')
  })

  it('matches prefixes on whole segments only', async () => {
    assert.equal((await send(proxy.url, '/assets/a.txt')).text, 'from assets')
    assert.equal((await send(proxy.url, '/assets-private/a.txt')).text, 'from assets-private')
    const res = await send(proxy.url, '/assetsX/a.txt')
    assert.equal(res.status, 404)
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ROUTE_NOT_FOUND')
  })

  it('returns 404 with a JSON error for an unknown prefix', async () => {
    const res = await send(proxy.url, '/nope/a.txt', { headers: { 'x-request-id': 'trace-123' } })
    assert.equal(res.status, 404)
    assert.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    assert.equal(res.headers['cache-control'], 'no-store')
    assert.deepEqual(res.json(), {
      error: { code: 'ROUTE_NOT_FOUND', message: 'No bucket is configured for this path', request_id: 'trace-123' },
    })
  })

  it('does not list a bucket when the key is empty', async () => {
    for (const path of ['/pub', '/pub/']) {
      const res = await send(proxy.url, path)
      assert.equal(res.status, 404, path)
      assert.equal(res.json<{ error: { code: string } }>().error.code, 'ROUTE_NO_KEY')
    }
    assert.equal(s3.requests.filter((r) => r.url.startsWith('/public-assets?')).length, 0)
  })
})

describe('object keys', () => {
  const cases: Array<[string, string]> = [
    ['/pub/with%20space.txt', 'with space.txt'],
    ['/pub/plus+sign.txt', 'plus+sign.txt'],
    ['/pub/paren(1).txt', 'paren(1).txt'],
    ['/pub/%C3%BCn%C3%AF/%E6%97%A5%E6%9C%AC.txt', 'ünï/日本.txt'],
    ['/pub/dir%2Ffile.txt', 'dir/file.txt'],
  ]
  for (const [path, key] of cases) {
    it(`reads key ${JSON.stringify(key)} for ${path}`, async () => {
      const res = await send(proxy.url, path)
      assert.equal(res.status, 200)
      assert.equal(res.text, `key=${key}`)
    })
  }

  it('sends a key with // to the backend unchanged', async () => {
    await send(proxy.url, '/pub/a//b.txt')
    assert.ok(s3.requests.some((r) => r.method === 'GET' && r.url.startsWith('/public-assets/a//b.txt')))
  })

  it('decodes percent-escapes exactly once', async () => {
    await send(proxy.url, '/pub/literal%2525.txt')
    assert.ok(s3.requests.some((r) => r.url.startsWith('/public-assets/literal%2525.txt')))
  })

  for (const path of ['/pub/../x', '/pub/%2e%2e/x', '/pub/a%2F..%2Fb', '/pub/./x', '/pub/a%5Cb', '/pub/a%00b', '/pub/%zz']) {
    it(`rejects ${path} with 400`, async () => {
      const before = s3.requests.length
      const res = await send(proxy.url, path)
      assert.equal(res.status, 400)
      assert.equal(res.json<{ error: { code: string } }>().error.code, 'GUARD_BAD_PATH')
      assert.equal(s3.requests.length, before, 'nothing reaches the backend')
    })
  }

  it('never forwards the query string, auth headers or cookies to S3', async () => {
    await send(proxy.url, '/pub/hello.txt?token=secret-token&list-type=2&acl', {
      headers: { authorization: 'Bearer secret-token', cookie: 'session=secret-cookie' },
    })
    const forwarded = s3.getsOf('public-assets', 'hello.txt').at(-1)
    assert.ok(forwarded !== undefined)
    assert.equal(forwarded.url, '/public-assets/hello.txt?x-id=GetObject')
    assert.doesNotMatch(JSON.stringify(forwarded.headers), /secret-token|secret-cookie/)
  })
})

describe('methods', () => {
  for (const method of ['PUT', 'POST', 'DELETE', 'PATCH']) {
    it(`answers ${method} with 405 and Allow`, async () => {
      const res = await send(proxy.url, '/pub/hello.txt', { method })
      assert.equal(res.status, 405)
      assert.equal(res.headers.allow, 'GET, HEAD, OPTIONS')
      assert.equal(res.json<{ error: { code: string } }>().error.code, 'GUARD_METHOD_NOT_ALLOWED')
    })
  }

  it('answers HEAD with the same headers as GET and no body, using HeadObject', async () => {
    const get = await send(proxy.url, '/pub/hello.txt')
    const before = s3.requests.length
    const head = await send(proxy.url, '/pub/hello.txt', { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(head.body.length, 0)
    for (const name of ['content-type', 'content-length', 'etag', 'last-modified', 'cache-control', 'content-disposition', 'x-amz-meta-owner', 'accept-ranges']) {
      assert.equal(head.headers[name], get.headers[name], name)
    }
    const forwarded = s3.requests.slice(before)
    assert.deepEqual(forwarded.map((r) => r.method), ['HEAD'])
  })

  it('answers HEAD of a missing object with 404 and no body', async () => {
    const res = await send(proxy.url, '/pub/missing.txt', { method: 'HEAD' })
    assert.equal(res.status, 404)
    assert.equal(res.body.length, 0)
  })

  it('answers a plain OPTIONS with 204 and Allow', async () => {
    const res = await send(proxy.url, '/pub/hello.txt', { method: 'OPTIONS' })
    assert.equal(res.status, 204)
    assert.equal(res.headers.allow, 'GET, HEAD, OPTIONS')
  })
})

describe('range requests', () => {
  const cases: Array<[string, number, number]> = [
    ['bytes=0-99', 0, 99],
    ['bytes=0-', 0, 999],
    ['bytes=990-', 990, 999],
    ['bytes=-5', 995, 999],
    ['bytes=-5000', 0, 999],
    ['bytes=500-2000', 500, 999],
  ]
  for (const [header, start, end] of cases) {
    it(`serves 206 with Content-Range for ${header}`, async () => {
      const res = await send(proxy.url, '/pub/bytes.bin', { headers: { range: header } })
      assert.equal(res.status, 206)
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/1000`)
      assert.equal(res.headers['content-length'], String(end - start + 1))
      assert.deepEqual(res.body, BYTES.subarray(start, end + 1))
    })
    it(`answers HEAD with the same 206 headers for ${header}`, async () => {
      const res = await send(proxy.url, '/pub/bytes.bin', { method: 'HEAD', headers: { range: header } })
      assert.equal(res.status, 206)
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/1000`)
      assert.equal(res.headers['content-length'], String(end - start + 1))
    })
  }

  for (const header of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
    it(`returns 416 with Content-Range bytes */size for ${header}`, async () => {
      const res = await send(proxy.url, '/pub/bytes.bin', { headers: { range: header } })
      assert.equal(res.status, 416)
      assert.equal(res.headers['content-range'], 'bytes */1000')
      assert.equal(res.json<{ error: { code: string } }>().error.code, 'RANGE_NOT_SATISFIABLE')
    })
  }

  it('answers multiple ranges with the whole object', async () => {
    const res = await send(proxy.url, '/pub/bytes.bin', { headers: { range: 'bytes=0-1,5-6' } })
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, BYTES)
  })

  it('ignores a malformed Range header', async () => {
    for (const header of ['bytes=9-1', 'items=0-1', 'bytes=abc']) {
      const res = await send(proxy.url, '/pub/bytes.bin', { headers: { range: header } })
      assert.equal(res.status, 200, header)
      assert.equal(res.body.length, 1000)
    }
  })

  it('evaluates preconditions before an unsatisfiable Range (RFC 9110 13.2.2)', async () => {
    const bin = await send(proxy.url, '/pub/bytes.bin')
    const etagOf = String(bin.headers.etag)
    const notModified = await send(proxy.url, '/pub/bytes.bin', { headers: { range: 'bytes=5000-', 'if-none-match': etagOf } })
    assert.equal(notModified.status, 304)
    const failed = await send(proxy.url, '/pub/bytes.bin', { headers: { range: 'bytes=5000-', 'if-match': '"other"' } })
    assert.equal(failed.status, 412)
    const staleIfRange = await send(proxy.url, '/pub/bytes.bin', { headers: { range: 'bytes=5000-', 'if-range': '"stale"' } })
    assert.equal(staleIfRange.status, 200)
    assert.deepEqual(staleIfRange.body, BYTES)
    const head = await send(proxy.url, '/pub/bytes.bin', { method: 'HEAD', headers: { range: 'bytes=5000-', 'if-none-match': etagOf } })
    assert.equal(head.status, 304)
  })

  it('honours If-Range only while the ETag still matches', async () => {
    const bin = await send(proxy.url, '/pub/bytes.bin')
    const matching = await send(proxy.url, '/pub/bytes.bin', {
      headers: { range: 'bytes=0-9', 'if-range': String(bin.headers.etag) },
    })
    assert.equal(matching.status, 206)
    const stale = await send(proxy.url, '/pub/bytes.bin', { headers: { range: 'bytes=0-9', 'if-range': '"stale"' } })
    assert.equal(stale.status, 200)
    assert.equal(stale.body.length, 1000)
  })
})

describe('conditional requests', () => {
  it('returns 304 for a matching If-None-Match, with validators and no body', async () => {
    const res = await send(proxy.url, '/pub/hello.txt', { headers: { 'if-none-match': etag } })
    assert.equal(res.status, 304)
    assert.equal(res.headers.etag, etag)
    assert.equal(res.headers['cache-control'], 'public, max-age=60')
    assert.equal(res.body.length, 0)
  })

  it('returns 304 for a weak or listed If-None-Match and for *', async () => {
    for (const value of [`W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await send(proxy.url, '/pub/hello.txt', { headers: { 'if-none-match': value } })
      assert.equal(res.status, 304, value)
    }
  })

  it('returns 200 when If-None-Match does not match, even if If-Modified-Since would', async () => {
    const res = await send(proxy.url, '/pub/hello.txt', {
      headers: { 'if-none-match': '"other"', 'if-modified-since': lastModified },
    })
    assert.equal(res.status, 200)
    assert.equal(res.text, HELLO)
  })

  it('returns 304 for If-Modified-Since at or after Last-Modified, 200 before it', async () => {
    assert.equal((await send(proxy.url, '/pub/hello.txt', { headers: { 'if-modified-since': lastModified } })).status, 304)
    const earlier = new Date(Date.parse(lastModified) - 60_000).toUTCString()
    assert.equal((await send(proxy.url, '/pub/hello.txt', { headers: { 'if-modified-since': earlier } })).status, 200)
  })

  it('answers HEAD conditionals the same way', async () => {
    const res = await send(proxy.url, '/pub/hello.txt', { method: 'HEAD', headers: { 'if-none-match': etag } })
    assert.equal(res.status, 304)
  })

  it('returns 412 when If-Match fails and serves when it matches', async () => {
    const failed = await send(proxy.url, '/pub/hello.txt', { headers: { 'if-match': '"other"' } })
    assert.equal(failed.status, 412)
    assert.equal(failed.json<{ error: { code: string } }>().error.code, 'HTTP_PRECONDITION_FAILED')
    assert.equal((await send(proxy.url, '/pub/hello.txt', { headers: { 'if-match': etag } })).status, 200)
  })
})

describe('backend errors', () => {
  it('maps a missing key to 404', async () => {
    const res = await send(proxy.url, '/pub/missing.txt')
    assert.equal(res.status, 404)
    assert.equal(res.headers['cache-control'], 'no-store')
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ORIGIN_NOT_FOUND')
  })

  it('maps rejected backend credentials to 502 without leaking S3 details', async () => {
    const res = await send(proxy.url, '/wrong/hello.txt')
    assert.equal(res.status, 502)
    const body = res.json<{ error: { code: string; message: string } }>()
    assert.equal(body.error.code, 'ORIGIN_AUTH_FAILED')
    assert.doesNotMatch(res.text, /SignatureDoesNotMatch|public-assets|<Error>/)
  })

  it('maps an unreachable backend to 502', async () => {
    const res = await send(proxy.url, '/down/hello.txt')
    assert.equal(res.status, 502)
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ORIGIN_UNREACHABLE')
  })
})

describe('request identity and logs', () => {
  it('generates an X-Request-ID when the client sends none or an unsafe one', async () => {
    const generated = await send(proxy.url, '/pub/hello.txt')
    assert.match(String(generated.headers['x-request-id']), /^[0-9a-f-]{36}$/)
    const unsafe = await send(proxy.url, '/pub/hello.txt', { headers: { 'x-request-id': 'bad id with spaces' } })
    assert.match(String(unsafe.headers['x-request-id']), /^[0-9a-f-]{36}$/)
  })

  it('keeps a safe client X-Request-ID', async () => {
    const res = await send(proxy.url, '/pub/hello.txt', { headers: { 'x-request-id': 'client-id-42' } })
    assert.equal(res.headers['x-request-id'], 'client-id-42')
  })

  it('writes one access-log line for a request to /admin (an own path under two patterns)', async () => {
    await send(proxy.url, '/admin', { headers: { 'x-request-id': 'admin-once' } })
    await send(proxy.url, '/pub/hello.txt', { headers: { 'x-request-id': 'after-admin' } })
    await proxy.logged((l) => l.request_id === 'after-admin')
    assert.equal(proxy.logs.filter((l) => l.request_id === 'admin-once').length, 1)
  })

  it('writes one access-log line per request without the query string', async () => {
    await send(proxy.url, '/pub/hello.txt?token=very-secret', { headers: { 'x-request-id': 'log-check-1' } })
    const line = await proxy.logged((l) => l.request_id === 'log-check-1')
    assert.equal(proxy.logs.filter((l) => l.request_id === 'log-check-1').length, 1)
    assert.equal(line?.msg, 'request')
    assert.equal(line?.method, 'GET')
    assert.equal(line?.path, '/pub/hello.txt')
    assert.equal(line?.status, 200)
    assert.equal(line?.bytes, HELLO.length)
    assert.equal(line?.bucket, 'pub')
    assert.equal(typeof line?.duration_ms, 'number')
    assert.doesNotMatch(JSON.stringify(proxy.logs), /very-secret/)
  })
})
