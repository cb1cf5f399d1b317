// Client addresses and IP lists end to end: X-Forwarded-For believed only from trusted proxies,
// global and per-bucket allow/deny lists for IPv4 and IPv6 (403 with the JSON error), the resolved
// address in the access log; and force_download's Content-Disposition.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

let s3: TestS3
/** Behind a trusted load balancer at 127.0.0.1: X-Forwarded-For names the client. */
let behindProxy: TestProxy
/** Trusts only 10.0.0.0/8: a client at 127.0.0.1 cannot choose its address. */
let exposed: TestProxy

const buckets = () =>
  bucketYaml({
    name: 'partners',
    prefix: '/partners',
    bucket: 'acl',
    endpoint: s3.endpoint,
    extra: `    ip_filter:
      allowlist: [203.0.113.0/24, "2001:db8:1::/48"]
      blocklist: [203.0.113.66]`,
  }) +
  bucketYaml({ name: 'public', prefix: '/public', bucket: 'acl', endpoint: s3.endpoint }) +
  bucketYaml({ name: 'uploads', prefix: '/uploads', bucket: 'acl', endpoint: s3.endpoint, extra: '    force_download: true\n    cache: { enabled: true }' })

before(async () => {
  s3 = await startS3()
  await s3.createBucket('acl')
  await s3.put('acl', 'a.txt', 'hello')
  await s3.put('acl', 'page.html', '<script>alert(1)</script>', { ContentType: 'text/html' })
  await s3.put('acl', 'report.pdf', '%PDF', { ContentType: 'application/pdf', ContentDisposition: 'inline; filename="q3.pdf"' })
  behindProxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  trusted_proxies: [127.0.0.1, "::1"]
  ip_filter:
    blocklist: [198.51.100.0/24, "2001:db8:bad::/48"]
buckets:
${buckets()}`)
  exposed = await startTestProxy(`
server:
  address: "127.0.0.1:0"
  trusted_proxies: [10.0.0.0/8]
buckets:
${buckets()}`)
})

after(async () => {
  await Promise.all([behindProxy?.stop(), exposed?.stop()])
  await s3?.stop()
})

const from = (proxy: TestProxy, path: string, forwardedFor: string) => send(proxy.url, path, { headers: { 'x-forwarded-for': forwardedFor } })

describe('IP lists', () => {
  it('admits only the bucket allowlist, IPv4 and IPv6, and the blocklist wins over it', async () => {
    assert.equal((await from(behindProxy, '/partners/a.txt', '203.0.113.10')).status, 200)
    assert.equal((await from(behindProxy, '/partners/a.txt', '2001:db8:1::42')).status, 200)
    for (const outsider of ['192.0.2.1', '2001:db8:2::1', '203.0.113.66']) {
      const res = await from(behindProxy, '/partners/a.txt', outsider)
      assert.equal(res.status, 403, outsider)
      const body = res.json<{ error: { code: string; request_id: string } }>()
      assert.equal(body.error.code, 'GUARD_IP_DENIED')
      assert.equal(body.error.request_id, res.headers['x-request-id'])
    }
    // The other bucket has no list of its own.
    assert.equal((await from(behindProxy, '/public/a.txt', '192.0.2.1')).status, 200)
  })

  it('applies the global blocklist to every path, routed or not, IPv4 and IPv6', async () => {
    for (const blocked of ['198.51.100.7', '2001:db8:bad::7']) {
      assert.equal((await from(behindProxy, '/public/a.txt', blocked)).status, 403, blocked)
      assert.equal((await from(behindProxy, '/nowhere/a.txt', blocked)).status, 403, blocked)
    }
  })

  it('logs the client address it decided on', async () => {
    const res = await from(behindProxy, '/public/a.txt', '192.0.2.99, 127.0.0.1')
    const line = await behindProxy.logged((l) => l.request_id === res.headers['x-request-id'] && l.msg === 'request')
    assert.equal(line.client_ip, '192.0.2.99')
  })
})

describe('trusted proxies', () => {
  it('ignores X-Forwarded-For from a peer that is not a trusted proxy (a spoofing client)', async () => {
    // 127.0.0.1 is not in 10.0.0.0/8: the claimed partner address is not believed.
    const res = await from(exposed, '/partners/a.txt', '203.0.113.10')
    assert.equal(res.status, 403)
    const line = await exposed.logged((l) => l.request_id === res.headers['x-request-id'] && l.msg === 'request')
    assert.equal(line.client_ip, '127.0.0.1')
  })

  it('believes only the hops appended by trusted proxies, not what the client wrote before them', async () => {
    // The client wrote 203.0.113.10 itself and connected from 192.0.2.5, which the LB appended.
    assert.equal((await from(behindProxy, '/partners/a.txt', '203.0.113.10, 192.0.2.5')).status, 403)
  })
})

describe('force_download', () => {
  it('sends Content-Disposition: attachment, keeping the object’s filename, from origin and from cache alike', async () => {
    const html = await send(behindProxy.url, '/uploads/page.html')
    assert.equal(html.status, 200)
    assert.equal(html.headers['content-disposition'], 'attachment')
    assert.equal(html.headers['x-content-type-options'], 'nosniff')
    const cached = await send(behindProxy.url, '/uploads/page.html')
    assert.equal(cached.headers['x-cache'], 'HIT')
    assert.equal(cached.headers['content-disposition'], 'attachment')
    const pdf = await send(behindProxy.url, '/uploads/report.pdf', { headers: { range: 'bytes=0-1' } })
    assert.equal(pdf.status, 206)
    assert.equal(pdf.headers['content-disposition'], 'attachment; filename="q3.pdf"')
    // The same object through a bucket without the setting keeps its own disposition.
    assert.equal((await send(behindProxy.url, '/public/report.pdf')).headers['content-disposition'], 'inline; filename="q3.pdf"')
  })
})
