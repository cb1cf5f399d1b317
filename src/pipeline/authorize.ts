// authorize: for a bucket with an `authorization` policy, asks it whether this principal may read
// this key (403 AUTHZ_DENIED otherwise). Runs after authenticate; buckets without a policy skip it.
import type { Context } from 'hono'
import { ProxyError } from '../errors.ts'
import type { Authorizer } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { AppEnv, BucketRoute, Stage } from '../types.ts'
import { clientIp } from './request-target.ts'

export interface AuthorizeOptions {
  metrics: Metrics | undefined
  /** Records the decision as a span (tracing on). */
  tracing: boolean
}

export function authorize(options: AuthorizeOptions): Stage {
  const { metrics, tracing } = options
  return function authorize(c) {
    const { bucket, key } = c.get('route')
    if (bucket.authorizer === null) return
    if (!tracing) return decide(c, bucket, bucket.authorizer, key, metrics)
    const span = c.get('span')?.child('opa.decision', { 'yatagarasu.bucket': bucket.name })
    return decide(c, bucket, bucket.authorizer, key, metrics).finally(() => {
      span?.set({ 'yatagarasu.opa.reason': c.get('authzReason') })
      span?.end()
    })
  }
}

async function decide(
  c: Context<AppEnv>,
  bucket: BucketRoute,
  authorizer: Authorizer,
  key: string,
  metrics: Metrics | undefined
): Promise<void> {
  const started = performance.now()
  const decision = await authorizer.authorize({
    jwt_claims: c.get('principal')?.claims ?? {},
    bucket: bucket.name,
    path: `${bucket.prefix}/${key}`,
    key,
    method: c.req.method,
    client_ip: clientIp(c),
  })
  c.set('authzReason', decision.reason)
  if (metrics !== undefined) {
    metrics.authzDecisions.inc({ bucket: bucket.name, reason: decision.reason })
    metrics.authzDuration.observe({ bucket: bucket.name }, (performance.now() - started) / 1000)
  }
  if (!decision.allow) throw new ProxyError('AUTHZ_DENIED', { reason: decision.reason })
}
