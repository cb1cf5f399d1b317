// The listening proxy: an HTTP server that hands each request to the current app generation,
// swaps generations on reload (requests in flight finish on the one they started on), and drains
// on shutdown. With `s3_api` on, a second listener speaks the S3 API to the same generations
// (app.handleS3), with the same limits, TLS certificate, drain and slow-client rules. Object requests go straight to the generation's pipeline; the proxy's own endpoints
// (/health, /ready, /admin/*) go through @hono/node-server to its Hono app. Used by main.ts, the
// demo, the tests and the bench alike.
//
// Slow and stuck clients (docs/operations.md, "Request limits and slow clients"):
//   headers_timeout_seconds  Node's headersTimeout/requestTimeout, checked every
//                            `connectionsCheckingInterval`; the request gets 408
//   idle_timeout_seconds     the socket timeout (`server.timeout`) for reads and idle sockets; a
//                            response the client stopped reading is cut by `watchStalledWrites`
//   keepalive_timeout_seconds  Node's keepAliveTimeout, between requests
import { randomBytes, randomUUID } from 'node:crypto'
import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { getRequestListener } from '@hono/node-server'
import type { Registry } from 'prom-client'
import { createApp, isOwnPath, type App } from './app.ts'
import { loadConfig } from './config/load.ts'
import type { BucketConfig, Config, TlsConfig } from './config/schema.ts'
import { errorAnswer, ProxyError, type ErrorCode } from './errors.ts'
import { hostProblemOf } from './http/host.ts'
import { StampedResponse } from './http/stamped-response.ts'
import { Exchange } from './pipeline/exchange.ts'
import { S3Exchange } from './frontends/s3-api/exchange.ts'
import { s3ErrorAnswer } from './frontends/s3-api/errors.ts'
import { buildRuntime, type Runtime } from './runtime.ts'
import { accessLogOf, type AccessLog } from './telemetry/access-log.ts'
import type { Logger } from './telemetry/log.ts'
import type { Metrics } from './telemetry/metrics.ts'
import type { Answer, BucketChanges, ReloadResult } from './types.ts'

interface Generation {
  runtime: Runtime
  app: App
  inFlight: number
  retired: boolean
}

export interface StartOptions {
  /** Serve Prometheus on `metrics.port` (false in a cluster worker: the primary serves the sum). */
  metricsServer?: boolean
  /** Called after `POST /admin/reload` reloaded this process (a worker tells its siblings). */
  afterAdminReload?: (result: ReloadResult) => void
}

export interface Proxy {
  readonly port: number
  readonly url: string
  /** The S3 API listener's URL, when `s3_api` is enabled. */
  readonly s3Url: string | undefined
  /** The Prometheus endpoint (`metrics.port`), when metrics are enabled and served here. */
  readonly metricsUrl: string | undefined
  /** The metrics registry, when metrics are enabled (a cluster worker hands it to the primary). */
  readonly metricsRegistry: Registry | undefined
  readonly generation: number
  /** Re-reads the config file; on any error the running generation keeps serving. One at a time. */
  reload(): Promise<ReloadResult>
  /** Stops accepting, lets requests in flight finish (up to the timeout), closes everything. */
  shutdown(timeoutMs?: number): Promise<void>
}

export async function startProxy(config: Config, logger: Logger, options: StartOptions = {}): Promise<Proxy> {
  const startedAt = Date.now()
  // Process-wide, kept across reloads (metrics.* changes need a restart).
  // prom-client is loaded only when metrics are on.
  const metrics = config.metrics.enabled ? new (await import('./telemetry/metrics.ts')).Metrics() : undefined
  const hooks = {
    reload: async () => {
      const result = await reload()
      options.afterAdminReload?.(result)
      return result
    },
  }
  const makeGeneration = (runtime: Runtime): Generation => {
    runtime.start()
    return { runtime, app: createApp(runtime, hooks), inFlight: 0, retired: false }
  }
  let current = makeGeneration(await buildRuntime(config, { logger, metrics, generation: 1, startedAt }))
  metrics?.configGeneration.set(1)
  if (metrics !== undefined) metrics.onScrape = () => updateCacheGauges(metrics, current.runtime)
  let draining = false
  // Process-wide, across generations: what `max_concurrent_requests` counts.
  let active = 0
  /**
   * Per connection that has had a request, the ends of its requests not yet over; one 'close'
   * listener per connection. Iterable: the stalled-write watch walks it.
   */
  const openOn = new Map<Socket, Set<() => void>>()
  const openRequestsOn = (socket: Socket): Set<() => void> => {
    let requests = openOn.get(socket)
    if (requests === undefined) {
      const ends = new Set<() => void>()
      socket.once('close', () => {
        openOn.delete(socket)
        for (const end of ends) end()
      })
      openOn.set(socket, ends)
      requests = ends
    }
    return requests
  }
  const maxActive = config.server.max_concurrent_requests ?? Infinity

  // The exchange of an own-path request, from the listener to the Hono app (a synchronous hand-off).
  const ownExchanges = new WeakMap<IncomingMessage, { exchange: Exchange; app: App }>()
  const ownListener = getRequestListener(
    (request, env) => {
      const { exchange, app } = ownExchanges.get((env as { incoming: IncomingMessage }).incoming) ?? {}
      if (exchange === undefined || app === undefined) return refusal('GUARD_BAD_REQUEST')
      return app.own.fetch(request, exchange)
    },
    // An HTTP/1.0 request may come without a Host; the adapter needs one to build its URL.
    { hostname: 'localhost', errorHandler: () => refusal('GUARD_BAD_REQUEST') }
  )

  const listenerFor = (s3: boolean) => (incoming: IncomingMessage, response: http.ServerResponse): void => {
    // http and https only (never http2), created with StampedResponse below.
    const outgoing = response as StampedResponse
    if (active >= maxActive) {
      metrics?.requestsRefused.inc({ reason: 'overloaded' })
      if (s3) refuseS3(outgoing, incoming.method === 'HEAD')
      else refuse(outgoing, 'GUARD_OVERLOADED', { 'retry-after': '1' })
      return
    }
    const generation = current
    generation.inFlight++
    active++
    const exchange = s3 ? new S3Exchange(incoming, outgoing) : new Exchange(incoming, outgoing)
    // Once, on whichever comes first: the response's 'close', or its connection's (a pipelined
    // request whose response never started gets no 'close' of its own when the connection dies).
    const requests = openRequestsOn(incoming.socket)
    const end = () => {
      if (!requests.delete(end)) return
      exchange.close()
      try {
        exchange.responseEnded?.()
      } finally {
        release(generation)
      }
    }
    requests.add(end)
    outgoing.on('close', end)
    if (draining) outgoing.setHeader('connection', 'close')
    if (exchange instanceof S3Exchange) {
      try {
        generation.app.handleS3(exchange)
      } catch (err) {
        logger.error({ request_id: exchange.requestId, err }, 'unhandled error')
        outgoing.destroy()
      }
      return
    }
    // An own path with a bad Host is left to the object pipeline, whose guard refuses it (a JSON
    // 400, access-logged) before anything else runs.
    if (isOwnPath(exchange.target) && hostProblemOf(incoming) === undefined) {
      ownExchanges.set(incoming, { exchange, app: generation.app })
      void ownListener(incoming, outgoing)
      return
    }
    try {
      generation.app.handle(exchange)
    } catch (err) {
      // handle() answers every error itself; this is a bug, and it must not take the process down.
      logger.error({ request_id: exchange.requestId, err }, 'unhandled error')
      outgoing.destroy()
    }
  }

  const headersTimeoutMs = config.server.headers_timeout_seconds * 1000
  const idleTimeoutMs = config.server.idle_timeout_seconds * 1000
  const serverOptions: http.ServerOptions<typeof IncomingMessage, typeof StampedResponse> = {
    ServerResponse: StampedResponse,
    maxHeaderSize: config.server.max_header_size,
    headersTimeout: headersTimeoutMs,
    requestTimeout: headersTimeoutMs,
    // Node checks the two timeouts above on this interval (30 s by default, which let a slowloris
    // client hold a connection for 30 s whatever the setting): they hold within 1 s.
    connectionsCheckingInterval: checkEvery(headersTimeoutMs),
    keepAliveTimeout: config.server.keepalive_timeout_seconds * 1000,
    // guard refuses a missing Host itself (JSON, access-logged); Node's own 400 is neither.
    requireHostHeader: false,
  }
  const tls = config.server.tls
  let tlsBuilt = tls === null ? '' : tlsIdentity(tls)
  const accessLog = accessLogOf(logger)
  const createServer = (s3: boolean): http.Server => {
    const created =
      tls === null
        ? http.createServer(serverOptions, listenerFor(s3))
        : https.createServer({ ...serverOptions, ...tlsOptions(tls) }, listenerFor(s3))
    // Sockets with no bytes moving either way for this long are closed (slow readers, idle clients).
    created.timeout = idleTimeoutMs
    // Node destroys a socket whose timeout fires unless a 'timeout' listener takes over. A TLS
    // socket in the middle of a large write shows Node no progress while the client reads (see
    // queuedInLibuv): watchStalledWrites, which reads the TCP handle under it, decides instead.
    created.on('timeout', (socket: Socket) => {
      if (socket.writableLength > 0 && (socket as Socket & { encrypted?: boolean }).encrypted === true) return
      socket.destroy()
    })
    created.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => refuseUnparsed(err, socket, accessLog, s3))
    if (s3) {
      // Expect is the S3 front end's to answer: no interim 100 for a GET or HEAD, which has nothing
      // to continue, nor for a refused write (its body is never sent); the STS form asks for it as
      // it reads. Any other expectation gets an S3 error there, not Node's bare 417.
      created.on('checkContinue', listenerFor(true))
      created.on('checkExpectation', listenerFor(true))
    }
    return created
  }
  const server = createServer(false)
  // Read once at start, like server.address (a reload that changes it warns).
  const s3Settings = config.s3_api
  const s3Server = s3Settings === null ? undefined : createServer(true)
  const servers = s3Server === undefined ? [server] : [server, s3Server]
  const stopWatching = watchStalledWrites(openOn.keys.bind(openOn), idleTimeoutMs)

  await listen(server, config.server.port, config.server.host)
  if (s3Server !== undefined && s3Settings !== null) {
    try {
      await listen(s3Server, s3Settings.port, s3Settings.host)
    } catch (err) {
      server.close()
      stopWatching()
      throw err
    }
  }
  const port = (server.address() as AddressInfo).port
  const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host
  const urlOf = (p: number, scheme = 'http') => `${scheme}://${host.includes(':') ? `[${host}]` : host}:${p}`

  const metricsServer =
    metrics === undefined || options.metricsServer === false
      ? undefined
      : await listenMetrics(metricsEndpoint(() => metrics.registry.metrics(), metrics.registry.contentType), config)

  function release(generation: Generation): void {
    active--
    generation.inFlight--
    // Called after the request's access log and audit record were written (see `end`), so the
    // retired generation's outputs close after its last line.
    if (generation.retired && generation.inFlight === 0) void generation.runtime.close()
  }

  async function reloadNow(): Promise<ReloadResult> {
    const previous = current
    const next = previous.runtime.generation + 1
    let runtime: Runtime | undefined
    try {
      const nextConfig = await loadConfig(previous.runtime.config.file)
      runtime = await buildRuntime(nextConfig, { logger, metrics, generation: next, startedAt }, previous.runtime)
      const nextTls = nextConfig.server.tls
      if (tls !== null && nextTls !== null && tlsIdentity(nextTls) !== tlsBuilt) {
        // New certificate and key for new connections; open ones keep theirs.
        for (const each of servers) (each as https.Server).setSecureContext(tlsOptions(nextTls))
        tlsBuilt = tlsIdentity(nextTls)
      }
    } catch (err) {
      // Nothing was committed: the new runtime closes only what it built itself.
      if (runtime !== undefined) void runtime.close()
      metrics?.configReloads.inc({ result: 'failure' })
      const error = err instanceof Error ? err.message : String(err)
      logger.error({ generation: previous.runtime.generation, error }, 'reload failed; keeping the running configuration')
      return { ok: false, generation: previous.runtime.generation, error }
    }
    warnRestartOnly(previous.runtime.config, runtime.config, logger)
    runtime.commit()
    current = makeGeneration(runtime)
    metrics?.configReloads.inc({ result: 'success' })
    metrics?.configGeneration.set(next)
    previous.retired = true
    if (previous.inFlight === 0) void previous.runtime.close()
    const buckets = bucketChanges(previous.runtime.config.buckets, runtime.config.buckets)
    logger.info({ generation: next, buckets }, 'configuration reloaded')
    return { ok: true, generation: next, buckets }
  }

  // Reloads run one after another: a SIGHUP during an admin reload waits for it.
  let reloading: Promise<unknown> = Promise.resolve()
  function reload(): Promise<ReloadResult> {
    const result = reloading.then(reloadNow)
    reloading = result.catch(() => undefined)
    return result
  }

  return {
    port,
    url: urlOf(port, tls === null ? 'http' : 'https'),
    s3Url:
      s3Server === undefined || s3Settings === null
        ? undefined
        : `${tls === null ? 'http' : 'https'}://${s3Settings.host === '0.0.0.0' || s3Settings.host === '::' ? '127.0.0.1' : s3Settings.host.includes(':') ? `[${s3Settings.host}]` : s3Settings.host}:${(s3Server.address() as AddressInfo).port}`,
    metricsUrl: metricsServer === undefined ? undefined : `${urlOf((metricsServer.address() as AddressInfo).port)}/metrics`,
    metricsRegistry: metrics?.registry,
    get generation() {
      return current.runtime.generation
    },
    reload,

    async shutdown(timeoutMs = config.server.shutdown_timeout_seconds * 1000) {
      draining = true
      // A disk scrub pass (an admin call's included) would hold the drain: it stops, and says so.
      current.runtime.cache?.store.disk?.stopScrub()
      const closed = Promise.all(servers.map((each) => new Promise<void>((resolve) => each.close(() => resolve()))))
      for (const each of servers) each.closeIdleConnections()
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs)
      })
      const outcome = await Promise.race([closed.then(() => 'drained' as const), deadline])
      clearTimeout(timer)
      if (outcome === 'timeout') {
        logger.warn({ timeout_ms: timeoutMs }, 'shutdown timeout: closing the connections still open')
        for (const each of servers) each.closeAllConnections()
        await closed
      }
      stopWatching()
      await current.runtime.close()
      metricsServer?.closeAllConnections()
      await new Promise((resolve) => (metricsServer === undefined ? resolve(undefined) : metricsServer.close(resolve)))
    },
  }
}

async function listen(server: http.Server, port: number, host: string): Promise<http.Server> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}

/** The Prometheus endpoint: GET /metrics, everything else 404. */
export function metricsEndpoint(render: () => Promise<string>, contentType: string): http.Server {
  return http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    render().then(
      (text) => res.writeHead(200, { 'content-type': contentType }).end(text),
      () => res.writeHead(500).end()
    )
  })
}

export async function listenMetrics(server: http.Server, config: Config): Promise<http.Server> {
  return listen(server, config.metrics.port, config.server.host)
}

function tlsOptions(tls: TlsConfig): https.ServerOptions {
  return { cert: tls.cert, key: tls.key, minVersion: tls.min_version }
}

function tlsIdentity(tls: TlsConfig): string {
  return `${tls.cert}\0${tls.key}\0${tls.min_version}`
}

/** Which buckets a reload added, removed or changed (any setting), by name. */
function bucketChanges(before: readonly BucketConfig[], after: readonly BucketConfig[]): BucketChanges {
  const old = new Map(before.map((b) => [b.name, JSON.stringify(b)]))
  const now = new Map(after.map((b) => [b.name, JSON.stringify(b)]))
  return {
    added: [...now.keys()].filter((name) => !old.has(name)),
    removed: [...old.keys()].filter((name) => !now.has(name)),
    changed: [...now].filter(([name, built]) => old.has(name) && old.get(name) !== built).map(([name]) => name),
  }
}

/** Settings read once at start: a reload cannot apply them, so say so rather than ignore them silently. */
function warnRestartOnly(before: Config, after: Config, logger: Logger): void {
  const restartOnly = {
    'server.address': [`${before.server.host}:${before.server.port}`, `${after.server.host}:${after.server.port}`],
    'server.workers': [before.server.workers, after.server.workers],
    'server.https.enabled': [before.server.tls !== null, after.server.tls !== null],
    'server.security_limits.max_header_size': [before.server.max_header_size, after.server.max_header_size],
    'server.max_concurrent_requests': [before.server.max_concurrent_requests, after.server.max_concurrent_requests],
    's3_api.address': [s3Address(before), s3Address(after)],
    metrics: [JSON.stringify(before.metrics), JSON.stringify(after.metrics)],
    logging: [JSON.stringify(before.logging), JSON.stringify(after.logging)],
  }
  for (const [key, [was, now]] of Object.entries(restartOnly)) {
    if (was !== now) logger.warn({ key, running: was, file: now }, 'this setting changes only at restart; the running value is kept')
  }
}

/** Where the S3 listener listens, or 'off'. */
function s3Address(config: Config): string {
  return config.s3_api === null ? 'off' : `${config.s3_api.host}:${config.s3_api.port}`
}

/** Cache sizes are read from the tiers when Prometheus scrapes, not kept up to date per request. */
function updateCacheGauges(metrics: Metrics, runtime: Runtime): void {
  for (const tier of runtime.cache?.store.tiers ?? []) {
    const stats = tier.stats()
    if (stats.sizeReportedElsewhere === true) {
      // Another worker now reports the shared directory (this one did before, if it was that worker).
      for (const gauge of [metrics.cacheEntries, metrics.cacheBytes, metrics.cacheEvictions]) gauge.remove({ tier: tier.name })
    } else {
      if (stats.entries !== null) metrics.cacheEntries.set({ tier: tier.name }, stats.entries)
      if (stats.bytes !== null) metrics.cacheBytes.set({ tier: tier.name }, stats.bytes)
      metrics.cacheEvictions.set({ tier: tier.name }, stats.evictions)
    }
    if (stats.writesPaused !== undefined) metrics.cacheWritesPaused.set({ tier: tier.name }, stats.writesPaused ? 1 : 0)
    if (stats.scrub === undefined) continue
    metrics.cacheScrubEntries.set({ tier: tier.name, result: 'intact' }, stats.scrub.checked - stats.scrub.damaged)
    metrics.cacheScrubEntries.set({ tier: tier.name, result: 'damaged' }, stats.scrub.damaged)
    metrics.cacheScrubBytes.set({ tier: tier.name }, stats.scrub.bytes)
  }
}

/** How often a timeout is checked: every second, or every eighth of a short one (at least 100 ms). */
function checkEvery(timeoutMs: number): number {
  return Math.round(Math.max(100, Math.min(1000, timeoutMs / 8)))
}

/** The answer to a parser refusal, by Node's error code (as Node's own answers: 431, 408, 413, 400). */
function unparsedCode(code: string | undefined): ErrorCode {
  if (code === 'HPE_HEADER_OVERFLOW') return 'GUARD_HEADERS_TOO_LARGE'
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'GUARD_REQUEST_TIMEOUT'
  // Chunk extensions come only with a chunked body, which guard would refuse anyway.
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return 'GUARD_BODY_NOT_ALLOWED'
  return 'GUARD_BAD_REQUEST'
}

/**
 * A request Node's parser refused (a malformed request line or header, headers too large, headers
 * not complete within the headers timeout): no request object exists, so the JSON error is written
 * to the socket by hand and the connection closes once it is out. The access log gets the usual
 * line with what is known: the socket peer, no method or path, the parser's code as the reason.
 */
function refuseUnparsed(err: NodeJS.ErrnoException, socket: Socket, accessLog: AccessLog | undefined, s3: boolean): void {
  // A connection reset, a second refusal on a connection already answered, or a response to an
  // earlier request already under way (its bytes must not be cut into): nothing to say.
  const inFlight = (socket as unknown as { _httpMessage?: { headersSent: boolean } | null })._httpMessage
  if (!socket.writable || err.code === 'ECONNRESET' || inFlight?.headersSent === true) {
    socket.destroy()
    return
  }
  const code = unparsedCode(err.code)
  // On the S3 listener, S3's XML error (an S3 client reads <Code> and x-amz-request-id).
  const { status, headers, body } = s3 ? s3RefusalAnswer(code, false) : refusalAnswer(code)
  const requestId = headers['x-request-id'] as string
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n`
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`
  const clientIp = socket.remoteAddress ?? ''
  socket.end(`${head}connection: close\r\n\r\n${body}`)
  // Closed once the answer is out (Node's own refusal closes at once): a client still sending
  // must not have its bytes parsed as a next request on a connection that was refused.
  socket.destroySoon()
  if (accessLog === undefined) return
  socket.once('close', () => {
    accessLog({
      request_id: requestId,
      client_ip: clientIp,
      method: undefined,
      path: undefined,
      status,
      bytes: Buffer.byteLength(body),
      complete: socket.writableFinished,
      // Unknown: the parser does not say when the request began.
      duration_ms: undefined,
      bucket: undefined,
      replica: undefined,
      error: code,
      reason: code === 'GUARD_BAD_REQUEST' ? err.code : undefined,
      trace_id: undefined,
    })
  })
}

/**
 * Closes connections whose response the client stopped reading for `idleMs`. The socket timeout
 * alone cuts them only after about twice that: when it fires while a write is still queued and
 * the queue shrank since that write began (the kernel took part of it at once), net.Socket takes it
 * for progress and starts the timeout over. So every eighth of the timeout (at most every second)
 * the connections with queued bytes are sampled (bytes read, writes completed, bytes still queued
 * in libuv, under TLS in the TCP handle), and one whose sample has not changed for `idleMs` is
 * destroyed. Returns the stop.
 */
function watchStalledWrites(connections: () => Iterable<Socket>, idleMs: number): () => void {
  const stalled = new Map<Socket, { read: number; done: number; queued: number; since: number }>()
  const timer = setInterval(() => {
    const now = performance.now()
    for (const [socket] of stalled) if (socket.destroyed) stalled.delete(socket)
    for (const socket of connections()) {
      const pending = socket.writableLength
      if (pending === 0 || socket.destroyed) {
        stalled.delete(socket)
        continue
      }
      const read = socket.bytesRead
      const done = socket.bytesWritten - pending
      const queued = queuedInLibuv(socket)
      const seen = stalled.get(socket)
      if (seen === undefined) {
        stalled.set(socket, { read, done, queued, since: now })
      } else if (seen.read !== read || seen.done !== done || seen.queued !== queued) {
        seen.read = read
        seen.done = done
        seen.queued = queued
        seen.since = now
      } else if (now - seen.since >= idleMs) {
        stalled.delete(socket)
        socket.destroy()
      }
    }
  }, checkEvery(idleMs))
  timer.unref()
  return () => clearInterval(timer)
}

/** Node's internals the watch reads: a stream handle, and the TCP handle a TLS handle wraps. */
interface StreamHandle {
  writeQueueSize?: number
  _parent?: StreamHandle
}

/**
 * What libuv still holds of the write in progress (net.Socket's own timeout reads it too). On a
 * TLS socket that is the TCP handle under the TLS one (`_handle._parent`): TLS encrypts a large
 * write at once and hands it all to TCP, so the TLS socket's `writableLength`, `bytesWritten` and
 * its own handle's queue stay the same until the last byte is sent; only the TCP handle's queue
 * shrinks while the client reads (each time one of TLS's writes to it completes).
 */
function queuedInLibuv(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: StreamHandle | null })._handle
  return (handle?._parent ?? handle)?.writeQueueSize ?? 0
}

/** The answer to a request refused before the app sees it (overload, the parser, the own-path adapter). */
function refusalAnswer(code: ErrorCode, headers?: Record<string, string>): Answer & { body: string } {
  const requestId = randomUUID()
  const answer = errorAnswer(new ProxyError(code, { headers }), requestId)
  return { ...answer, headers: { ...answer.headers, 'x-request-id': requestId, 'x-content-type-options': 'nosniff' } }
}

function refusal(code: ErrorCode): Response {
  const { status, headers, body } = refusalAnswer(code)
  return new Response(body, { status, headers })
}

/** A refusal on the S3 listener before the app sees the request, as S3 XML with S3's request ids. */
function s3RefusalAnswer(code: ErrorCode, head: boolean, headers?: Record<string, string>): Answer & { body: string } {
  const requestId = randomUUID()
  const answer = s3ErrorAnswer(new ProxyError(code, { headers }), '/', requestId, head)
  const stamp = { 'x-request-id': requestId, 'x-amz-id-2': randomBytes(24).toString('base64'), 'x-content-type-options': 'nosniff' }
  return { ...answer, headers: { ...answer.headers, ...stamp }, body: answer.body ?? '' }
}

/** Overload on the S3 listener: S3's SlowDown, which every S3 client retries with backoff. */
function refuseS3(outgoing: StampedResponse, head: boolean): void {
  const { status, headers, body } = s3RefusalAnswer('GUARD_OVERLOADED', head, { 'retry-after': '1' })
  outgoing.writeHead(status, headers).end(head ? undefined : body)
}

function refuse(outgoing: StampedResponse, code: ErrorCode, headers?: Record<string, string>): void {
  const { status, headers: all, body } = refusalAnswer(code, headers)
  outgoing.writeHead(status, all).end(body)
}
