// authorize: for a bucket with an `authorization` policy, asks it whether this principal may read
// this key (403 AUTHZ_DENIED otherwise). Runs after authenticate; buckets without a policy skip it.
// The S3 API's instance adds `api: "s3"` and the operation to the input (docs/authentication.md).
import { ProxyError } from '../errors.ts'
import type { Authorizer, AuthzInput } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { BucketRoute } from '../types.ts'
import type { Exchange, Stage } from './exchange.ts'

export interface AuthorizeOptions {
  metrics: Metrics | undefined
  /** Records the decision as a span (tracing on). */
  tracing: boolean
  /** For the S3 API listener: the request's S3 operation, sent to the policy with `api: "s3"`. */
  s3Operation?: ((x: Exchange) => string) | undefined
}

export function authorize(options: AuthorizeOptions): Stage {
  const { metrics, tracing, s3Operation } = options
  return function authorize(x) {
    const { bucket, key } = x.matched
    if (bucket.authorizer === null) return
    const operation = s3Operation?.(x)
    if (!tracing) return decide(x, bucket, bucket.authorizer, key, operation, metrics)
    const span = x.span?.child('opa.decision', { 'yatagarasu.bucket': bucket.name })
    return decide(x, bucket, bucket.authorizer, key, operation, metrics).finally(() => {
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
  operation: string | undefined,
  metrics: Metrics | undefined
): Promise<void> {
  const started = performance.now()
  const input: AuthzInput = {
    jwt_claims: x.principal?.claims ?? {},
    bucket: bucket.name,
    path: `${bucket.prefix}/${key}`,
    key,
    method: x.method,
    client_ip: x.clientIp,
  }
  if (operation !== undefined) {
    input.api = 's3'
    input.operation = operation
  }
  const decision = await authorizer.authorize(input)
  x.authzReason = decision.reason
  if (metrics !== undefined) {
    metrics.authzDecisions.inc({ bucket: bucket.name, reason: decision.reason })
    metrics.authzDuration.observe({ bucket: bucket.name }, (performance.now() - started) / 1000)
  }
  if (!decision.allow) throw new ProxyError('AUTHZ_DENIED', { reason: decision.reason })
}
