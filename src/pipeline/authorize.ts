// authorize: for a bucket with an `authorization` policy, asks it whether this principal may read
// this key (403 AUTHZ_DENIED otherwise). Runs after authenticate; buckets without a policy skip it.
import { ProxyError } from '../errors.ts'
import type { Authorizer } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { BucketRoute } from '../types.ts'
import type { Exchange, Stage } from './exchange.ts'

export interface AuthorizeOptions {
  metrics: Metrics | undefined
  /** Records the decision as a span (tracing on). */
  tracing: boolean
}

export function authorize(options: AuthorizeOptions): Stage {
  const { metrics, tracing } = options
  return function authorize(x) {
    const { bucket, key } = x.matched
    if (bucket.authorizer === null) return
    if (!tracing) return decide(x, bucket, bucket.authorizer, key, metrics)
    const span = x.span?.child('opa.decision', { 'yatagarasu.bucket': bucket.name })
    return decide(x, bucket, bucket.authorizer, key, metrics).finally(() => {
      span?.set({ 'yatagarasu.opa.reason': x.authzReason })
      span?.end()
    })
  }
}

async function decide(
  x: Exchange,
  bucket: BucketRoute,
  authorizer: Authorizer,
  key: string,
  metrics: Metrics | undefined
): Promise<void> {
  const started = performance.now()
  const decision = await authorizer.authorize({
    jwt_claims: x.principal?.claims ?? {},
    bucket: bucket.name,
    path: `${bucket.prefix}/${key}`,
    key,
    method: x.method,
    client_ip: x.clientIp,
  })
  x.authzReason = decision.reason
  if (metrics !== undefined) {
    metrics.authzDecisions.inc({ bucket: bucket.name, reason: decision.reason })
    metrics.authzDuration.observe({ bucket: bucket.name }, (performance.now() - started) / 1000)
  }
  if (!decision.allow) throw new ProxyError('AUTHZ_DENIED', { reason: decision.reason })
}
