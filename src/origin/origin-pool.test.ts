// The origin connection pool and its bodies against real TCP servers: connections kept and reused
// (HEAD too), failures under Node's codes, the one resend of a dropped pooled connection, the
// connection limit and its queue, aborts, bodies cut mid-way, and back-pressure.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { after, describe, it } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { generate } from 'selfsigned'
import { freePort } from '../../test/support/http.ts'
import { objectMeta } from '../../test/support/meta.ts'
import { ProxyError } from '../errors.ts'
import { WatchedBody } from './body-stream.ts'
import type { OriginBody } from './origin-body.ts'
import { OriginPool, type OriginResponse } from './origin-pool.ts'
import { readBufferCounts } from './read-buffers.ts'
import { ConnectTimeoutError } from './s3-errors.ts'

interface Backend {
  origin: string
  connections(): number
  /** Bytes the backend managed to write so far (all connections). */
  written(): number
  close(): Promise<void>
}

/** A TCP server calling `onRequest` for every request head it reads (one request per write). */
async function backend(onRequest: (socket: net.Socket, head: string, nth: number) => void): Promise<Backend> {
  let count = 0
  let written = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    count++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    let nth = 0
    socket.on('data', (data: Buffer) => onRequest(socket, data.toString('latin1'), ++nth))
    const write = socket.write.bind(socket) as (chunk: string | Buffer, cb?: () => void) => boolean
    socket.write = ((chunk: string | Buffer, cb?: () => void) => {
      written += Buffer.byteLength(chunk)
      return write(chunk, cb)
    }) as typeof socket.write
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => count,
    written: () => written,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

const ok = (body: string, extra = '') => `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\nETag: "e"\r\n${extra}\r\n${body}`

const pools: OriginPool[] = []
const backends: Backend[] = []
after(async () => {
  for (const pool of pools) pool.close()
  await Promise.all(backends.map((b) => b.close()))
})

function poolFor(origin: string, maxConnections = 8, connectTimeoutMs = 2000, ca?: string): OriginPool {
  const pool = new OriginPool({ origin, maxConnections, connectTimeoutMs, ca })
  pools.push(pool)
  return pool
}

async function serving(onRequest: (socket: net.Socket, head: string, nth: number) => void): Promise<Backend> {
  const b = await backend(onRequest)
  backends.push(b)
  return b
}

const get = (pool: OriginPool, signal = new AbortController().signal, method: 'GET' | 'HEAD' = 'GET') =>
  pool.request(method, '/bucket/key', ['host', 'example'], signal)

/** An answer of `size` bytes of `fill`, written in 64 KiB pieces as fast as the socket takes them. */
function answerOf(size: number, fill: number): (socket: net.Socket) => void {
  return (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`)
    const piece = Buffer.alloc(64 * 1024, fill)
    let left = size
    const more = () => {
      while (left > 0) {
        left -= piece.length
        if (!socket.write(piece)) return void socket.once('drain', more)
      }
    }
    more()
  }
}

/** A backend answering with pieces of distinct bytes, written apart so that they come in separate reads. */
async function pieceByPiece(): Promise<{ whole: Buffer; b: Backend }> {
  const pieces = Array.from({ length: 6 }, (_, i) => Buffer.alloc(20_000, i + 1))
  const whole = Buffer.concat(pieces)
  const b = await serving(async (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${whole.length}\r\n\r\n`)
    for (const piece of pieces) {
      await new Promise<void>((resolve) => socket.write(piece, () => setTimeout(resolve, 5)))
    }
  })
  return { whole, b }
}

/** The body's chunks, each pulled as soon as it came. */
function pulled(body: OriginBody): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const drain = () => {
      for (let chunk = body.read(); chunk !== null; chunk = body.read()) chunks.push(chunk)
    }
    body.consume({ readable: drain, end: () => resolve(chunks), error: reject }, false)
    drain()
  })
}

/** The whole body, pulled. */
async function text(body: OriginBody): Promise<string> {
  return Buffer.concat(await pulled(body)).toString()
}

/** How a body ends when flowing: its bytes and its error, if any. */
function flowed(body: OriginBody): Promise<{ bytes: number; error?: Error }> {
  return new Promise((resolve) => {
    let bytes = 0
    body.consume({ data: (chunk) => (bytes += chunk.byteLength), end: () => resolve({ bytes }), error: (error) => resolve({ bytes, error }) }, true)
  })
}

describe('origin connections', () => {
  it('sends GET and HEAD over one kept connection, with the headers given', async () => {
    const heads: string[] = []
    const b = await serving((socket, head) => {
      heads.push(head)
      socket.write(head.startsWith('HEAD') ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n' : ok('hello'))
    })
    const pool = poolFor(b.origin)
    const first = await get(pool)
    assert.equal(first.statusCode, 200)
    assert.equal(first.headers.etag, '"e"')
    assert.equal(await text(first.body), 'hello')
    const head = await get(pool, undefined, 'HEAD')
    assert.equal(head.headers['content-length'], '5')
    assert.equal(await text(head.body), '')
    assert.equal(await text((await get(pool)).body), 'hello')
    assert.equal(b.connections(), 1)
    assert.match(heads[0] ?? '', /^GET \/bucket\/key HTTP\/1\.1\r\nhost: example\r\n/)
    assert.match(heads[1] ?? '', /^HEAD \/bucket\/key HTTP\/1\.1\r\nhost: example\r\nconnection: keep-alive\r\n/)
  })

  it('fails with ECONNREFUSED when nothing listens', async () => {
    const pool = poolFor(`http://127.0.0.1:${await freePort()}`)
    await assert.rejects(get(pool), { code: 'ECONNREFUSED' })
  })

  it('fails with ECONNRESET when the backend resets or closes before answering, and asks a new connection once', async () => {
    const resetting = await serving((socket) => socket.resetAndDestroy())
    await assert.rejects(get(poolFor(resetting.origin)), { code: 'ECONNRESET' })
    assert.equal(resetting.connections(), 1, 'a new connection failing is not sent again')
    const hangingUp = await serving((socket) => socket.end())
    await assert.rejects(get(poolFor(hangingUp.origin)), { code: 'ECONNRESET' })
    assert.equal(hangingUp.connections(), 1)
  })

  it('sends a request once more on a new connection when the pooled one was dropped', async () => {
    // Answers the first request on a connection, resets the connection on the second.
    const b = await serving((socket, _head, nth) => (nth === 1 ? socket.write(ok('one')) : socket.resetAndDestroy()))
    const pool = poolFor(b.origin)
    assert.equal(await text((await get(pool)).body), 'one')
    assert.equal(await text((await get(pool)).body), 'one')
    assert.equal(b.connections(), 2)
  })

  it('fails with ConnectTimeoutError when the connect does not complete in time', async () => {
    // A listener with backlog 0 that never accepts, its queue held full: further SYNs are dropped.
    const listener = spawn('/usr/bin/python3', ['-c', "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()"])
    const port = Number(String(await once(listener.stdout, 'data')).trim())
    const filler = net.connect(port, '127.0.0.1')
    await once(filler, 'connect')
    try {
      const started = Date.now()
      await assert.rejects(get(poolFor(`http://127.0.0.1:${port}`, 8, 300)), (err: unknown) => err instanceof ConnectTimeoutError)
      const elapsed = Date.now() - started
      assert.ok(elapsed >= 250 && elapsed < 3000, `failed after ${elapsed} ms`)
    } finally {
      filler.destroy()
      listener.kill()
    }
  })

  it('opens at most maxConnections; the others wait in order, and one that gives up leaves at once', async () => {
    const held: net.Socket[] = []
    const b = await serving((socket) => held.push(socket))
    const pool = poolFor(b.origin, 2)
    const answers: string[] = []
    const track = (p: Promise<OriginResponse>, name: string) => p.then(async (r) => answers.push(`${name}:${await text(r.body)}`))
    const first = track(get(pool), 'first')
    const second = track(get(pool), 'second')
    const leaving = new AbortController()
    const gaveUp = get(pool, leaving.signal)
    const third = track(get(pool), 'third')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(b.connections(), 2)
    leaving.abort(new Error('client gone'))
    await assert.rejects(gaveUp, /client gone/)
    ;(held.shift() as net.Socket).write(ok('a'))
    await first
    // The freed connection goes to the next waiting request (the third), not to the one that left.
    await new Promise((resolve) => setTimeout(resolve, 50))
    ;(held.pop() as net.Socket).write(ok('b'))
    await third
    ;(held.shift() as net.Socket).write(ok('c'))
    await second
    assert.deepEqual(answers, ['first:a', 'third:b', 'second:c'])
    assert.equal(b.connections(), 2)
  })

  it('rejects at once when aborted while the answer is awaited, and closes that connection', async () => {
    let closed = false
    const b = await serving((socket) => socket.once('close', () => (closed = true)))
    const controller = new AbortController()
    const pending = get(poolFor(b.origin), controller.signal)
    await new Promise((resolve) => setTimeout(resolve, 50))
    controller.abort(new Error('deadline'))
    await assert.rejects(pending, /deadline/)
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.ok(closed)
  })
})

describe('origin answer deadlines', () => {
  it('gives up with a HeadersTimeoutError when no answer comes in time, and closes that connection', async () => {
    let closed = false
    const b = await serving((socket) => socket.once('close', () => (closed = true)))
    const started = Date.now()
    await assert.rejects(poolFor(b.origin).request('GET', '/bucket/key', ['host', 'example'], undefined, 300), { name: 'HeadersTimeoutError' })
    const elapsed = Date.now() - started
    assert.ok(elapsed >= 250 && elapsed < 3000, `gave up after ${elapsed} ms`)
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('the connection was not closed')), 5000)
      const check = setInterval(() => {
        if (!closed) return
        clearInterval(check)
        clearTimeout(deadline)
        resolve()
      }, 10)
    })
  })
})

describe('origin bodies', () => {
  it('fails a body the backend cuts mid-way, and the next request gets a new connection', async () => {
    const b = await serving((socket, _head, nth) => {
      if (nth > 1 || b.connections() > 1) return void socket.write(ok('fine'))
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
      socket.write(Buffer.alloc(1000))
      setTimeout(() => socket.destroy(), 20)
    })
    const pool = poolFor(b.origin)
    const cut = await get(pool)
    const { bytes, error } = await flowed(cut.body)
    assert.equal(bytes, 1000)
    assert.ok(error !== undefined, 'the body failed rather than ended')
    assert.equal(await text((await get(pool)).body), 'fine')
    assert.equal(b.connections(), 2)
  })

  it('stops reading from the backend while the consumer holds back, and resumes after', async () => {
    const size = 64 * 1024 * 1024
    const b = await serving(answerOf(size, 7))
    const response = await get(poolFor(b.origin))
    let received = 0
    let holding = true
    let done: () => void = () => undefined
    const ended = new Promise<void>((resolve) => (done = resolve))
    response.body.consume(
      {
        data(chunk) {
          received += chunk.byteLength
          if (holding) response.body.pause()
        },
        end: done,
        error: (err) => assert.fail(err),
      },
      true
    )
    await new Promise((resolve) => setTimeout(resolve, 300))
    // Paused after the first chunk: only socket buffers' worth went out, never the whole object.
    assert.ok(b.written() < size / 2, `the backend wrote ${b.written()} bytes`)
    const seen = received
    holding = false
    response.body.resume()
    await ended
    assert.ok(seen < received)
    assert.equal(received, size)
  })

  it('keeps the bytes of chunks waiting to be read while the connection reads on', async () => {
    // A chunk kept as a view of its read's buffer would show the bytes of a later read.
    const { whole, b } = await pieceByPiece()
    const response = await get(poolFor(b.origin))
    // Nothing reads until every byte arrived.
    const deadline = Date.now() + 30_000
    while (!response.body.complete) {
      assert.ok(Date.now() < deadline, 'the body never arrived whole')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    const chunks: Buffer[] = []
    for (let chunk = response.body.read(); chunk !== null; chunk = response.body.read()) chunks.push(chunk)
    assert.ok(chunks.length > 1, 'the body came in several reads')
    assert.ok(Buffer.concat(chunks).equals(whole))
  })

  it('keeps the bytes of chunks already read while the connection reads on', async () => {
    // Each pulled as soon as it came: a read chunk whose buffer the connection read into again
    // would show a later piece.
    const { whole, b } = await pieceByPiece()
    const chunks = await pulled((await get(poolFor(b.origin))).body)
    assert.ok(chunks.length > 1, 'the body came in several reads')
    assert.ok(Buffer.concat(chunks).equals(whole))
  })

  it('takes a body that arrived whole as bytes of its own, and leaves one still arriving alone', async () => {
    // Pieces written apart (separate reads, each lent), of other bytes for each request.
    const answer = (nth: number) => Buffer.concat(Array.from({ length: 6 }, (_, i) => Buffer.alloc(20_000, nth * 10 + i)))
    const b = await serving(async (socket, _head, nth) => {
      const whole = answer(nth)
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${whole.length}\r\n\r\n`)
      for (let at = 0; at < whole.length; at += 20_000) {
        await new Promise<void>((resolve) => socket.write(whole.subarray(at, at + 20_000), () => setTimeout(resolve, 5)))
      }
    })
    const pool = poolFor(b.origin, 1)
    const response = await get(pool)
    const body = () => new WatchedBody(response.body, objectMeta({ size: answer(1).length }), undefined, 30_000, undefined)
    assert.equal(body().whole(), undefined, 'not yet complete: nothing taken')
    const deadline = Date.now() + 30_000
    while (!response.body.complete) {
      assert.ok(Date.now() < deadline, 'the body never arrived whole')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    const watched = body()
    const taken = watched.whole()
    assert.ok(taken !== undefined && taken.equals(answer(1)))
    // Nothing is left to pipe or to stream (an end would pass for an empty body).
    assert.equal(watched.pipe({} as http.ServerResponse), undefined)
    await assert.rejects(watched.stream.getReader().read(), (err) => err instanceof ProxyError && err.reason === 'origin body already taken')
    // The same connection reads the next answer into the buffers the first one was read into.
    const next = await pulled((await get(pool)).body)
    assert.ok(Buffer.concat(next).equals(answer(2)))
    assert.ok(taken.equals(answer(1)), 'the taken bytes are a copy')
    assert.equal(b.connections(), 1)
  })

  it('lets a tap see every byte a web-stream reader reads, then the end; or the failure of a cut body', async () => {
    const { whole, b } = await pieceByPiece()
    const heard: string[] = []
    const copies: Buffer[] = []
    const tap = {
      chunk: (bytes: Uint8Array) => void copies.push(Buffer.from(bytes)),
      end: () => void heard.push('end'),
      fail: (e: Error) => void heard.push(`fail ${e.message}`),
    }
    const watched = new WatchedBody((await get(poolFor(b.origin))).body, objectMeta({ size: whole.length }), undefined, 30_000, undefined)
    watched.tap(tap)
    assert.throws(() => watched.tap(tap), /tapped once/)
    const read = Buffer.from(await new Response(watched.stream).arrayBuffer())
    assert.ok(read.equals(whole))
    assert.ok(copies.length > 1, 'the body came in several reads')
    assert.ok(Buffer.concat(copies).equals(whole))
    assert.deepEqual(heard, ['end'])

    const cutter = await serving((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
      socket.write(Buffer.alloc(1000, 3))
      setTimeout(() => socket.destroy(), 20)
    })
    heard.length = 0
    const cut = new WatchedBody((await get(poolFor(cutter.origin))).body, objectMeta({ size: 100_000 }), undefined, 30_000, undefined)
    cut.tap(tap)
    await assert.rejects(new Response(cut.stream).arrayBuffer())
    assert.equal(heard.length, 1)
    assert.match(heard[0] ?? '', /^fail /)
  })

  it('drains a body into a sink at the pace it takes it: every byte lent in order, the tap too; false cancels; a failing sink fails it', async () => {
    const { whole, b } = await pieceByPiece()
    const copies: Buffer[] = []
    const tapped: Buffer[] = []
    const watched = new WatchedBody((await get(poolFor(b.origin))).body, objectMeta({ size: whole.length }), undefined, 30_000, undefined)
    watched.tap({ chunk: (bytes) => void tapped.push(Buffer.from(bytes)), end: () => {}, fail: () => {} })
    // Every other piece is taken after a pause (a disk busy with the last write).
    let pieces = 0
    const complete = await watched.drainInto((chunk) => {
      copies.push(Buffer.from(chunk))
      return pieces++ % 2 === 0 ? true : new Promise((resolve) => setTimeout(() => resolve(true), 10))
    })
    assert.equal(complete, true)
    assert.ok(Buffer.concat(copies).equals(whole))
    assert.ok(Buffer.concat(tapped).equals(whole))
    assert.equal(watched.bytesSent(), whole.length)
    await assert.rejects(watched.drainInto(() => true), (err) => err instanceof ProxyError && err.reason === 'origin body already taken')

    const stopped = new WatchedBody((await get(poolFor((await pieceByPiece()).b.origin))).body, objectMeta({ size: whole.length }), undefined, 30_000, undefined)
    assert.equal(await stopped.drainInto(() => Promise.resolve(false)), false, 'the sink stopped it')

    const failing = new WatchedBody((await get(poolFor((await pieceByPiece()).b.origin))).body, objectMeta({ size: whole.length }), undefined, 30_000, undefined)
    await assert.rejects(failing.drainInto(() => Promise.reject(new Error('the disk broke'))), (err) => err instanceof ProxyError && err.code === 'ORIGIN_ERROR')
  })

  it('holds the backend back while a tap holds too much, piped or streamed, and goes on when it settles', async () => {
    const size = 64 * 1024 * 1024
    for (const mode of ['piped', 'streamed'] as const) {
      const b = await serving(answerOf(size, 7))
      let seen = 0
      let sevens = true
      const heard: string[] = []
      const waiting = Promise.withResolvers<void>()
      const held = Promise.withResolvers<void>()
      const watched = new WatchedBody((await get(poolFor(b.origin))).body, objectMeta({ size }), undefined, 30_000, undefined)
      watched.tap({
        chunk(bytes) {
          seen += bytes.byteLength
          sevens &&= bytes.every((byte) => byte === 7)
          if (seen < size / 4) return undefined
          held.resolve()
          return waiting.promise
        },
        end: () => void heard.push('end'),
        fail: (error) => void heard.push(`fail ${error.message}`),
      })
      const server = http.createServer((_req, res) => {
        res.writeHead(200, { 'content-length': size })
        if (mode === 'piped') watched.pipe(res)
        else void watched.stream.pipeTo(new WritableStream({ write: (chunk) => void res.write(chunk), close: () => void res.end() }))
      })
      try {
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
        const received = fetch(url).then(async (res) => (await res.arrayBuffer()).byteLength)
        await held.promise
        // Nothing to wait for: the test is that nothing happens. Held after a quarter, the backend
        // wrote only socket buffers' worth more, never the rest.
        await new Promise((resolve) => setTimeout(resolve, 300))
        assert.ok(b.written() < size / 2, `${mode}: the backend wrote ${b.written()} bytes while the tap held (seen ${seen})`)
        waiting.resolve()
        assert.equal(await received, size, mode)
        assert.equal(seen, size, mode)
        assert.ok(sevens, `${mode}: the tap saw the body's bytes`)
        assert.deepEqual(heard, ['end'], mode)
      } finally {
        waiting.resolve()
        server.closeAllConnections()
        server.close()
      }
    }
  })

  it('reads into a few pooled buffers again and again, however large the body', async () => {
    const size = 8 * 1024 * 1024
    const b = await serving(answerOf(size, 9))
    const before = readBufferCounts()
    const response = await get(poolFor(b.origin))
    let received = 0
    let lent = 0
    await new Promise<void>((resolve, reject) => {
      response.body.consume(
        {
          // As the client's response does: the chunk is held until its write is done, which Node
          // reports on the next tick.
          data(chunk, from) {
            received += chunk.byteLength
            if (from === undefined || chunk[0] !== 9) return
            lent++
            from.hold()
            process.nextTick(from.release)
          },
          end: resolve,
          error: reject,
        },
        true
      )
    })
    assert.equal(received, size)
    assert.ok(lent > 0, 'large reads are lent')
    const after = readBufferCounts()
    assert.ok(after.allocated - before.allocated <= 4, `${after.allocated - before.allocated} buffers for ${size / 65536} reads' worth`)
    assert.equal(after.held, before.held)
  })

  it('copies out small reads instead of lending their buffers', async () => {
    // Under 16 KiB in all, so that no read of it can be large whatever the timing.
    const pieces = Array.from({ length: 10 }, (_, i) => Buffer.alloc(1000, i + 1))
    const b = await serving(async (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${pieces.length * 1000}\r\n\r\n`)
      for (const piece of pieces) await new Promise<void>((resolve) => socket.write(piece, () => setTimeout(resolve, 2)))
    })
    const response = await get(poolFor(b.origin))
    const chunks: Buffer[] = []
    let lent = 0
    await new Promise<void>((resolve, reject) => {
      response.body.consume({ data: (chunk, from) => (chunks.push(chunk), from !== undefined && lent++), end: resolve, error: reject }, true)
    })
    assert.equal(lent, 0)
    assert.ok(Buffer.concat(chunks).equals(Buffer.concat(pieces)))
  })

  it('reads a body that runs until the origin closes the connection, flowing or pulled', async () => {
    const body = Buffer.alloc(300_000, 5)
    const b = await serving((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')
      socket.end(body)
    })
    const pool = poolFor(b.origin)
    const flowing = await flowed((await get(pool)).body)
    assert.deepEqual(flowing, { bytes: body.length })
    assert.equal((await text((await get(pool)).body)).length, body.length)
    assert.equal(b.connections(), 2)
  })

  it('holds a small body whole until it is read, and a destroyed complete body keeps its connection', async () => {
    const b = await serving((socket) => socket.write(ok('x'.repeat(3000))))
    const pool = poolFor(b.origin)
    const response = await get(pool)
    assert.ok(response.body.complete)
    response.body.destroy()
    assert.equal((await text((await get(pool)).body)).length, 3000)
    assert.equal(b.connections(), 1)
  })
})

describe('origin answers as servers frame them', () => {
  it('reads a chunked body from node:http and keeps the connection for the next request', async () => {
    const server = http.createServer((_req, res) => {
      res.write('first ')
      setImmediate(() => res.end('second'))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    let connections = 0
    server.on('connection', () => connections++)
    try {
      const pool = poolFor(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
      const first = await get(pool)
      assert.equal(first.headers['transfer-encoding'], 'chunked')
      assert.equal(await text(first.body), 'first second')
      assert.equal(await text((await get(pool)).body), 'first second')
      assert.equal(connections, 1)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it('speaks TLS to an https origin, with SNI, and keeps the connection', async () => {
    const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec',
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] }],
    })
    const names: (string | false | null)[] = []
    const server = https.createServer({ cert: pems.cert, key: pems.private }, (req, res) => res.end(`over tls: ${req.url}`))
    server.on('secureConnection', (socket: TLSSocket) => names.push(socket.servername))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as AddressInfo).port
      const pool = poolFor(`https://localhost:${port}`, 8, 2000, pems.cert)
      assert.equal(await text((await get(pool)).body), 'over tls: /bucket/key')
      assert.equal(await text((await get(pool)).body), 'over tls: /bucket/key')
      assert.deepEqual(names, ['localhost'])
      // Two at once: the second connection resumes the session the first one got.
      const reused: boolean[] = []
      server.on('secureConnection', (socket: TLSSocket) => reused.push(socket.isSessionReused()))
      await Promise.all([get(pool), get(pool)].map(async (answer) => text((await answer).body)))
      assert.deepEqual(reused, [true])
      // Without the certificate's issuer trusted, nothing is sent.
      await assert.rejects(get(poolFor(`https://localhost:${port}`)), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it("closes an idle connection before the origin's Keep-Alive timeout runs out", async () => {
    let closedAt = 0
    const b = await serving((socket) => {
      socket.once('close', () => (closedAt = Date.now()))
      socket.write(ok('x', 'Keep-Alive: timeout=2\r\n'))
    })
    const pool = poolFor(b.origin)
    assert.equal(await text((await get(pool)).body), 'x')
    const answeredAt = Date.now()
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('the idle connection was not closed within 5 s')), 5000)
      const check = setInterval(() => {
        if (closedAt === 0) return
        clearInterval(check)
        clearTimeout(deadline)
        resolve()
      }, 20)
    })
    // Meant for one second before the origin's two: never early, and before the origin closes it.
    const idleFor = closedAt - answeredAt
    assert.ok(idleFor >= 900 && idleFor < 2000, `closed after ${idleFor} ms`)
  })

  it('sends nothing when a target or header value would break its line, as sent in latin1 too', async () => {
    let requests = 0
    const b = await serving(() => requests++)
    const pool = poolFor(b.origin)
    const refused = [
      { target: '/bucket/key', value: 'bytes=0-1\r\nx-evil: 1' },
      // U+010D and U+010A are sent as their low bytes: CR and LF.
      { target: '/bucket/key', value: '"e"\u010d\u010ax-evil: 1' },
      { target: '/bucket/key HTTP/1.1\r\nx-evil: 1\r\n\r\nGET /other', value: 'bytes=0-1' },
      { target: '/bucket/\u010d\u010a', value: 'bytes=0-1' },
    ]
    for (const { target, value } of refused) {
      const request = pool.request('GET', target, ['host', 'example', 'range', value], new AbortController().signal)
      await assert.rejects(request, /does not allow/)
    }
    assert.equal(requests, 0)
  })

  it('never answers a request started from inside the previous answer with that answer’s leftover bytes', async () => {
    // The first connection's answer is followed by a forged second answer in the same write.
    const b = await serving((socket, head) => {
      const forged = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL'
      socket.write(b.connections() === 1 ? `${ok('one')}${forged}` : ok(head.split(' ')[1] ?? ''))
    })
    const pool = poolFor(b.origin, 1)
    const first = await pool.request('GET', '/one', ['host', 'example'], new AbortController().signal)
    let second: Promise<OriginResponse> | undefined
    await new Promise<void>((resolve, reject) => {
      first.body.consume({ end: () => resolve(void (second = pool.request('GET', '/two', ['host', 'example'], new AbortController().signal))), error: reject }, true)
    })
    assert.equal(await text(await (second as Promise<OriginResponse>).then((r) => r.body)), '/two')
    assert.equal(b.connections(), 2)
  })

  it('does not reuse a connection that answered with bytes after its end, or with a broken answer', async () => {
    // By connection: the first answers with bytes after its end, the second breaks, the rest are fine.
    const answers = [`${ok('one')}trailing garbage`, 'HTTP/1.1 OK\r\n\r\n']
    const b = await serving((socket) => socket.write(answers[b.connections() - 1] ?? ok('again')))
    const pool = poolFor(b.origin)
    assert.equal(await text((await get(pool)).body), 'one')
    await assert.rejects(get(pool), { name: 'OriginProtocolError' })
    assert.equal(await text((await get(pool)).body), 'again')
    assert.equal(b.connections(), 3)
  })
})
