// createApp: the only place the order of the request pipeline is written.
//   observe -> guard -> admitClient -> route -> admitBucket -> cors -> authenticate -> admitUser
//     -> authorize -> serve                                                  (errors rendered as JSON)
// plus the proxy's own endpoints (/health, /ready, /admin/*), which skip the pipeline after observe.
// observe wraps everything as Hono middleware; the object pipeline is plain stage calls in one
// handler (no middleware chain, no promise for a stage that waits for nothing).
import cluster from 'node:cluster'
import { Hono, type Context } from 'hono'
import { adminRoutes, type AdminHooks } from './admin.ts'
import { isProxyError, ProxyError } from './errors.ts'
import { clientAddressResolver } from './http/client-address.ts'
import { ipFilterOf } from './http/ip-filter.ts'
import { admitBucket, admitClient, admitUser } from './pipeline/admit.ts'
import { authenticate } from './pipeline/authenticate.ts'
import { authorize } from './pipeline/authorize.ts'
import { corsDecorate, corsPreflight } from './pipeline/cors.ts'
import { guard } from './pipeline/guard.ts'
import { observe } from './pipeline/observe.ts'
import { route } from './pipeline/route.ts'
import { serve } from './pipeline/serve.ts'
import type { Runtime } from './runtime.ts'
import type { AppEnv } from './types.ts'
import type { Logger } from './telemetry/log.ts'
import { VERSION } from './version.ts'

export function createApp(runtime: Runtime, hooks: AdminHooks): Hono<AppEnv> {
  const { logger } = runtime
  const app = new Hono<AppEnv>()

  const queryTokenNames = [
    ...new Set(
      runtime.config.buckets.flatMap((b) =>
        (b.auth?.token_sources ?? []).flatMap((source) => (source.type === 'query' ? [source.name] : []))
      )
    ),
  ]
  const { metrics } = runtime
  const tracer = runtime.tracer?.part
  const tracing = tracer !== undefined
  const slowRequestMs = runtime.config.observability.slow_request_ms
  const { server } = runtime.config
  const clientAddressOf = clientAddressResolver(server.trusted_proxies)
  app.use(observe({ logger, queryTokenNames, metrics, audit: runtime.audit?.part, tracer, slowRequestMs, clientAddressOf }))

  app.get('/health', (c) =>
    c.json({
      status: 'healthy',
      uptime_seconds: Math.floor((Date.now() - runtime.startedAt) / 1000),
      version: VERSION,
      config_generation: runtime.generation,
      // Which cluster worker answered (absent with one process).
      worker: cluster.worker?.id,
    })
  )
  app.get('/ready', async (c) => {
    const report = await runtime.readiness.report()
    c.header('cache-control', 'no-store')
    return c.json(report, report.status === 'unavailable' ? 503 : 200)
  })

  app.route('/', adminRoutes(runtime, hooks))

  const limits = runtime.limits?.part
  const guardRequest = guard({ maxUriLength: server.max_uri_length })
  const admitClientRequest = admitClient({
    ipFilter: ipFilterOf(server.ip_filter),
    global: limits?.global ?? null,
    perIp: limits?.perIp ?? null,
    metrics,
  })
  const routeRequest = route({ buckets: runtime.buckets })
  const admitBucketRequest = runtime.buckets.some((b) => b.ipFilter !== null || b.rateLimit !== null) ? admitBucket({ metrics }) : undefined
  const admitUserRequest = admitUser({ perUser: limits?.perUser ?? null, metrics })
  const authenticateRequest = authenticate({ metrics, tracing })
  const authorizeRequest = authorize({ metrics, tracing })
  const serveRequest = serve({ debugHeaders: server.debug_headers, tracing })

  const timed = slowRequestMs > 0
  const pipeline = async (c: Context<AppEnv>): Promise<Response> => {
    // Stage timestamps only for the slow-request log.
    const marks = timed ? { start: performance.now(), authenticated: 0, authorized: 0, served: 0 } : undefined
    if (marks !== undefined) c.set('marks', marks)
    guardRequest(c)
    // A stage returns a promise only when it has to wait (a rate limit); awaiting nothing would
    // still cost a turn of the microtask queue.
    const clientAdmitted = admitClientRequest?.(c)
    if (clientAdmitted !== undefined) await clientAdmitted
    routeRequest(c)
    const bucketAdmitted = admitBucketRequest?.(c)
    if (bucketAdmitted !== undefined) await bucketAdmitted
    const preflight = corsPreflight(c)
    if (preflight !== undefined) return preflight
    const authenticated = authenticateRequest(c)
    if (authenticated !== undefined) await authenticated
    const userAdmitted = admitUserRequest?.(c)
    if (userAdmitted !== undefined) await userAdmitted
    if (marks !== undefined) marks.authenticated = performance.now()
    const authorized = authorizeRequest(c)
    if (authorized !== undefined) await authorized
    if (marks !== undefined) marks.authorized = performance.now()
    const served = serveRequest(c)
    if (marks === undefined) return served
    const res = await served
    marks.served = performance.now()
    return res
  }

  app.all('*', async (c) => {
    let res: Response
    try {
      res = await pipeline(c)
    } catch (err) {
      res = errorResponse(c, err, logger)
    }
    corsDecorate(c, res)
    return res
  })
  app.onError((err, c) => errorResponse(c, err, logger))

  return app
}

/** The JSON error answer (with the request id); the error is kept on the context for the access log. */
function errorResponse(c: Context<AppEnv>, err: unknown, logger: Logger): Response {
  const error = isProxyError(err) ? err : new ProxyError('INTERNAL_ERROR', { cause: err })
  if (error.source === 'internal') {
    logger.error({ request_id: c.get('requestId'), err }, 'unhandled error')
  }
  c.error = error
  const body = JSON.stringify({
    error: { code: error.code, message: error.message, request_id: c.get('requestId') },
  })
  return new Response(body, {
    status: error.status,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      ...error.headers,
    },
  })
}
