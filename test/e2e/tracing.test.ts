// Tracing through the running proxy: the real OTLP/HTTP exporter (JSON protocol) sends to a local
// receiver that decodes what arrives. The server span continues the client's traceparent; JWT
// verification, the cache lookup and the S3 call are its children; the key never appears.
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Array<{ key: string; value: Record<string, unknown> }>
  status?: { code?: number }
}

const JWT_SECRET = 'tracing-test-secret-that-is-long-enough'
const SECRET_KEY_NAME = 'very-secret-report.txt'
let s3: TestS3
let proxy: TestProxy
let receiver: http.Server
const spans: OtlpSpan[] = []
const resources: Array<Record<string, unknown>> = []

before(async () => {
  // The batch processor reads its delay from the standard variable: export quickly in tests.
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50'
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.url === '/otlp/v1/traces' && req.headers['content-type']?.includes('json')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: Record<string, unknown> }> }; scopeSpans: Array<{ spans: OtlpSpan[] }> }>
        }
        for (const rs of body.resourceSpans) {
          resources.push(Object.fromEntries(rs.resource.attributes.map((a) => [a.key, Object.values(a.value)[0]])))
          for (const ss of rs.scopeSpans) spans.push(...ss.spans)
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/otlp`

  s3 = await startS3()
  await s3.createBucket('docs')
  await s3.put('docs', SECRET_KEY_NAME, 'traced body')
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
observability:
  tracing:
    enabled: true
    otlp_endpoint: ${receiverUrl}
    protocol: http/json
    service_name: yatagarasu-test
cache:
  memory: { max_size: 1MB }
buckets:
${bucketYaml({
  name: 'private',
  prefix: '/private',
  bucket: 'docs',
  endpoint: s3.endpoint,
  extra: `    cache: { enabled: true }
    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"`,
})}
`)
})

after(async () => {
  await proxy.stop()
  await s3.stop()
  receiver.close()
  delete process.env.OTEL_BSP_SCHEDULE_DELAY
})

const attr = (span: OtlpSpan | undefined, key: string) => {
  const value = span?.attributes.find((a) => a.key === key)?.value
  return value === undefined ? undefined : Object.values(value)[0]
}

async function spansOfTrace(traceId: string, count: number): Promise<OtlpSpan[]> {
  const ofTrace = () => spans.filter((s) => s.traceId === traceId)
  return eventually(
    async () => ofTrace().length >= count && ofTrace(),
    `${count} spans of trace ${traceId}`,
    async () => `got ${ofTrace().map((s) => s.name).join(', ')}`
  )
}

describe('tracing', () => {
  it('continues the client’s traceparent with a server span and children for jwt, cache and s3', async () => {
    const token = await new SignJWT({ sub: 'tracer' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(JWT_SECRET))
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const clientSpan = '00f067aa0ba902b7'
    const res = await send(proxy.url, `/private/${SECRET_KEY_NAME}`, {
      headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${clientSpan}-01` },
    })
    assert.equal(res.status, 200)

    const trace = await spansOfTrace(traceId, 4)
    const server = trace.find((s) => s.parentSpanId === clientSpan)
    assert.ok(server, 'a server span whose parent is the client span')
    assert.equal(server.kind, 2, 'SERVER')
    assert.equal(server.name, 'GET')
    assert.equal(attr(server, 'http.request.method'), 'GET')
    assert.equal(attr(server, 'http.route'), '/private/*')
    assert.equal(Number(attr(server, 'http.response.status_code')), 200)
    const children = trace.filter((s) => s.parentSpanId === server.spanId)
    assert.deepEqual(children.map((s) => s.name).sort(), ['cache.lookup', 'jwt.verify', 's3.GetObject'])
    const s3Span = children.find((s) => s.name === 's3.GetObject')
    assert.equal(attr(s3Span, 'yatagarasu.replica'), 'primary')
    assert.equal(s3Span?.kind, 3, 'CLIENT')
    assert.equal(attr(children.find((s) => s.name === 'cache.lookup'), 'yatagarasu.cache.hit'), false)
    assert.ok(!JSON.stringify(trace).includes(SECRET_KEY_NAME), 'the object key is in no span')
    assert.ok(!JSON.stringify(trace).includes(token), 'nor the token')
    assert.equal(resources[0]?.['service.name'], 'yatagarasu-test')

    const logged = await proxy.logged((l) => l.msg === 'request' && l.trace_id === traceId)
    assert.equal(logged.status, 200)
  })

  it('starts a new trace for a request without traceparent, and marks a 5xx as an error', async () => {
    await s3.pause()
    try {
      const token = await new SignJWT({ sub: 'tracer' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(JWT_SECRET))
      const res = await send(proxy.url, '/private/other.txt', { headers: { authorization: `Bearer ${token}` } })
      assert.equal(res.status, 502)
      const line = await proxy.logged((l) => l.msg === 'request' && l.status === 502)
      const trace = await spansOfTrace(String(line.trace_id), 3)
      const server = trace.find((s) => s.parentSpanId === undefined || s.parentSpanId === '')
      assert.ok(server)
      assert.equal(server.status?.code, 2, 'ERROR')
      assert.equal(attr(trace.find((s) => s.name === 's3.GetObject'), 'error.type'), 'ORIGIN_UNREACHABLE')
    } finally {
      await s3.resume()
    }
  })
})
