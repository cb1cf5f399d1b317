// Exchange.respond against a real node:http server and client: streamed bodies follow the client
// and stop when it leaves; an answer Node refuses to write leaves nothing behind.
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, it } from 'node:test'
import { StampedResponse } from '../http/stamped-response.ts'
import { Exchange } from './exchange.ts'

type Handler = (x: Exchange) => void
let handler: Handler = () => {}
let server: http.Server
let base: string

before(async () => {
  server = http.createServer({ ServerResponse: StampedResponse }, (req, res) => {
    const x = new Exchange(req, res)
    res.once('close', () => x.close())
    handler(x)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

after(() => new Promise<void>((resolve) => server.close(() => resolve())))

/** An endless body of 64 KiB chunks; `cancelled` settles when the reader gives up on it. */
function endlessBody(): { body: ReadableStream<Uint8Array>; cancelled: Promise<void>; pulls: () => number } {
  let pulls = 0
  let onCancel!: () => void
  const cancelled = new Promise<void>((resolve) => (onCancel = resolve))
  const body = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        pulls++
        controller.enqueue(new Uint8Array(64 * 1024))
      },
      cancel: () => onCancel(),
    },
    { highWaterMark: 0 }
  )
  return { body, cancelled, pulls: () => pulls }
}

it('streams at the client pace and cancels the body when the client leaves mid-way', async () => {
  const stream = endlessBody()
  handler = (x) => x.respond({ status: 200, headers: { 'content-type': 'application/octet-stream' }, body: stream.body })
  const received = await new Promise<number>((resolve, reject) => {
    const req = http.get(`${base}/endless`, (res) => {
      let bytes = 0
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        if (bytes >= 1024 * 1024) {
          req.destroy()
          resolve(bytes)
        }
      })
    })
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)))
  })
  assert.ok(received >= 1024 * 1024)
  await stream.cancelled
  const pulledAtCancel = stream.pulls()
  // Back-pressure: the server read about what the client took, not an unbounded amount.
  assert.ok(pulledAtCancel * 64 * 1024 < received + 16 * 1024 * 1024, `pulled ${pulledAtCancel} chunks for ${received} bytes`)
})

it('refuses an answer Node will not write with nothing sent, its body cancelled and its headers gone', async () => {
  const stream = endlessBody()
  let refusal: unknown
  handler = (x) => {
    x.outgoing.setHeader('x-served-by', 'replica-a')
    try {
      x.respond({ status: 200, headers: { 'content-type': 'text/plain', 'x-meta': 'caf\u0100' }, body: stream.body })
    } catch (err) {
      refusal = err
      x.respond({ status: 500, headers: { 'content-type': 'application/json', 'content-length': '2' }, body: '{}' })
    }
  }
  const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${base}/bad-header`, resolve))
  res.resume()
  assert.equal(res.statusCode, 500)
  assert.equal(res.headers['x-served-by'], undefined)
  assert.equal(res.headers['x-meta'], undefined)
  assert.ok(refusal instanceof Error)
  await stream.cancelled
})
