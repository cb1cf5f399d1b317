// Large objects stream through the proxy with back-pressure: never buffered whole, aborted at the
// backend when the client leaves, cut (never cleanly ended) when the backend stalls, and finished
// during a graceful shutdown.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const SIZE = 50 * 1024 * 1024
let big: Buffer
let bigSha: string
let s3: TestS3
let proxy: TestProxy

before(async () => {
  big = randomBytes(SIZE)
  bigSha = createHash('sha256').update(big).digest('hex')
  s3 = await startS3()
  await s3.createBucket('media')
  await s3.put('media', 'big.bin', big, { ContentType: 'application/octet-stream' })
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'media', endpoint: s3.endpoint })}
${bucketYaml({ name: 'quick', prefix: '/quick', bucket: 'media', endpoint: s3.endpoint }).replace('timeout: 2', 'timeout: 1')}
`)
})

after(async () => {
  await proxy?.stop()
  await s3?.stop()
})

/** Opens a GET and resolves with the response once headers arrive; the body is not consumed. */
function open(path: string, base = proxy.url): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
  const url = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.get({ host: url.hostname, port: url.port, path, agent: false }, (res) => resolve({ req, res }))
    req.on('error', reject)
  })
}

/** Reads the rest of a response; rejects if the connection is cut before the declared length. */
function readAll(res: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const hash: Buffer[] = []
    res.on('data', (chunk: Buffer) => hash.push(chunk))
    res.on('end', () => (res.complete ? resolve(Buffer.concat(hash)) : reject(new Error('truncated'))))
    res.on('error', reject)
    res.on('aborted', () => reject(new Error('aborted')))
  })
}

function sha256(buffer: Buffer): string {
  return createHash('sha256').update(buffer).digest('hex')
}

/** Resolves when `read()` has returned the same value `times` polls in a row. */
async function settled(read: () => number, times = 5): Promise<number> {
  let last = -1
  let same = 0
  for (let i = 0; i < 200 && same < times; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const now = read()
    same = now === last ? same + 1 : 0
    last = now
  }
  return last
}

describe('streaming', () => {
  it('serves a 50 MiB object whose SHA-256 matches the source', async () => {
    const { res } = await open('/media/big.bin')
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], String(SIZE))
    assert.equal(sha256(await readAll(res)), bigSha)
  })

  it('does not buffer the object for a client that stops reading', async () => {
    const HUGE = 160 * 1024 * 1024
    await s3.put('media', 'huge.bin', Buffer.alloc(HUGE, 'y'))
    const { req, res } = await open('/media/huge.bin')
    res.pause()
    // The object's GET, not whatever reached S3 last (a background readiness probe is a HEAD).
    const upstream = s3.getsOf('media', 'huge.bin').at(-1)
    assert.ok(upstream !== undefined)
    const sent = await settled(() => upstream.bytes)
    // Loopback sockets autotune their kernel buffers to several MiB on each hop (up to ~30 MiB in
    // all was seen here); what must not happen is the proxy pulling the object into memory.
    assert.ok(sent < 64 * 1024 * 1024, `the backend sent ${sent} bytes to a paused client`)
    req.destroy()
    assert.equal(await upstream.outcome, 'aborted')
  })

  it('aborts the backend request when the client disconnects mid-download', async () => {
    const { req, res } = await open('/media/big.bin')
    const upstream = s3.getsOf('media', 'big.bin').at(-1)
    assert.ok(upstream !== undefined)
    await new Promise((resolve) => res.once('data', resolve))
    req.destroy()
    assert.equal(await upstream.outcome, 'aborted')
  })

  it('keeps a slow reader’s download alive past s3.timeout (back-pressure is not a stall)', async () => {
    const { res } = await open('/quick/big.bin')
    res.pause()
    await new Promise((resolve) => setTimeout(resolve, 1500))
    res.resume()
    assert.equal(sha256(await readAll(res)), bigSha)
  })

  it('cuts the connection when the backend stalls mid-body longer than s3.timeout', async () => {
    s3.stallNextGet(1024 * 1024)
    const started = Date.now()
    const { res } = await open('/quick/big.bin')
    assert.equal(res.statusCode, 200)
    await assert.rejects(readAll(res), /truncated|aborted|ECONNRESET/)
    const elapsed = Date.now() - started
    assert.ok(elapsed >= 900 && elapsed < 5000, `cut after ${elapsed} ms`)
    assert.equal(await s3.getsOf('media', 'big.bin').at(-1)?.outcome, 'aborted')
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/quick/big.bin' && l.error !== undefined)
    assert.equal(line?.error, 'ORIGIN_TIMEOUT')
    assert.equal(line?.reason, 'body_stalled')
    assert.equal(line?.complete, false)
  })

  it('finishes a download in flight during graceful shutdown, then refuses new connections', async () => {
    const own = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'media', endpoint: s3.endpoint })}
`)
    const { res } = await open('/media/big.bin', own.url)
    const body = readAll(res)
    const stopped = own.proxy.shutdown(10_000)
    await assert.rejects(open('/media/big.bin', own.url), /ECONNREFUSED/)
    assert.equal(sha256(await body), bigSha)
    await stopped
    await own.stop()
  })
})
