// createApp: the only place the order of the request pipeline is written.
//   observe -> guard -> admitClient -> route -> admitBucket -> cors -> authenticate -> admitUser
//     -> authorize -> [represent ->] serve                                   (errors rendered as JSON)
// The S3 API listener (frontends/s3-api) runs the same stages with its own edge:
//   observe -> s3Classify -> guard -> admitClient -> s3Admit -> admitBucket -> admitUser
//     -> authorize -> serve (objects) | s3Operations (buckets, listings)     (errors rendered as S3 XML)
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
import { represent, type Objects } from './pipeline/represent.ts'
import { answerEntry, currentVersion, serve, wholeObject } from './pipeline/serve.ts'
import type { Runtime } from './runtime.ts'
import type { Answer } from './types.ts'
import type { Logger } from './telemetry/log.ts'
import { VERSION } from './version.ts'
import { accessLogOf } from './telemetry/access-log.ts'
import type { S3Exchange } from './frontends/s3-api/exchange.ts'
import { s3Operations } from './frontends/s3-api/operations.ts'
import { S3Error } from './frontends/s3-api/errors.ts'
import { s3Admit, s3Classify, s3Failed, s3ObjectAnswer, s3Stamp } from './frontends/s3-api/stage.ts'
import { isStsRequest, stsExchange, stsFailed } from './frontends/s3-api/sts.ts'

/** One configuration generation's request handling. */
export interface App {
  /** Answers an object request (anything that is not an own path). */
  handle(x: Exchange): void
  /** Answers a request to the S3 API listener (an S3Exchange), in S3's format. */
  handleS3(x: S3Exchange): void
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
  const serveObject = serve({
    debugHeaders: server.debug_headers,
    tracing,
    fillFailed: (bucket, key, error) => logger.warn({ bucket, key, error: error.code, reason: error.reason }, 'cache fill failed: its answers went on from ranged GETs'),
  })
  // Image variants, watermarks and compression, only when a bucket has one of them; represent
  // reaches the object through serve's functions, handed over here.
  const representing = runtime.buckets.some((b) => b.representations !== null)
  const objects: Objects = {
    serve: serveObject,
    currentVersion,
    wholeObject,
    answerEntry: (x, entry, outcome) => answerEntry(x, entry, outcome, server.debug_headers),
  }
  const representWith = (watermarksOnly: boolean) => represent({ objects, metrics, watermarksOnly })
  const serveRequest = representing ? representWith(false) : serveObject
  const serveS3Object = representing ? representWith(true) : serveObject

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

  /**
   * Hands an answer to the response (decorated: CORS on the HTTP path), then to observe. An answer
   * that cannot be written (a header value Node refuses) becomes `fail`'s error if the headers did
   * not go out yet, a cut connection otherwise.
   */
  const responder =
    (decorate: (x: Exchange, answer: Answer) => Answer, fail: (x: Exchange, err: unknown) => Answer) =>
    (x: Exchange, answer: Answer, finish: () => void): void => {
      try {
        x.respond(decorate(x, answer))
      } catch (err) {
        x.transfer = undefined
        try {
          if (x.outgoing.headersSent) throw err
          x.respond(fail(x, err))
        } catch {
          x.outgoing.destroy()
        }
      }
      finish()
    }
  const failJson = (x: Exchange, err: unknown) => failed(x, err, logger)
  const respond = responder(corsDecorate, failJson)
  /** Runs `run` observed, hands its answer (or its error, rendered by `fail`) to the response. */
  const answerWith = (x: Exchange, run: (x: Exchange) => Answer | Promise<Answer>, fail: (x: Exchange, err: unknown) => Answer, write: typeof respond, begun?: () => void): void => {
    let finish = ignore
    let answer: Answer | Promise<Answer>
    try {
      finish = observer.begin(x)
      begun?.()
      answer = run(x)
    } catch (err) {
      return write(x, fail(x, err), finish)
    }
    if (answer instanceof Promise) {
      answer
        .then(
          (ready) => write(x, ready, finish),
          (err: unknown) => write(x, fail(x, err), finish)
        )
        .catch((err: unknown) => {
          // A bug in writing the answer or in its logs: never an unhandled rejection.
          logger.error({ request_id: x.requestId, err }, 'unhandled error')
          x.outgoing.destroy()
        })
    } else {
      write(x, answer, finish)
    }
  }
  const runObject = (x: Exchange) => runSteps(x, steps, 0, finalStep)
  const handle = (x: Exchange): void => answerWith(x, runObject, failJson, respond)

  // The S3 API listener: the same stages between its own edge steps; no CORS (S3 clients are not
  // browsers), answers and errors in S3's format.
  const s3 = runtime.s3Api
  const failS3 = (x: Exchange, err: unknown) => s3Failed(x, err, (e) => logger.error({ request_id: x.requestId, err: e }, 'unhandled error'))
  const respondS3 = responder(asIs, failS3)
  let runS3: (x: Exchange) => Answer | Promise<Answer>
  if (s3 === null) {
    runS3 = () => {
      throw new S3Error('ServiceUnavailable', 503, 'The S3 API is turned off in the running configuration.', 's3_api_off')
    }
  } else {
    const s3Steps: Step[] = [s3Classify({ domain: s3.domain }), guardRequest]
    if (admitClientRequest !== undefined) s3Steps.push(admitClientRequest)
    s3Steps.push(s3Admit({ s3, buckets: runtime.buckets }))
    // Past this point the request names a bucket, except ListBuckets (no bucket stage applies).
    const ifBucket = (step: Step): Step => (x) => (x.route === undefined ? undefined : step(x))
    if (admitBucketRequest !== undefined) s3Steps.push(ifBucket(admitBucketRequest))
    if (admitUserRequest !== undefined) s3Steps.push(admitUserRequest)
    s3Steps.push(ifBucket(authorize({ metrics, tracing, s3Operation: (x) => (x as S3Exchange).operation ?? '' })))
    const operations = s3Operations({ region: s3.region, buckets: runtime.buckets, pages: s3.pages, created: new Date(runtime.startedAt) })
    const s3Final: FinalStep = (exchange) => {
      const x = exchange as S3Exchange
      const operation = x.operation
      if (operation !== 'GetObject' && operation !== 'HeadObject') return operations(x)
      const answer = serveS3Object(x)
      return answer instanceof Promise ? answer.then((ready) => s3ObjectAnswer(x, ready)) : s3ObjectAnswer(x, answer)
    }
    runS3 = (x) => runSteps(x, s3Steps, 0, s3Final)
  }
  // AssumeRoleWithWebIdentity (`POST /` with a form, or `?Action=`): the one request with a body
  // the S3 listener reads, bounded; guard's checks that apply (host, target length) run in it.
  const sts = s3?.sts ?? null
  let handleSts: ((x: S3Exchange) => void) | undefined
  if (sts !== null) {
    const stsSteps: Step[] = admitClientRequest === undefined ? [] : [admitClientRequest]
    const exchange = stsExchange({ sts, maxUriLength: server.max_uri_length })
    const runSts = (x: Exchange) => runSteps(x, stsSteps, 0, exchange)
    const failSts = (x: Exchange, err: unknown) => stsFailed(x, err, (e) => logger.error({ request_id: x.requestId, err: e }, 'unhandled error'))
    handleSts = (x) => answerWith(x, runSts, failSts, respondS3, () => s3Stamp(x))
  }
  const handleS3 = (x: S3Exchange): void => {
    if (handleSts !== undefined && isStsRequest(x)) return handleSts(x)
    answerWith(x, runS3, failS3, respondS3, () => s3Stamp(x))
  }

  return { handle, handleS3, own: app }
}

const ignore = () => {}
const asIs = (_x: Exchange, answer: Answer): Answer => answer

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
