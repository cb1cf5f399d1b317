// createApp: the only place the order of the request pipeline is written.
//   observe -> guard -> admitClient -> route -> admitBucket -> cors -> authenticate -> admitUser
//     -> authorize -> serve                                                  (errors rendered as JSON)
// plus the proxy's own endpoints (/health, /ready, /admin/*), which skip the pipeline after observe.
// The own endpoints are observed by a Hono middleware; an object request matches one handler only
// (observe around a plain list of stage calls), so Hono answers it without a middleware chain and a
// cached object is answered in the tick its request arrived in.
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
import { observe, type ObjectHandler } from './pipeline/observe.ts'
import { route } from './pipeline/route.ts'
import { serve } from './pipeline/serve.ts'
import type { Runtime } from './runtime.ts'
import type { AppEnv } from './types.ts'
import type { Logger } from './telemetry/log.ts'
import { VERSION } from './version.ts'
import { accessLogOf } from './telemetry/access-log.ts'

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
  const observer = observe({
    logger,
    accessLog: accessLogOf(logger),
    queryTokenNames,
    metrics,
    audit: runtime.audit?.part,
    tracer,
    slowRequestMs,
    clientAddressOf,
  })
  for (const path of OWN_PATHS) app.use(path, observer.middleware)

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

  // The object pipeline as a list of steps, only those configured. A step returns a promise only
  // when it has to wait (a token to verify, a rate limit in Redis): a cached object with a cached
  // token is answered in the same tick, without a single promise.
  const timed = slowRequestMs > 0
  const steps: Step[] = []
  if (timed) steps.push((c) => void c.set('marks', { start: performance.now(), authenticated: 0, authorized: 0, served: 0 }))
  steps.push(guardRequest)
  if (admitClientRequest !== undefined) steps.push(admitClientRequest)
  steps.push(routeRequest)
  if (admitBucketRequest !== undefined) steps.push(admitBucketRequest)
  steps.push(corsPreflight, authenticateRequest)
  if (admitUserRequest !== undefined) steps.push(admitUserRequest)
  if (timed) steps.push((c) => void (c.get('marks').authenticated = performance.now()))
  steps.push(authorizeRequest)
  if (timed) steps.push((c) => void (c.get('marks').authorized = performance.now()))
  const finalStep: ObjectHandler = timed
    ? async (c) => {
        const res = await serveRequest(c)
        c.get('marks').served = performance.now()
        return res
      }
    : serveRequest

  const answer = (c: Context<AppEnv>, res: Response): Response => {
    corsDecorate(c, res)
    return res
  }
  const refuse = (c: Context<AppEnv>, err: unknown): Response => answer(c, errorResponse(c, err, logger))
  app.all(
    '*',
    observer.around((c) => {
      const res = runSteps(c, steps, 0, finalStep)
      return res instanceof Promise ? res.then((r) => answer(c, r)) : answer(c, res)
    }, refuse)
  )
  app.onError((err, c) => errorResponse(c, err, logger))

  return app
}

/** The proxy's own endpoints, observed by the middleware (everything else by the object handler). */
// Hono's '/admin/*' matches '/admin' too.
const OWN_PATHS = ['/health', '/ready', '/admin/*'] as const

/** A pipeline step: nothing to go on, a Response to answer now, or a promise of either. */
type Step = (c: Context<AppEnv>) => void | Response | Promise<void>

/** Runs steps from `from` on, synchronously until one has to wait. */
function runSteps(
  c: Context<AppEnv>,
  steps: readonly Step[],
  from: number,
  last: ObjectHandler
): Response | Promise<Response> {
  for (let i = from; i < steps.length; i++) {
    const out = (steps[i] as Step)(c)
    if (out === undefined) continue
    if (out instanceof Promise) return out.then(() => runSteps(c, steps, i + 1, last))
    return out
  }
  return last(c)
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
