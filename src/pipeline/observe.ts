// observe: first and last stage. Gives every request an id (the client's X-Request-ID when it is
// a safe token, else a new UUID), stamps it and the always-on security header on the response, and
// writes one access-log line when the response is over (after the last byte, or when the connection
// died), with the bytes actually sent. The path is logged without its query string, so a `?token=`
// never reaches the logs.
//
// Object requests are observed by `around`, which keeps a synchronous answer (a cached object)
// synchronous: no middleware chain, no promise, no extra tick. The proxy's own endpoints use the
// Hono middleware. Either way the end of the response is signalled once by server.ts (one 'close'
// listener per request, which also frees the request's concurrency slot).
import { randomUUID } from 'node:crypto'
import type { Context, Handler, MiddlewareHandler } from 'hono'
import type { ClientAddressOf } from '../http/client-address.ts'
import { rawPathOf } from '../http/path.ts'
import type { AccessLog } from '../telemetry/access-log.ts'
import type { Logger } from '../telemetry/log.ts'
import { statusClass, type Metrics } from '../telemetry/metrics.ts'
import type { AuditSink, Tracer, TraceSpan } from '../ports.ts'
import type { AppEnv, AuditRecord, CacheUse } from '../types.ts'
import { clientIp, requestHeader, requestTarget } from './request-target.ts'

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

export type ObjectHandler = (c: Context<AppEnv>) => Response | Promise<Response>

export interface Observer {
  /** For the proxy's own endpoints (/health, /ready, /admin/*). */
  middleware: MiddlewareHandler<AppEnv>
  /**
   * Wraps the object handler (`refuse` answers what it throws or rejects with); a request the
   * middleware already observes is not observed twice.
   */
  around(handler: ObjectHandler, refuse: (c: Context<AppEnv>, err: unknown) => Response): Handler<AppEnv>
}

export function observe(options: ObserveOptions): Observer {
  const { logger, accessLog, queryTokenNames, metrics, audit, tracer, slowRequestMs, clientAddressOf } = options

  /** Starts observing a request; the returned function finishes it with its response. */
  const begin = (c: Context<AppEnv>): ((res: Response) => void) => {
    const started = performance.now()
    metrics?.inFlight.inc()
    const offered = requestHeader(c, 'x-request-id')
    const requestId = offered !== undefined && SAFE_REQUEST_ID.test(offered) ? offered : randomUUID()
    c.set('requestId', requestId)
    const env = c.env
    const incoming = env?.incoming
    c.set('clientIp', clientAddressOf(incoming?.socket.remoteAddress, incoming?.headers))
    const span = tracer === undefined ? undefined : startServerSpan(tracer, c)
    if (span !== undefined) c.set('span', span)

    const outgoing = env?.outgoing
    // A token in the URL must not leak to third parties through the Referer header, whatever the
    // outcome of the request.
    const tokenInUrl = queryTokenNames.length > 0 && carriesQueryToken(requestTarget(c), queryTokenNames)
    const stamp: Record<string, string> = tokenInUrl
      ? { 'x-request-id': requestId, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' }
      : { 'x-request-id': requestId, 'x-content-type-options': 'nosniff' }
    // Written with whatever the app answers (see http/stamped-response.ts).
    if (outgoing !== undefined) outgoing.stamp = stamp

    return (res) => {
      if (outgoing === undefined) for (const name in stamp) res.headers.set(name, stamp[name] as string)
      const ended = () => {
        const transfer = c.get('transfer')
        const route = c.get('route')
        const error = c.error as { code?: string; reason?: string } | undefined
        const seconds = (performance.now() - started) / 1000
        const bytes = transfer !== undefined ? transfer.bytesSent() : Number(res.headers.get('content-length') ?? 0)
        if (metrics !== undefined) record(metrics, c.req.method, res.status, seconds, bytes, route?.bucket.name, c.get('cacheUse'))
        const complete = outgoing === undefined ? true : outgoing.writableFinished
        if (span !== undefined) endServerSpan(span, c, res.status, bytes, error)
        if (audit !== undefined) audit.record(auditRecord(c, started, requestId, res.status, bytes, complete, seconds, error))
        if (slowRequestMs > 0 && seconds * 1000 >= slowRequestMs) logSlow(logger, c, requestId, started, seconds)
        accessLog?.({
          request_id: requestId,
          client_ip: clientIp(c),
          method: c.req.method,
          path: rawPathOf(requestTarget(c)),
          status: res.status,
          bytes,
          complete,
          duration_ms: Math.round(seconds * 1e6) / 1000,
          bucket: route?.bucket.name,
          replica: c.get('replica'),
          error: error?.code,
          reason: error?.reason,
          trace_id: span?.traceId,
        })
      }
      // Under server.ts the end is signalled once the response is over (unless it already was:
      // the client left before the answer was ready); under `app.request()` it is over now.
      if (env !== undefined && env.ended === false) env.responseEnded = ended
      else ended()
    }
  }

  return {
    middleware: async (c, next) => {
      // Already observed (an own path under two patterns): once is enough.
      if (c.get('requestId') !== undefined) return next()
      const finish = begin(c)
      await next()
      finish(c.res)
    },
    around: (handler, refuse) => (c) => {
      // An own path that fell through to the object handler (e.g. an unknown /admin/x).
      if (c.get('requestId') !== undefined) return handler(c)
      const finish = begin(c)
      const finished = (res: Response): Response => {
        finish(res)
        return res
      }
      let res: Response | Promise<Response>
      try {
        res = handler(c)
      } catch (err) {
        return finished(refuse(c, err))
      }
      if (res instanceof Promise) return res.then(finished, (err: unknown) => finished(refuse(c, err)))
      return finished(res)
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
function auditRecord(
  c: Context<AppEnv>,
  started: number,
  requestId: string,
  status: number,
  bytes: number,
  complete: boolean,
  seconds: number,
  error: { code?: string; reason?: string } | undefined
): AuditRecord {
  const route = c.get('route')
  const principal = c.get('principal')
  const cacheUse = c.get('cacheUse')
  const authzReason = c.get('authzReason')
  const refusedByAuth = error?.code !== undefined && (error.code.startsWith('AUTH_') || error.code.startsWith('AUTHZ_'))
  const referer = requestHeader(c, 'referer')
  const jti = principal?.claims.jti
  return {
    timestamp: new Date(performance.timeOrigin + started).toISOString(),
    request_id: requestId,
    trace_id: c.get('span')?.traceId,
    client_ip: clientIp(c),
    user: principal?.subject,
    jti: typeof jti === 'string' ? jti : undefined,
    kid: principal?.keyId,
    bucket: route?.bucket.name,
    key: route?.key,
    method: c.req.method,
    range: requestHeader(c, 'range'),
    status,
    bytes,
    complete,
    duration_ms: Math.round(seconds * 1e6) / 1000,
    cache: cacheUse?.result,
    cache_tier: cacheUse?.tier,
    replica: c.get('replica'),
    auth: refusedByAuth ? 'denied' : principal === null ? 'anonymous' : principal !== undefined ? 'allowed' : undefined,
    auth_reason: refusedByAuth ? (error?.reason ?? error?.code) : authzReason,
    opa_decision: authzReason,
    error: error?.code,
    user_agent: requestHeader(c, 'user-agent'),
    referer: referer === undefined ? undefined : referer.split(/[?#]/, 1)[0],
  }
}

/** The server span (HTTP semantic conventions); the route is filled in once it is known. */
function startServerSpan(tracer: Tracer, c: Context<AppEnv>): TraceSpan {
  const incoming = c.env?.incoming
  return tracer.startRequest(c.req.method, incoming?.headers ?? {}, {
    'http.request.method': c.req.method,
    'network.protocol.version': incoming?.httpVersion,
    'client.address': clientIp(c),
    'user_agent.original': requestHeader(c, 'user-agent'),
    'yatagarasu.request_id': c.get('requestId'),
  })
}

function endServerSpan(span: TraceSpan, c: Context<AppEnv>, status: number, bytes: number, error: { code?: string } | undefined): void {
  const route = c.get('route')
  // The bucket prefix is the route template: the key never becomes a span name or attribute.
  const template = route === undefined ? undefined : `${route.bucket.prefix}/*`
  span.set({
    'http.route': template,
    'http.response.status_code': status,
    'http.response.body.size': bytes,
    'yatagarasu.bucket': route?.bucket.name,
    'yatagarasu.cache.result': c.get('cacheUse')?.result,
    'yatagarasu.replica': c.get('replica'),
  })
  if (status >= 500) span.fail(error ?? { code: String(status) })
  span.end()
}

/** A warn line for a slow request, with where the time went. */
function logSlow(logger: Logger, c: Context<AppEnv>, requestId: string, started: number, seconds: number): void {
  const marks = c.get('marks')
  const ms = (from: number, to: number) => (from > 0 && to > 0 ? Math.round((to - from) * 1000) / 1000 : undefined)
  const end = started + seconds * 1000
  logger.warn(
    {
      request_id: requestId,
      bucket: c.get('route')?.bucket.name,
      duration_ms: Math.round(seconds * 1e6) / 1000,
      stages_ms: {
        auth: ms(marks?.start ?? 0, marks?.authenticated ?? 0),
        authz: ms(marks?.authenticated ?? 0, marks?.authorized ?? 0),
        // Cache lookup plus, on a miss, the backend up to its response headers.
        fetch: ms(marks?.authorized ?? 0, marks?.served ?? 0),
        transfer: ms(marks?.served ?? 0, end),
      },
      cache: c.get('cacheUse')?.result,
      replica: c.get('replica'),
    },
    'slow request'
  )
}
