// A real S3-compatible backend for tests: s3rver on a free loopback port, behind a layer that
// verifies AWS SigV4 signatures (s3rver itself does not). The layer rebuilds each request, signs it
// again with @smithy/signature-v4 and the expected secret, and answers 403 SignatureDoesNotMatch on
// a mismatch, so a signing or key-encoding mistake in the proxy fails the tests. It also records
// every request it forwards (method, raw URL, headers) for assertions.
// Where s3rver differs from S3 in ways the proxy relies on, the layer behaves as S3 does: a GET
// with `If-Match` is answered 412 PreconditionFailed when the object's ETag differs (s3rver ignores
// the header); with `atomicOverwrites(true)`, a PUT waits for the reads of its key in progress and
// holds back new ones until it is done (s3rver rewrites an object in place, so a read racing an
// overwrite could mix two versions; S3 never does).
import { timingSafeEqual } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CreateBucketCommand, PutObjectCommand, S3Client, type PutObjectCommandInput } from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
// @ts-expect-error s3rver ships no type declarations
import S3rver from 's3rver'

/** s3rver's built-in account id; the secret is ours, checked by the verifying layer. */
export const ACCESS_KEY = 'S3RVER'
export const SECRET_KEY = 'test/Secret+Key=with/special chars'
export const REGION = 'us-east-1'

export interface RecordedRequest {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  /** Body bytes the backend has sent so far. */
  bytes: number
  /** Settles when the backend's response ends: 'finished', or 'aborted' (the proxy hung up first). */
  outcome: Promise<'finished' | 'aborted'>
  /** Set when the layer answered itself (412 for If-Match); undefined when s3rver answered. */
  status?: number
}

export interface TestS3 {
  /** The signature-verifying endpoint the proxy should use. */
  endpoint: string
  /** A client signed with the right credentials, for seeding objects. */
  client: S3Client
  requests: RecordedRequest[]
  createBucket(name: string): Promise<void>
  put(bucket: string, key: string, body: PutObjectCommandInput['Body'], extra?: Partial<PutObjectCommandInput>): Promise<void>
  /** The next GET sends its headers and `afterBytes` of body, then stalls (never ends). */
  stallNextGet(afterBytes: number): void
  /**
   * The next GET sends its headers and at most `afterBytes` of body (whole chunks as s3rver wrote
   * them), then waits until `release()` is called; `held` resolves when it starts waiting.
   */
  holdNextGet(afterBytes: number): { held: Promise<void>; release: () => void }
  /** The next GET's answer waits, headers and all, until `release()`; `held` resolves when it starts waiting. */
  holdNextHeaders(): { held: Promise<void>; release: () => void }
  /** Stops accepting connections at the endpoint (backend down); `resume()` brings it back. */
  pause(): Promise<void>
  resume(): Promise<void>
  /** Every request is answered with this status (an S3 XML error) until set back to undefined. */
  failWith(status: number | undefined): void
  /** Every request waits this long before it is forwarded (a slow backend); 0 turns it off. */
  delay(ms: number): void
  /** From now on only requests signed with this secret are accepted (credential rotation). */
  rotateSecret(secret: string): void
  /**
   * From now on every request must carry this session token in a signed `x-amz-security-token`
   * header (403 InvalidToken otherwise); undefined stops requiring one.
   */
  requireSessionToken(token: string | undefined): void
  /** Overwrites become atomic for readers (see the header); off by default. */
  atomicOverwrites(on: boolean): void
  /** The GETs of `bucket/key` forwarded or answered so far (path without the query). */
  getsOf(bucket: string, key: string): RecordedRequest[]
  stop(): Promise<void>
}

export async function startS3(): Promise<TestS3> {
  const directory = await mkdtemp(join(tmpdir(), 'yatagarasu-s3rver-'))
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory })
  const backend = (await s3rver.run()) as AddressInfo
  const requests: RecordedRequest[] = []
  let stallNext: number | undefined
  let holdNext: { afterBytes: number; released: Promise<void>; holding: () => void } | undefined
  let holdHeadersNext: { released: Promise<void>; holding: () => void } | undefined
  let failStatus: number | undefined
  let delayMs = 0
  let sessionToken: string | undefined
  let atomic = false
  const locks = new Map<string, PathLock>()
  const lockOf = (path: string) => {
    let lock = locks.get(path)
    if (lock === undefined) locks.set(path, (lock = new PathLock(() => locks.delete(path))))
    return lock
  }
  const signerFor = (secretAccessKey: string) =>
    new SignatureV4({
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey },
      region: REGION,
      service: 's3',
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: true,
    })
  let signer = signerFor(SECRET_KEY)

  const verifier = http.createServer((req, res) => {
    void (async () => {
      const problem = (await verify(req, signer)) ?? tokenProblem(req, sessionToken)
      if (problem !== undefined) {
        req.resume()
        res.writeHead(403, { 'content-type': 'application/xml' })
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${problem}</Code><Message>${problem}</Message></Error>`)
        return
      }
      if (failStatus !== undefined) {
        req.resume()
        requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: 0, outcome: Promise.resolve('finished') })
        res.writeHead(failStatus, { 'content-type': 'application/xml' })
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>')
        return
      }
      if (delayMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, delayMs))
        if (res.destroyed) {
          // The caller gave up while the request was held back.
          requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: 0, outcome: Promise.resolve('aborted') })
          return
        }
      }
      const path = (req.url ?? '').split('?')[0] ?? ''
      if (atomic && (req.method === 'GET' || req.method === 'HEAD' || req.method === 'PUT')) {
        const release = await lockOf(path).acquire(req.method === 'PUT')
        res.once('close', release)
      }
      const ifMatch = req.method === 'GET' ? req.headers['if-match'] : undefined
      if (ifMatch !== undefined) {
        const current = await etagOf(backend.port, path)
        if (current === undefined || !ifMatch.split(',').some((tag) => tag.trim() === current || tag.trim() === '*')) {
          req.resume()
          requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: 0, outcome: Promise.resolve('finished'), status: 412 })
          res.writeHead(412, { 'content-type': 'application/xml' })
          res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>')
          return
        }
      }
      const stallAfter = req.method === 'GET' ? stallNext : undefined
      if (stallAfter !== undefined) stallNext = undefined
      let hold = req.method === 'GET' ? holdNext : undefined
      if (hold !== undefined) holdNext = undefined
      const holdHeaders = req.method === 'GET' ? holdHeadersNext : undefined
      if (holdHeaders !== undefined) holdHeadersNext = undefined
      const record: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        bytes: 0,
        outcome: new Promise((resolve) => {
          res.once('close', () => resolve(res.writableFinished ? 'finished' : 'aborted'))
        }),
      }
      requests.push(record)
      const upstream = http.request(
        { host: '127.0.0.1', port: backend.port, method: req.method, path: req.url, headers: req.headers },
        async (up) => {
          if (holdHeaders !== undefined) {
            // Not read meanwhile: the body waits in the socket.
            holdHeaders.holding()
            await holdHeaders.released
          }
          res.writeHead(up.statusCode ?? 502, up.headers)
          // A held body still lets its headers through (Node sends them with the first chunk).
          if (hold !== undefined) res.flushHeaders()
          let heldChunk: Promise<void> | undefined
          const forward = (chunk: Buffer) => {
            record.bytes += chunk.length
            if (!res.write(chunk)) {
              up.pause()
              res.once('drain', () => up.resume())
            }
          }
          up.on('data', (chunk: Buffer) => {
            if (stallAfter !== undefined && record.bytes + chunk.length > stallAfter) {
              up.pause()
              return
            }
            if (hold !== undefined && record.bytes + chunk.length > hold.afterBytes) {
              const { released, holding } = hold
              hold = undefined
              up.pause()
              holding()
              heldChunk = released.then(() => {
                forward(chunk)
                if (!up.isPaused() || res.writableNeedDrain) return
                up.resume()
              })
              return
            }
            forward(chunk)
          })
          // A body whose last chunk is held still ends (pause does not stop 'end'): after that chunk.
          up.on('end', () => void (heldChunk ?? Promise.resolve()).then(() => res.end()))
        }
      )
      upstream.on('error', () => res.destroy())
      res.on('close', () => upstream.destroy())
      req.pipe(upstream)
    })()
  })
  let port = 0
  const listen = () =>
    new Promise<void>((resolve) => verifier.listen(port, '127.0.0.1', () => resolve()))
  await listen()
  port = (verifier.address() as AddressInfo).port
  const endpoint = `http://127.0.0.1:${port}`

  const client = new S3Client({
    endpoint,
    region: REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })

  const close = () =>
    new Promise<void>((resolve) => {
      verifier.close(() => resolve())
      verifier.closeAllConnections()
    })

  return {
    endpoint,
    client,
    requests,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }))
    },
    async put(bucket, key, body, extra = {}) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...extra }))
    },
    stallNextGet(afterBytes) {
      stallNext = afterBytes
    },
    holdNextHeaders() {
      const released = Promise.withResolvers<void>()
      const held = Promise.withResolvers<void>()
      holdHeadersNext = { released: released.promise, holding: held.resolve }
      return { held: held.promise, release: released.resolve }
    },
    holdNextGet(afterBytes) {
      const released = Promise.withResolvers<void>()
      const held = Promise.withResolvers<void>()
      holdNext = { afterBytes, released: released.promise, holding: held.resolve }
      return { held: held.promise, release: released.resolve }
    },
    pause: close,
    resume: listen,
    failWith(status) {
      failStatus = status
    },
    delay(ms) {
      delayMs = ms
    },
    rotateSecret(secret) {
      signer = signerFor(secret)
    },
    requireSessionToken(token) {
      sessionToken = token
    },
    atomicOverwrites(on) {
      atomic = on
    },
    getsOf(bucket, key) {
      const path = `/${bucket}/${encodeURIComponent(key).replaceAll('%2F', '/')}`
      return requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === path)
    },
    async stop() {
      client.destroy()
      if (verifier.listening) await close()
      await s3rver.close()
      await rm(directory, { recursive: true, force: true })
    },
  }
}

/** The ETag s3rver has for `path` now (HEAD, unsigned: s3rver checks no signature). */
function etagOf(port: number, path: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const head = http.request({ host: '127.0.0.1', port, method: 'HEAD', path }, (res) => {
      res.resume()
      resolve(res.statusCode === 200 ? res.headers.etag : undefined)
    })
    head.on('error', () => resolve(undefined))
    head.end()
  })
}

/** Readers share a path, a writer has it alone; first come, first served. */
class PathLock {
  #readers = 0
  #writer = false
  readonly #queue: Array<{ write: boolean; go: () => void }> = []
  readonly #idle: () => void

  constructor(idle: () => void) {
    this.#idle = idle
  }

  acquire(write: boolean): Promise<() => void> {
    return new Promise((resolve) => {
      this.#queue.push({
        write,
        go: () => {
          let released = false
          resolve(() => {
            if (released) return
            released = true
            if (write) this.#writer = false
            else this.#readers--
            this.#pump()
          })
        },
      })
      this.#pump()
    })
  }

  #pump(): void {
    for (let next = this.#queue[0]; next !== undefined; next = this.#queue[0]) {
      if (this.#writer || (next.write && this.#readers > 0)) return
      this.#queue.shift()
      if (next.write) this.#writer = true
      else this.#readers++
      next.go()
    }
    if (this.#readers === 0 && !this.#writer) this.#idle()
  }
}

/** Undefined when no token is required or the request carries it, signed; else the S3 error code. */
function tokenProblem(req: http.IncomingMessage, token: string | undefined): string | undefined {
  if (token === undefined) return undefined
  const sent = req.headers['x-amz-security-token']
  if (sent !== token) return 'InvalidToken'
  const signed = /SignedHeaders=([a-z0-9;-]+)/.exec(req.headers.authorization ?? '')?.[1]?.split(';') ?? []
  return signed.includes('x-amz-security-token') ? undefined : 'AccessDenied'
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/

/** Undefined when the request is signed with the expected credentials; else the S3 error code. */
async function verify(req: http.IncomingMessage, signer: SignatureV4): Promise<string | undefined> {
  const match = AUTHORIZATION.exec(req.headers.authorization ?? '')
  if (match === null) return 'AccessDenied'
  const [, accessKey, , region, service, signedHeaders, signature] = match as unknown as string[]
  if (accessKey !== ACCESS_KEY) return 'InvalidAccessKeyId'
  const amzDate = String(req.headers['x-amz-date'] ?? '')
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate)
  if (date === null) return 'AccessDenied'
  const signingDate = new Date(Date.UTC(+date[1]!, +date[2]! - 1, +date[3]!, +date[4]!, +date[5]!, +date[6]!))

  const url = req.url ?? '/'
  const q = url.indexOf('?')
  const query: Record<string, string | string[]> = {}
  if (q !== -1) {
    for (const pair of url.slice(q + 1).split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const name = decodeURIComponent(eq === -1 ? pair : pair.slice(0, eq))
      const value = eq === -1 ? '' : decodeURIComponent(pair.slice(eq + 1))
      const existing = query[name]
      query[name] = existing === undefined ? value : [existing, value].flat()
    }
  }
  const headers: Record<string, string> = {}
  for (const name of signedHeaders!.split(';')) {
    const value = req.headers[name]
    headers[name] = Array.isArray(value) ? value.join(',') : (value ?? '')
  }
  const [hostname, hostPort] = (req.headers.host ?? '').split(':')
  const request = new HttpRequest({
    method: req.method ?? 'GET',
    protocol: 'http:',
    hostname: hostname ?? '',
    port: hostPort === undefined ? undefined : Number(hostPort),
    path: q === -1 ? url : url.slice(0, q),
    query,
    headers,
  })
  const signed = await signer.sign(request, { signingDate, signingRegion: region, signingService: service })
  const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1] ?? ''
  const a = Buffer.from(expected)
  const b = Buffer.from(signature!)
  return a.length === b.length && timingSafeEqual(a, b) ? undefined : 'SignatureDoesNotMatch'
}
