// How origin failures reach the client: a backend that resets or drops connections is unreachable
// (502), only a backend that says nothing in time is a timeout (504), server errors are retried
// `s3.max_attempts` times, and a client that leaves stops the origin request. The hostile backends
// are tiny TCP servers; everything else is s3rver behind the SigV4-verifying layer.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

interface Hostile {
  endpoint: string
  connections(): number
  /** The next connection the proxy opens. */
  nextConnection(): Promise<net.Socket>
  close(): Promise<void>
}

/** A TCP server that does `onConnection` to every connection, counting them. */
async function hostile(onConnection: (socket: net.Socket) => void): Promise<Hostile> {
  let count = 0
  const sockets = new Set<net.Socket>()
  const waiting: Array<(socket: net.Socket) => void> = []
  const server = net.createServer((socket) => {
    count++
    sockets.add(socket)
    waiting.shift()?.(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    onConnection(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => count,
    nextConnection: () => new Promise((resolve) => waiting.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/**
 * A port whose accept queue is full: a listener with backlog 0 that never accepts, holding one
 * queued connection, so the kernel drops every further SYN and a connect hangs. (Node accepts
 * every connection itself, so the listener is a few lines of Python.)
 */
async function unconnectable(): Promise<{ endpoint: string; stop(): void }> {
  const listener = spawn('/usr/bin/python3', [
    '-c',
    "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()",
  ])
  const port = Number(String(await once(listener.stdout, 'data')).trim())
  const filler = net.connect(port, '127.0.0.1')
  await once(filler, 'connect')
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop() {
      filler.destroy()
      ;(listener as ChildProcess).kill()
    },
  }
}

const BIG = 8 * 1024 * 1024

let s3: TestS3
let proxy: TestProxy
/** Answers every connection with a TCP reset. */
let resetting: Hostile
/** Reads the request, then closes the connection without a word ("socket hang up"). */
let hangingUp: Hostile
/** Reads the request and never answers. */
let silent: Hostile
/** Answers 500 with an error body it never finishes. */
let stallingError: Hostile
let full: Awaited<ReturnType<typeof unconnectable>>
/** Answers the first request on a connection, and resets the connection on the next one. */
let oneShot: Hostile
/** Announces a 1 MiB body, sends 64 KiB of it, then closes the connection. */
let cutting: Hostile
const CUT_AT = 64 * 1024

before(async () => {
  s3 = await startS3()
  await s3.createBucket('errors')
  await s3.put('errors', 'a.txt', 'fine')
  await s3.put('errors', 'big.bin', Buffer.alloc(BIG, 1))
  resetting = await hostile((socket) => socket.resetAndDestroy())
  hangingUp = await hostile((socket) => socket.once('data', () => socket.end()))
  silent = await hostile((socket) => socket.resume())
  stallingError = await hostile((socket) => {
    socket.once('data', () => socket.write('HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: 1000\r\n\r\n<Error><Co'))
  })
  full = await unconnectable()
  oneShot = await hostile((socket) => {
    let answered = false
    socket.on('data', () => {
      if (answered) return socket.resetAndDestroy()
      answered = true
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nETag: "one"\r\nConnection: keep-alive\r\n\r\nok')
    })
  })
  cutting = await hostile((socket) => {
    socket.once('data', () => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${1024 * 1024}\r\nETag: "cut"\r\n\r\n`)
      socket.write(Buffer.alloc(CUT_AT, 1), () => setTimeout(() => socket.destroy(), 50))
    })
  })
  // Probes run once at start and then not again during the tests (they would count as requests).
  const yaml = (name: string, endpoint: string, extra = '', timeout = 1) =>
    bucketYaml({ name, prefix: `/${name}`, bucket: 'errors', endpoint, extra: `${extra}\n      health_check: { interval_seconds: 3600 }` }).replace(
      'timeout: 2',
      `timeout: ${timeout}`
    )
  proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
metrics: { enabled: true, port: 0 }
buckets:
${yaml('reset', resetting.endpoint)}
${yaml('hangup', hangingUp.endpoint)}
${yaml('silent', silent.endpoint)}
${yaml('stalling-error', stallingError.endpoint)}
${yaml('silent-long', silent.endpoint, '', 30)}
${yaml('silent-breaker', silent.endpoint, '      circuit_breaker: { failure_threshold: 3, success_threshold: 1, timeout_seconds: 60 }')}
${yaml('silent-trial', silent.endpoint, '      max_attempts: 1\n      circuit_breaker: { failure_threshold: 1, success_threshold: 1, timeout_seconds: 1 }')}
${yaml('one-shot', oneShot.endpoint, '      max_attempts: 1')}
${yaml('cut', cutting.endpoint, '      max_attempts: 1')}
${yaml('cut-breaker', cutting.endpoint, '      max_attempts: 1\n      circuit_breaker: { failure_threshold: 1, success_threshold: 1, timeout_seconds: 60 }')}
${yaml('no-connect', full.endpoint, '      connect_timeout: 1\n      max_attempts: 1', 10)}
${yaml('s3', s3.endpoint)}
${yaml('once', s3.endpoint, '      max_attempts: 1')}
`)
  // /ready waits for the first probe round, which must not be counted by the tests.
  await send(proxy.url, '/ready')
})

after(async () => {
  await proxy?.stop()
  full?.stop()
  await Promise.all([s3?.stop(), resetting?.close(), hangingUp?.close(), silent?.close(), stallingError?.close(), oneShot?.close(), cutting?.close()])
})

const errorCode = (res: { json<T>(): T }) => res.json<{ error: { code: string } }>().error.code

/** A GET read to its end or its cut: the status, the bytes received, and whether it ended cleanly. */
function download(path: string): Promise<{ status: number; bytes: number; ended: boolean }> {
  const url = new URL(proxy.url)
  return new Promise((resolve, reject) => {
    http
      .get({ host: url.hostname, port: url.port, path, agent: false }, (res) => {
        let bytes = 0
        let ended = false
        res.on('data', (chunk: Buffer) => (bytes += chunk.length))
        res.on('end', () => (ended = true))
        res.on('error', () => undefined)
        res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes, ended }))
      })
      .on('error', reject)
  })
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(proxy.proxy.metricsUrl as string)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? 0 : Number(line.split(' ')[1])
}

describe('a backend that drops connections', () => {
  it('answers 502 ORIGIN_UNREACHABLE when the backend resets the connection', async () => {
    const before = resetting.connections()
    const started = Date.now()
    const res = await send(proxy.url, '/reset/a.txt')
    assert.equal(res.status, 502)
    assert.equal(errorCode(res), 'ORIGIN_UNREACHABLE')
    assert.ok(Date.now() - started < 900, 'answered before s3.timeout (1 s) could have run out')
    assert.equal(resetting.connections() - before, 2, 'tried s3.max_attempts (2) times')
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/reset/a.txt')
    assert.equal(line.error, 'ORIGIN_UNREACHABLE')
    assert.equal(line.reason, 'ECONNRESET')
    // One observation per request, retries included (the start-up probe made the first).
    assert.equal(await metric('http_requests_by_replica_total{bucket="reset",replica="primary",result="ORIGIN_UNREACHABLE"}'), 2)
  })

  it('answers HEAD with 502 too', async () => {
    const res = await send(proxy.url, '/reset/a.txt', { method: 'HEAD' })
    assert.equal(res.status, 502)
  })

  it('answers 502 ORIGIN_UNREACHABLE when the backend hangs up after the request', async () => {
    const res = await send(proxy.url, '/hangup/a.txt')
    assert.equal(res.status, 502)
    assert.equal(errorCode(res), 'ORIGIN_UNREACHABLE')
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/hangup/a.txt')
    assert.equal(line.reason, 'ECONNRESET')
  })

  it('sends a request again on a new connection when the backend dropped the pooled one', async () => {
    // max_attempts is 1: the resend is not a retry of a failed request but of a dead socket.
    for (let i = 0; i < 3; i++) {
      const res = await send(proxy.url, '/one-shot/a.txt')
      assert.equal(res.status, 200, res.text)
      assert.equal(res.text, 'ok')
    }
  })

  it('cuts the client connection when the backend closes in the middle of a body', async () => {
    const outcome = await download('/cut/a.txt')
    assert.equal(outcome.status, 200)
    assert.equal(outcome.bytes, CUT_AT, 'every byte the backend sent reached the client')
    assert.equal(outcome.ended, false, 'the response was cut, never ended cleanly')
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/cut/a.txt')
    assert.equal(line.error, 'ORIGIN_ERROR')
  })

  it('answers 504 ORIGIN_TIMEOUT only when the backend says nothing within s3.timeout', async () => {
    const started = Date.now()
    const res = await send(proxy.url, '/silent/a.txt')
    const elapsed = Date.now() - started
    assert.equal(res.status, 504)
    assert.equal(errorCode(res), 'ORIGIN_TIMEOUT')
    assert.ok(elapsed >= 950 && elapsed < 3000, `answered after ${elapsed} ms`)
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/silent/a.txt')
    assert.equal(line.reason, 'no_response_headers')
  })

  it('answers 504 ORIGIN_TIMEOUT when an error answer’s body stalls, within s3.timeout', async () => {
    const started = Date.now()
    const res = await send(proxy.url, '/stalling-error/a.txt')
    const elapsed = Date.now() - started
    assert.equal(res.status, 504)
    assert.equal(errorCode(res), 'ORIGIN_TIMEOUT')
    assert.ok(elapsed >= 950 && elapsed < 3000, `answered after ${elapsed} ms`)
  })
})

describe('a single backend behind a circuit breaker', () => {
  it('counts a body that fails mid-transfer against the backend', async () => {
    const state = 'circuit_breaker_state{bucket="cut-breaker",replica="primary"}'
    assert.equal(await metric(state), 0, 'closed before the download')
    const cut = await download('/cut-breaker/a.txt')
    assert.equal(cut.status, 200)
    assert.equal(cut.ended, false, 'the response was cut')
    // The headers counted as a success; the body failing counts as the failure that opens it.
    assert.equal(await metric(state), 1)
    const res = await send(proxy.url, '/cut-breaker/a.txt')
    assert.equal(res.status, 503)
    assert.equal(errorCode(res), 'ORIGIN_UNAVAILABLE')
  })

  it('frees a half-open trial whose client left, so the next request is a trial too', async () => {
    // The start-up probe timed out and opened the breaker (failure_threshold 1); a second later it
    // admits one trial at a time.
    const replicaHealth = async () =>
      (await send(proxy.url, '/ready')).json<{ backends: Record<string, { replicas: Record<string, string> }> }>().backends['silent-trial']?.replicas.primary
    await eventually(async () => (await replicaHealth()) === 'half-open', 'the breaker half-open')
    // The trial reaches the backend, which never answers; its client leaves.
    const reached = silent.nextConnection()
    const url = new URL(proxy.url)
    const trial = http.get({ host: url.hostname, port: url.port, path: '/silent-trial/a.txt', agent: false })
    trial.on('error', () => undefined)
    await reached
    trial.destroy()
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/silent-trial/a.txt')
    assert.equal(line.complete, false)
    // Neither a success nor a failure: the slot is free, so this request is admitted as a trial and
    // waits for the backend (504 after s3.timeout) instead of a 503 at once.
    const res = await send(proxy.url, '/silent-trial/a.txt')
    assert.equal(res.status, 504)
    assert.equal(errorCode(res), 'ORIGIN_TIMEOUT')
  })

  it('opens the breaker after repeated timeouts and answers 503 at once', async () => {
    // The start-up probe timed out: the first of three failures.
    for (let i = 0; i < 2; i++) assert.equal((await send(proxy.url, '/silent-breaker/a.txt')).status, 504)
    const started = Date.now()
    const res = await send(proxy.url, '/silent-breaker/a.txt')
    assert.equal(res.status, 503)
    assert.equal(errorCode(res), 'ORIGIN_UNAVAILABLE')
    assert.ok(Date.now() - started < 500, 'answered without waiting for the backend')
  })
})

describe('a backend that cannot be connected to', () => {
  it('answers 504 ORIGIN_TIMEOUT after s3.connect_timeout', async () => {
    const started = Date.now()
    const res = await send(proxy.url, '/no-connect/a.txt')
    const elapsed = Date.now() - started
    assert.equal(res.status, 504)
    assert.equal(errorCode(res), 'ORIGIN_TIMEOUT')
    assert.ok(elapsed >= 950 && elapsed < 4000, `answered after ${elapsed} ms (connect_timeout 1 s, timeout 10 s)`)
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/no-connect/a.txt')
    assert.equal(line.reason, 'connect_timeout')
  })
})

describe('server errors', () => {
  it('retries a 500 up to s3.max_attempts, then answers 502 ORIGIN_ERROR', async () => {
    s3.failWith(500)
    try {
      const before = s3.requests.length
      const res = await send(proxy.url, '/s3/a.txt')
      assert.equal(res.status, 502)
      assert.equal(errorCode(res), 'ORIGIN_ERROR')
      assert.equal(s3.requests.slice(before).filter((r) => r.url.startsWith('/errors/a.txt')).length, 2)

      const once = s3.requests.length
      assert.equal((await send(proxy.url, '/once/a.txt')).status, 502)
      assert.equal(s3.requests.slice(once).filter((r) => r.url.startsWith('/errors/a.txt')).length, 1)
    } finally {
      s3.failWith(undefined)
    }
  })

  it('answers 503 ORIGIN_UNAVAILABLE with Retry-After when the backend is overloaded', async () => {
    s3.failWith(503)
    try {
      const res = await send(proxy.url, '/once/a.txt')
      assert.equal(res.status, 503)
      assert.equal(errorCode(res), 'ORIGIN_UNAVAILABLE')
      assert.equal(res.headers['retry-after'], '1')
    } finally {
      s3.failWith(undefined)
    }
  })

  it('does not retry a missing object', async () => {
    const before = s3.requests.length
    const res = await send(proxy.url, '/s3/missing.txt')
    assert.equal(res.status, 404)
    assert.equal(s3.requests.slice(before).filter((r) => r.url.startsWith('/errors/missing.txt')).length, 1)
  })
})

describe('a client that leaves', () => {
  it('aborts the origin request when the client disconnects mid-download', async () => {
    const url = new URL(proxy.url)
    const before = s3.requests.length
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: url.hostname, port: url.port, path: '/s3/big.bin', agent: false }, resolve).on('error', reject)
    })
    assert.equal(res.statusCode, 200)
    await new Promise((resolve) => res.once('data', resolve))
    res.destroy()
    const upstream = s3.requests.slice(before).find((r) => r.url.startsWith('/errors/big.bin'))
    assert.ok(upstream !== undefined)
    assert.equal(await upstream.outcome, 'aborted')
    assert.ok(upstream.bytes < BIG, `the backend sent ${upstream.bytes} of ${BIG} bytes`)
  })

  it('closes the origin connection when the client disconnects before the backend answers', async () => {
    const url = new URL(proxy.url)
    const connection = silent.nextConnection()
    const req = http.get({ host: url.hostname, port: url.port, path: '/silent-long/a.txt', agent: false })
    req.on('error', () => undefined)
    const socket = await connection
    await once(socket, 'data')
    const left = Date.now()
    req.destroy()
    await once(socket, 'close')
    const elapsed = Date.now() - left
    assert.ok(elapsed < 2000, `the origin connection closed ${elapsed} ms after the client left (s3.timeout is 30 s)`)
    const line = await proxy.logged((l) => l.msg === 'request' && l.path === '/silent-long/a.txt')
    assert.equal(line.error, 'ORIGIN_ABORTED')
  })
})
