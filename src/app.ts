// createApp: the only place the order of the request pipeline is written.
//   observe -> guard -> route -> cors -> authenticate -> authorize -> serve   (onError renders errors)
// plus the proxy's own endpoints (/health, /ready, /admin/*), which skip the pipeline after observe.
import { Hono } from 'hono'
import { adminRoutes } from './admin.ts'
import { isProxyError, ProxyError } from './errors.ts'
import { authenticate } from './pipeline/authenticate.ts'
import { authorize } from './pipeline/authorize.ts'
import { cors } from './pipeline/cors.ts'
import { guard } from './pipeline/guard.ts'
import { observe } from './pipeline/observe.ts'
import { route } from './pipeline/route.ts'
import { serve } from './pipeline/serve.ts'
import type { Runtime } from './runtime.ts'
import type { AppEnv } from './types.ts'
import { VERSION } from './version.ts'

export function createApp(runtime: Runtime): Hono<AppEnv> {
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
  app.use(observe({ logger, queryTokenNames, metrics }))

  app.get('/health', (c) =>
    c.json({
      status: 'healthy',
      uptime_seconds: Math.floor((Date.now() - runtime.startedAt) / 1000),
      version: VERSION,
      config_generation: runtime.generation,
    })
  )
  app.get('/ready', async (c) => {
    const report = await runtime.readiness.report()
    c.header('cache-control', 'no-store')
    return c.json(report, report.status === 'ready' ? 200 : 503)
  })

  app.route('/', adminRoutes(runtime))

  app.use(guard({ maxUriLength: runtime.config.server.max_uri_length }))
  app.use(route({ buckets: runtime.buckets }))
  app.use(cors())
  app.use(authenticate({ metrics }))
  app.use(authorize({ metrics }))
  app.all('*', serve())

  app.onError((err, c) => {
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
  })

  return app
}
