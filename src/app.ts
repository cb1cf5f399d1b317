// createApp: the only place the order of the request pipeline is written.
//   observe -> guard -> admitClient -> route -> admitBucket -> cors -> authenticate -> admitUser
//     -> authorize -> serve                                                  (errors rendered as JSON)
// Object requests run the stage list on an Exchange and answer straight to Node's response: no web
// Request or Response, no Hono Context, and a cached object is answered in the tick its request
// arrived in. The proxy's own endpoints (/health, /ready, /admin/*) are a Hono app; server.ts
// dispatches by path (`isOwnPath`).
import cluster from 'node:cluster'
import { Hono } from 'hono'
import { adminRoutes, type AdminHooks } from './admin.ts'
import { errorAnswer, isProxyError, ProxyError } from './errors.ts'
import { clientAddressResolver } from './http/client-address.ts'
import { ipFilterOf } from './http/ip-filter.ts'
import { admitBucket, admitClient, admitUser } from './pipeline/admit.ts'
import { authenticate } from './pipeline/authenticate.ts'
import { authorize } from './pipeline/authorize.ts'
import { corsDecorate, corsPreflight } from './pipeline/cors.ts'
import type { Exchange, HonoEnv, Stage } from './pipeline/exchange.ts'
import { guard } from './pipeline/guard.ts'
import { observe } from './pipeline/observe.ts'
import { route } from './pipeline/route.ts'
import { serve } from './pipeline/serve.ts'
import type { Runtime } from './runtime.ts'
import type { Answer } from './types.ts'
import type { Logger } from './telemetry/log.ts'
import { VERSION } from './version.ts'
import { accessLogOf } from './telemetry/access-log.ts'

/** One configuration generation's request handling. */
export interface App {
  /** Answers an object request (anything that is not an own path). */
  handle(x: Exchange): void
  /** The proxy's own endpoints. */
  own: Hono<HonoEnv>
}

/**
 * The paths of the proxy's own endpoints, from the raw request target: /health, /ready and
 * /admin[/...] (no bucket may be mounted there: config/load.ts refuses such a prefix).
 */
export function isOwnPath(target: string): boolean {
  const query = target.indexOf('?')
  const path = query === -1 ? target : target.slice(0, query)
  return path === '/health' || path === '/ready' || path === '/admin' || path.startsWith('/admin/')
}

export function createApp(runtime: Runtime, hooks: AdminHooks): App {
  const { logger } = runtime
  const app = new Hono<HonoEnv>()

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
  app.use('*', observer.middleware)

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
  const ownError = (x: Exchange, err: unknown): Response => {
    const { status, headers, body } = failed(x, err, logger)
    return new Response(body, { status, headers })
  }
  app.notFound((c) => ownError(c.env, new ProxyError('ROUTE_NOT_FOUND')))
  app.onError((err, c) => ownError(c.env, err))

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
  if (timed) steps.push((x) => void (x.marks = { start: performance.now(), authenticated: 0, authorized: 0, served: 0 }))
  steps.push(guardRequest)
  if (admitClientRequest !== undefined) steps.push(admitClientRequest)
  steps.push(routeRequest)
  if (admitBucketRequest !== undefined) steps.push(admitBucketRequest)
  steps.push(corsPreflight, authenticateRequest)
  if (admitUserRequest !== undefined) steps.push(admitUserRequest)
  if (timed) steps.push(mark('authenticated'))
  steps.push(authorizeRequest)
  if (timed) steps.push(mark('authorized'))
  const markServed = mark('served')
  const finalStep: FinalStep = timed
    ? async (x) => {
        const answer = await serveRequest(x)
        markServed(x)
        return answer
      }
    : serveRequest

  /** Hands the answer to the response (errors as JSON, CORS headers added), then to observe. */
  const respond = (x: Exchange, answer: Answer, finish: () => void): void => {
    try {
      x.respond(corsDecorate(x, answer))
    } catch (err) {
      // The answer could not be written (a header value Node refuses): a plain error instead, if
      // the headers did not go out yet; a cut connection otherwise.
      x.transfer = undefined
      try {
        if (x.outgoing.headersSent) throw err
        x.respond(failed(x, err, logger))
      } catch {
        x.outgoing.destroy()
      }
    }
    finish()
  }
  const handle = (x: Exchange): void => {
    let finish = ignore
    let answer: Answer | Promise<Answer>
    try {
      finish = observer.begin(x)
      answer = runSteps(x, steps, 0, finalStep)
    } catch (err) {
      return respond(x, failed(x, err, logger), finish)
    }
    if (answer instanceof Promise) {
      answer
        .then(
          (ready) => respond(x, ready, finish),
          (err: unknown) => respond(x, failed(x, err, logger), finish)
        )
        .catch((err: unknown) => {
          // A bug in writing the answer or in its logs: never an unhandled rejection.
          logger.error({ request_id: x.requestId, err }, 'unhandled error')
          x.outgoing.destroy()
        })
    } else {
      respond(x, answer, finish)
    }
  }

  return { handle, own: app }
}

const ignore = () => {}

/** A pipeline step that answers early (a preflight) or goes on; see `Stage`. */
type Step = (x: Exchange) => ReturnType<Stage> | Answer | undefined
type FinalStep = (x: Exchange) => Answer | Promise<Answer>

function mark(stage: 'authenticated' | 'authorized' | 'served'): Step {
  return (x) => {
    if (x.marks !== undefined) x.marks[stage] = performance.now()
  }
}

/** Runs steps from `from` on, synchronously until one has to wait. */
function runSteps(x: Exchange, steps: readonly Step[], from: number, last: FinalStep): Answer | Promise<Answer> {
  for (let i = from; i < steps.length; i++) {
    const out = (steps[i] as Step)(x)
    if (out === undefined) continue
    if (out instanceof Promise) return out.then(() => runSteps(x, steps, i + 1, last))
    return out
  }
  return last(x)
}

/** The error's JSON answer; the error is kept on the exchange for the logs. */
function failed(x: Exchange, err: unknown, logger: Logger): Answer & { body: string } {
  const error = isProxyError(err) ? err : new ProxyError('INTERNAL_ERROR', { cause: err })
  if (error.source === 'internal') {
    logger.error({ request_id: x.requestId, err }, 'unhandled error')
  }
  x.error = error
  return errorAnswer(error, x.requestId)
}
