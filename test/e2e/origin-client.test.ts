// The S3 client's own guarantees, against tiny HTTP backends that each have one quirk: a request
// waiting for a pooled socket or for credentials still ends at `s3.timeout` (or at once when its
// client leaves), a skewed clock is corrected from S3's `Date` even when the refusal has no body
// (HEAD, health probes), and an answer whose size is unknown is never served as an empty object.
import assert from 'node:assert/strict'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { S3Connection } from '../../src/config/schema.ts'
import { ProxyError } from '../../src/errors.ts'
import { S3Source } from '../../src/origin/s3.ts'
import { bucketYaml, startTestProxy } from '../support/proxy.ts'

async function backend(handler: http.RequestListener): Promise<{ endpoint: string; close(): void }> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close() {
      server.closeAllConnections()
      server.close()
    },
  }
}

function connection(endpoint: string, overrides: Partial<S3Connection> = {}): S3Connection {
  return {
    name: 'primary',
    bucket: 'b',
    region: 'us-east-1',
    endpoint,
    access_key: 'AKID',
    secret_key: 'secret',
    session_token: undefined,
    force_path_style: true,
    timeout: 1,
    connect_timeout: 1,
    max_connections: 4,
    max_attempts: 1,
    ...overrides,
  } as S3Connection
}

/** How a read ended, and when (ms after `started`). */
async function outcome(read: Promise<unknown>, started: number): Promise<{ code: string; ms: number }> {
  try {
    await read
    return { code: 'ok', ms: performance.now() - started }
  } catch (err) {
    return { code: err instanceof ProxyError ? err.code : String(err), ms: performance.now() - started }
  }
}

describe('a request waiting for a pooled socket', () => {
  it('ends at s3.timeout, or at once when its client leaves, while every socket is busy', async () => {
    const big = Buffer.alloc(4 << 20, 97)
    const server = await backend((req, res) => {
      res.setHeader('content-length', big.length)
      res.end(req.method === 'HEAD' ? undefined : big)
    })
    const source = new S3Source(connection(server.endpoint, { max_connections: 1, timeout: 1 }))
    // A slow reader holds the only socket: its body is not read yet.
    const held = await source.get('big', undefined, { signal: undefined })
    // Let the socket go after 4 s, so that a request the timeout missed ends late instead of never.
    const release = setTimeout(() => void held.stream.cancel(), 4000)
    try {
      const gone = new AbortController()
      setTimeout(() => gone.abort(), 200)
      const started = performance.now()
      const [timedOut, aborted] = await Promise.all([
        outcome(source.head('x', { signal: undefined }), started),
        outcome(source.head('y', { signal: gone.signal }), started),
      ])
      assert.equal(aborted.code, 'ORIGIN_ABORTED')
      assert.ok(aborted.ms < 700, `the client left at 200 ms; the request ended at ${Math.round(aborted.ms)} ms`)
      assert.equal(timedOut.code, 'ORIGIN_TIMEOUT')
      assert.ok(timedOut.ms >= 950 && timedOut.ms < 2500, `s3.timeout is 1 s; the request ended at ${Math.round(timedOut.ms)} ms`)

      // The abandoned requests gave up their place: the socket serves the next one once free.
      clearTimeout(release)
      await held.stream.cancel()
      const meta = await source.head('z', { signal: undefined })
      assert.equal(meta.size, big.length)
    } finally {
      clearTimeout(release)
      source.close()
      server.close()
    }
  })
})

describe('a credential provider that hangs', () => {
  it('ends the request at s3.timeout, or at once when its client leaves', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-creds-'))
    const script = join(dir, 'slow-creds.sh')
    // Answers after 4 s: long past the timeout, short enough not to hold the test run.
    await writeFile(script, `#!/bin/sh\nsleep 4\necho '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}'\n`)
    await chmod(script, 0o755)
    await writeFile(join(dir, 'config'), `[profile slow]\ncredential_process = ${script}\n`)
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_WEB_IDENTITY_TOKEN_FILE']) {
      delete process.env[name]
    }
    process.env.AWS_CONFIG_FILE = join(dir, 'config')
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, 'none')
    process.env.AWS_PROFILE = 'slow'
    const server = await backend((_req, res) => {
      res.setHeader('content-length', '0')
      res.end()
    })
    const source = new S3Source(connection(server.endpoint, { access_key: undefined, secret_key: undefined, timeout: 1 }))
    try {
      const gone = new AbortController()
      setTimeout(() => gone.abort(), 200)
      const started = performance.now()
      const [timedOut, aborted] = await Promise.all([
        outcome(source.head('k', { signal: undefined }), started),
        outcome(source.head('k', { signal: gone.signal }), started),
      ])
      assert.equal(aborted.code, 'ORIGIN_ABORTED')
      assert.ok(aborted.ms < 700, `the client left at 200 ms; the request ended at ${Math.round(aborted.ms)} ms`)
      assert.equal(timedOut.code, 'ORIGIN_TIMEOUT')
      assert.ok(timedOut.ms >= 950 && timedOut.ms < 2500, `s3.timeout is 1 s; the request ended at ${Math.round(timedOut.ms)} ms`)
    } finally {
      source.close()
      server.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('a backend whose clock is 20 minutes ahead', () => {
  /** Refuses, as S3 does, a request signed more than 15 minutes off: 403, with no body for HEAD. */
  async function skewedBackend() {
    const skewMs = 20 * 60_000
    const signedOffMinutes: number[] = []
    const server = await backend((req, res) => {
      const amzDate = String(req.headers['x-amz-date'])
      const signedAt = Date.parse(amzDate.replace(/(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z/, '$1-$2-$3T$4:$5:$6Z'))
      const now = Date.now() + skewMs
      signedOffMinutes.push(Math.round((now - signedAt) / 60_000))
      res.setHeader('date', new Date(now).toUTCString())
      if (Math.abs(now - signedAt) > 15 * 60_000) {
        res.statusCode = 403
        res.end()
        return
      }
      res.setHeader('etag', '"abc"')
      res.setHeader('content-length', '5')
      res.end(req.method === 'HEAD' ? undefined : 'hello')
    })
    return { ...server, signedOffMinutes }
  }

  it('signs a refused HEAD again with the backend time and succeeds, even with s3.max_attempts 1', async () => {
    const server = await skewedBackend()
    const source = new S3Source(connection(server.endpoint, { max_attempts: 1 }))
    try {
      const meta = await source.head('k', { signal: undefined })
      assert.equal(meta.size, 5)
      assert.deepEqual(server.signedOffMinutes, [20, 0])
      // Later requests are signed with the corrected clock from the start.
      await source.head('k', { signal: undefined })
      assert.deepEqual(server.signedOffMinutes, [20, 0, 0])
    } finally {
      source.close()
      server.close()
    }
  })

  it('reports the backend healthy to a health probe', async () => {
    const server = await skewedBackend()
    const source = new S3Source(connection(server.endpoint, { max_attempts: 1 }), { metrics: undefined, bucket: 'b', probeKey: 'k' })
    try {
      assert.equal(await source.probe(), true)
      assert.deepEqual(server.signedOffMinutes, [20, 0])
    } finally {
      source.close()
      server.close()
    }
  })
})

describe('a backend that streams a GET without Content-Length', () => {
  /** Like some S3-compatible gateways: GET bodies chunked, HEAD with the length. */
  async function chunkingBackend() {
    return backend((req, res) => {
      res.setHeader('etag', '"e1"')
      res.setHeader('content-type', 'text/plain')
      if (req.method === 'HEAD') {
        res.setHeader('content-length', '11')
        res.end()
        return
      }
      if (req.headers.range === 'bytes=0-3') {
        res.statusCode = 206
        res.setHeader('content-range', 'bytes 0-3/11')
        res.write('he')
        res.end('ll')
        return
      }
      res.write('hello ')
      res.end('world')
    })
  }

  it('answers 502 ORIGIN_BAD_RESPONSE, never an empty 200', async () => {
    const server = await chunkingBackend()
    const proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'chunky', prefix: '/c', bucket: 'chunky', endpoint: server.endpoint })}
`)
    try {
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${proxy.url}/c/obj.txt`)
        const body = (await res.json()) as { error: { code: string } }
        assert.equal(res.status, 502)
        assert.equal(body.error.code, 'ORIGIN_BAD_RESPONSE')
      }
    } finally {
      await proxy.stop()
      server.close()
    }
  })

  it('takes the size of a 206 from Content-Range', async () => {
    const server = await chunkingBackend()
    const source = new S3Source(connection(server.endpoint))
    try {
      const body = await source.get('obj.txt', { kind: 'bounded', start: 0, end: 3 }, { signal: undefined })
      assert.equal(body.meta.size, 11)
      assert.deepEqual(body.range, { start: 0, end: 3 })
      assert.equal(await new Response(body.stream).text(), 'hell')
    } finally {
      source.close()
      server.close()
    }
  })
})
