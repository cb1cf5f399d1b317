// The HTTP/1.1 response reader on bytes as sockets deliver them: split anywhere, framed each way
// S3-compatible origins answer (Content-Length, chunked, until close), and every framing error
// refused rather than guessed at.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OriginProtocolError, ResponseReader, type OriginHeaders } from './http1-response.ts'

interface Heard {
  status?: number
  headers?: OriginHeaders
  chunks: Buffer[]
  ended: boolean
}

function reading(noBody = false): { reader: ResponseReader; heard: Heard } {
  const heard: Heard = { chunks: [], ended: false }
  const reader = new ResponseReader()
  reader.start(
    {
      head: (status, headers) => Object.assign(heard, { status, headers }),
      data: (chunk) => heard.chunks.push(chunk),
      end: () => (heard.ended = true),
    },
    noBody
  )
  return { reader, heard }
}

/** Feeds `bytes` in pieces of `size` bytes. */
function feedIn(reader: ResponseReader, bytes: Buffer, size: number): void {
  for (let at = 0; at < bytes.length; at += size) reader.feed(bytes.subarray(at, at + size))
}

const body = (heard: Heard) => Buffer.concat(heard.chunks).toString()

describe('reading an answer framed by Content-Length', () => {
  const answer = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag:  "abc" \r\nX-Amz-Meta-A: 1\r\nx-amz-meta-a: 2\r\n\r\nhello world')

  it('reads it split at any byte, with names lower-cased, values trimmed and repeats listed', () => {
    for (let size = 1; size <= answer.length; size++) {
      const { reader, heard } = reading()
      feedIn(reader, answer, size)
      assert.equal(heard.status, 200)
      assert.deepEqual({ ...heard.headers }, { 'content-length': '11', etag: '"abc"', 'x-amz-meta-a': ['1', '2'] })
      assert.equal(body(heard), 'hello world', `pieces of ${size}`)
      assert.ok(heard.ended)
      assert.ok(reader.keepAlive)
      // Done with it: a byte more belongs to no answer.
      assert.throws(() => reader.feed(Buffer.from('x')), OriginProtocolError)
    }
  })

  it('hands body bytes on as views of the reads, not copies', () => {
    const { reader, heard } = reading()
    const read = Buffer.from(answer)
    reader.feed(read)
    assert.equal(heard.chunks.length, 1)
    assert.equal(heard.chunks[0]?.buffer, read.buffer)
  })

  it('reads no body after HEAD, a 204 or a 304, and skips interim 1xx answers', () => {
    const head = reading(true)
    head.reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n'))
    assert.ok(head.heard.ended)
    assert.equal(head.heard.chunks.length, 0)
    for (const status of [204, 304]) {
      const { reader, heard } = reading()
      reader.feed(Buffer.from(`HTTP/1.1 ${status} X\r\nContent-Length: 10\r\n\r\n`))
      assert.ok(heard.ended)
    }
    const { reader, heard } = reading()
    reader.feed(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno'))
    assert.equal(heard.status, 404)
    assert.equal(body(heard), 'no')
  })

  it('reads a head of 60 KiB arriving a few bytes at a time, and headers named like Object members', () => {
    const { reader, heard } = reading()
    const head = Buffer.from(`HTTP/1.1 200 OK\r\nConstructor: c\r\ntoString: t\r\nX-Big: ${'a'.repeat(60 * 1024)}\r\nContent-Length: 2\r\n\r\nok`)
    feedIn(reader, head, 7)
    assert.equal(heard.headers?.constructor, 'c')
    assert.equal(heard.headers?.tostring, 't')
    assert.equal((heard.headers?.['x-big'] as string).length, 60 * 1024)
    assert.equal(body(heard), 'ok')
    assert.ok(heard.ended)
  })

  it('keeps the connection unless the answer closes it, and reads the origin’s keep-alive timeout', () => {
    const closing = reading()
    closing.reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n'))
    assert.equal(closing.reader.keepAlive, false)
    const old = reading()
    old.reader.feed(Buffer.from('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n'))
    assert.equal(old.reader.keepAlive, false)
    const hinted = reading()
    hinted.reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n'))
    assert.ok(hinted.reader.keepAlive)
    assert.equal(hinted.reader.keepAliveHintMs, 5000)
  })

  it('reports a body cut short by the close, and ends one that runs to the close', () => {
    const cut = reading()
    cut.reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'))
    assert.equal(cut.reader.close(), false)
    assert.equal(cut.heard.ended, false)
    const open = reading()
    open.reader.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\nabc'))
    open.reader.feed(Buffer.from('def'))
    assert.equal(open.reader.keepAlive, false)
    assert.equal(open.reader.close(), true)
    assert.equal(body(open.heard), 'abcdef')
    assert.ok(open.heard.ended)
  })
})

describe('reading a chunked answer', () => {
  const answer = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n')

  it('joins its chunks split at any byte, drops trailers, and keeps the connection', () => {
    for (let size = 1; size <= answer.length; size++) {
      const { reader, heard } = reading()
      feedIn(reader, answer, size)
      assert.equal(body(heard), 'hello 0123456789', `pieces of ${size}`)
      assert.ok(heard.ended)
      assert.ok(reader.keepAlive)
    }
  })

  it('reads a body whose last coding is not chunked to the close, without trusting the connection again', () => {
    const { reader, heard } = reading()
    reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc'))
    assert.equal(reader.keepAlive, false)
    assert.equal(reader.close(), true)
    assert.equal(body(heard), '3\r\nabc')
  })

  it('prefers chunked to a Content-Length beside it, and then does not trust the connection again', () => {
    const { reader, heard } = reading()
    reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'))
    assert.equal(body(heard), 'ok')
    assert.ok(heard.ended)
    assert.equal(reader.keepAlive, false)
  })
})

describe('refusing what breaks the framing', () => {
  const refused = (text: string) => {
    const { reader } = reading()
    assert.throws(() => reader.feed(Buffer.from(text)), OriginProtocolError, JSON.stringify(text))
  }

  it('refuses bad status lines, header lines, lengths and chunk sizes', () => {
    refused('HTTP/2 200 OK\r\n\r\n')
    refused('HTTP/1.1 20 OK\r\n\r\n')
    refused('ICY 200 OK\r\n\r\n')
    refused('HTTP/1.1 101 Switching Protocols\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nno colon\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx')
    refused('HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nX-A: a\nb\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n')
    refused('HTTP/1.1 2x0 OK\r\n\r\n')
    refused('HTTP/1.1 2000 OK\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n')
    refused('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx')
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n')
  })

  it('refuses trailers over 64 KiB', () => {
    const { reader } = reading()
    reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n'))
    const trailer = Buffer.from(`X-T: ${'t'.repeat(1000)}\r\n`)
    assert.throws(() => {
      for (let i = 0; i < 100; i++) reader.feed(trailer)
    }, OriginProtocolError)
  })

  it('refuses a head over 64 KiB, even when it comes in small reads', () => {
    const { reader } = reading()
    reader.feed(Buffer.from('HTTP/1.1 200 OK\r\n'))
    const line = Buffer.from(`X-Big: ${'a'.repeat(1000)}\r\n`)
    assert.throws(() => {
      for (let i = 0; i < 100; i++) reader.feed(line)
    }, OriginProtocolError)
  })

  it('refuses bytes when no answer is expected, and ends an answer followed by bytes without trusting the connection', () => {
    const idle = new ResponseReader()
    assert.throws(() => idle.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), OriginProtocolError)
    const { reader, heard } = reading()
    reader.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n'))
    assert.equal(body(heard), 'ok')
    assert.ok(heard.ended)
    assert.equal(reader.keepAlive, false)
  })
})
