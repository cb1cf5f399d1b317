// observe: first and last stage. Gives every request an id (the client's X-Request-ID when it is
// a safe token, else a new UUID), stamps it and the always-on security header on the response, and
// writes one access-log line when the response is over (after the last byte, or when the connection
// died), with the bytes actually sent. The path is logged without its query string, so a `?token=`
// never reaches the logs.
//
// Object requests are observed by app.ts with `begin` around the stage list, which keeps a
// synchronous answer (a cached object) synchronous: no middleware chain, no promise, no extra tick.
// The proxy's own endpoints (Hono) use the middleware. Either way the end of the response is
// signalled once by server.ts (one 'close' listener per request, which also frees the request's
// concurrency slot).
import { randomUUID } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import type { ClientAddressOf } from '../http/client-address.ts'
import { rawPathOf } from '../http/path.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import type { Logger } from '../telemetry/log.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { AuditSink, Tracer, TraceSpan } from '../ports.ts'
import type { AuditRecord, CacheUse } from '../types.ts'
import type { Exchange, HonoEnv } from './exchange.ts'

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface ObserveOptions {
  logger: Logger
  /** Undefined when `info` lines are not logged: no line is built then. */
  accessLog: AccessLog | undefined
  /** Undefined when metrics are off: no metric work at all then. */
  metrics: Metrics | undefined
  /** Query parameter names any bucket reads a token from. */
  queryTokenNames: readonly string[]
  /** Undefined when the audit log is off: no record is built then. */
  audit: AuditSink | undefined
  /** Undefined when tracing is off: no span is created then. */
  tracer: Tracer | undefined
  /** Requests slower than this are logged at warn with their stage timings; 0: never. */
  slowRequestMs: number
  /** The client's address from the socket peer and, from trusted proxies, X-Forwarded-For. */
  clientAddressOf: ClientAddressOf
}

export interface Observer {
  /**
   * Starts observing a request; the returned function is called once its answer was handed to the
   * response (`status` set), and writes the logs and metrics when the response is over.
   */
  begin(x: Exchange): () => void
  /** For the proxy's own endpoints (/health, /ready, /admin/*). */
  middleware: MiddlewareHandler<HonoEnv>
}

export function observe(options: ObserveOptions): Observer {
  const { logger, accessLog, queryTokenNames, metrics, audit, tracer, slowRequestMs, clientAddressOf } = options

  /** Starts observing a request; the returned function finishes it with its response. */
  const begin = (x: Exchange): (() => void) => {
    const started = performance.now()
    metrics?.inFlight.inc()
    const offered = x.header('x-request-id')
    const requestId = offered !== undefined && SAFE_REQUEST_ID.test(offered) ? offered : randomUUID()
    x.requestId = requestId
    const { incoming, outgoing } = x
    x.clientIp = clientAddressOf(incoming.socket.remoteAddress, incoming.headers)
    const span = tracer === undefined ? undefined : startServerSpan(tracer, x)
    x.span = span

    // A token in the URL must not leak to third parties through the Referer header, whatever the
    // outcome of the request.
    const tokenInUrl = queryTokenNames.length > 0 && carriesQueryToken(x.target, queryTokenNames)
    // Written with whatever the app answers (see http/stamped-response.ts).
    outgoing.stamp = tokenInUrl
      ? { 'x-request-id': requestId, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' }
      : { 'x-request-id': requestId, 'x-content-type-options': 'nosniff' }

    const ended = () => {
      const { transfer, route, status } = x
      const error = x.error
      const seconds = (performance.now() - started) / 1000
      const bytes = transfer !== undefined ? transfer.bytesSent() : x.bodyBytes
      if (metrics !== undefined) record(metrics, x.method, status, seconds, bytes, route?.bucket.name, x.cacheUse)
      const complete = outgoing.writableFinished
      if (span !== undefined) endServerSpan(span, x, status, bytes, error)
      if (audit !== undefined) audit.record(auditRecord(x, started, status, bytes, complete, seconds))
      if (slowRequestMs > 0 && seconds * 1000 >= slowRequestMs) logSlow(logger, x, started, seconds)
      accessLog?.({
        request_id: requestId,
        client_ip: x.clientIp,
        method: x.method,
        path: rawPathOf(x.target),
        status,
        bytes,
        complete,
        duration_ms: Math.round(seconds * 1e6) / 1000,
        bucket: route?.bucket.name,
        replica: x.replica,
        representation: x.representation,
        error: error?.code,
        reason: error?.reason,
        trace_id: span?.traceId,
      })
    }
    // The end is signalled once the response is over, unless it already was (the client left
    // before the answer was ready).
    return () => {
      if (x.ended) ended()
      else x.responseEnded = ended
    }
  }

  return {
    begin,
    middleware: async (c, next) => {
      const x = c.env
      const finish = begin(x)
      await next()
      x.status = c.res.status
      x.bodyBytes = Number(c.res.headers.get('content-length') ?? 0)
      finish()
    },
  }
}

function carriesQueryToken(target: string, names: readonly string[]): boolean {
  const query = target.indexOf('?')
  if (query === -1) return false
  const params = new URLSearchParams(target.slice(query + 1))
  return names.some((name) => params.has(name))
}

function record(
  metrics: Metrics,
  method: string,
  status: number,
  seconds: number,
  bytes: number,
  bucket = '',
  cacheUse: CacheUse | undefined
): void {
  metrics.inFlight.dec()
  metrics.requests.inc({ bucket, method, status: String(status) })
  metrics.requestDuration.observe({ bucket, method, status_class: statusClass(status) }, seconds)
  metrics.bytesSent.inc({ bucket, tier: cacheUse?.tier ?? 'none' }, bytes)
  if (cacheUse === undefined) return
  metrics.cacheRequests.inc({ bucket, result: cacheUse.result })
  if (cacheUse.result === 'hit' && cacheUse.tier !== undefined) metrics.cacheHitBytes.inc({ bucket, tier: cacheUse.tier }, bytes)
}

/** The audit record of a finished request: identity, object, outcome; never a secret. */
function auditRecord(x: Exchange, started: number, status: number, bytes: number, complete: boolean, seconds: number): AuditRecord {
  const { route, principal, cacheUse, authzReason, error } = x
  const refusedByAuth = error?.code !== undefined && (error.code.startsWith('AUTH_') || error.code.startsWith('AUTHZ_'))
  const referer = x.header('referer')
  const jti = principal?.claims.jti
  return {
    timestamp: new Date(performance.timeOrigin + started).toISOString(),
    request_id: x.requestId,
    trace_id: x.span?.traceId,
    client_ip: x.clientIp,
    user: principal?.subject,
    jti: typeof jti === 'string' ? jti : undefined,
    kid: principal?.keyId,
    bucket: route?.bucket.name,
    key: route?.key,
    method: x.method,
    range: x.header('range'),
    status,
    bytes,
    complete,
    duration_ms: Math.round(seconds * 1e6) / 1000,
    cache: cacheUse?.result,
    cache_tier: cacheUse?.tier,
    replica: x.replica,
    representation: x.representation,
    auth: refusedByAuth ? 'denied' : principal === null ? 'anonymous' : principal !== undefined ? 'allowed' : undefined,
    auth_reason: refusedByAuth ? (error?.reason ?? error?.code) : authzReason,
    opa_decision: authzReason,
    error: error?.code,
    user_agent: x.header('user-agent'),
    referer: referer === undefined ? undefined : referer.split(/[?#]/, 1)[0],
  }
}

/** The server span (HTTP semantic conventions); the route is filled in once it is known. */
function startServerSpan(tracer: Tracer, x: Exchange): TraceSpan {
  const { incoming } = x
  return tracer.startRequest(x.method, incoming.headers, {
    'http.request.method': x.method,
    'network.protocol.version': incoming.httpVersion,
    'client.address': x.clientIp,
    'user_agent.original': x.header('user-agent'),
    'yatagarasu.request_id': x.requestId,
  })
}

function endServerSpan(span: TraceSpan, x: Exchange, status: number, bytes: number, error: { code?: string } | undefined): void {
  const { route } = x
  // The bucket prefix is the route template: the key never becomes a span name or attribute.
  const template = route === undefined ? undefined : `${route.bucket.prefix}/*`
  span.set({
    'http.route': template,
    'http.response.status_code': status,
    'http.response.body.size': bytes,
    'yatagarasu.bucket': route?.bucket.name,
    'yatagarasu.cache.result': x.cacheUse?.result,
    'yatagarasu.replica': x.replica,
  })
  if (status >= 500) span.fail(error ?? { code: String(status) })
  span.end()
}

/** A warn line for a slow request, with where the time went. */
function logSlow(logger: Logger, x: Exchange, started: number, seconds: number): void {
  const { marks } = x
  const ms = (from: number, to: number) => (from > 0 && to > 0 ? Math.round((to - from) * 1000) / 1000 : undefined)
  const end = started + seconds * 1000
  logger.warn(
    {
      request_id: x.requestId,
      bucket: x.route?.bucket.name,
      duration_ms: Math.round(seconds * 1e6) / 1000,
      stages_ms: {
        auth: ms(marks?.start ?? 0, marks?.authenticated ?? 0),
        authz: ms(marks?.authenticated ?? 0, marks?.authorized ?? 0),
        // Cache lookup plus, on a miss, the backend up to its response headers.
        fetch: ms(marks?.authorized ?? 0, marks?.served ?? 0),
        transfer: ms(marks?.served ?? 0, end),
      },
      cache: x.cacheUse?.result,
      replica: x.replica,
    },
    'slow request'
  )
}

/** `2xx`, `4xx`...: the status label of the request duration histogram. */
function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`
}
