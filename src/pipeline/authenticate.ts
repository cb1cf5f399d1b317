// authenticate: for a bucket with auth, the request must carry a token its verifier accepts
// (401 otherwise) that passes the bucket's claim rules (403). Public buckets skip this stage's work.
// Sets `principal` (null for public buckets). A token the verifier has already checked is accepted
// without waiting on anything.
import { ProxyError } from '../errors.ts'
import type { TraceSpan } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { Principal } from '../types.ts'
import type { Exchange, Stage } from './exchange.ts'

export interface AuthenticateOptions {
  metrics: Metrics | undefined
  /** Records token verification as a span (tracing on). */
  tracing: boolean
}

export function authenticate(options: AuthenticateOptions): Stage {
  const { metrics, tracing } = options
  const refused = (bucket: string, err: unknown): never => {
    if (metrics !== undefined && err instanceof ProxyError) {
      metrics.authResults.inc({ bucket, result: err.status === 401 ? 'invalid' : 'denied', reason: err.reason ?? err.code })
    }
    throw err
  }
  const accepted = (x: Exchange, bucket: string, principal: Principal): void => {
    metrics?.authResults.inc({ bucket, result: 'ok', reason: 'ok' })
    x.principal = principal
  }

  return function authenticate(x) {
    const { bucket, key } = x.matched
    if (bucket.verifier === null) {
      x.principal = null
      return
    }
    const span = tracing ? x.span?.child('jwt.verify', { 'yatagarasu.bucket': bucket.name }) : undefined
    let outcome: Principal | Promise<Principal>
    try {
      // The exchange is the token carrier: headers, query and cookies, read only when asked for.
      outcome = bucket.verifier.authenticate(x, key)
    } catch (err) {
      endSpan(span, err)
      return refused(bucket.name, err)
    }
    if (!(outcome instanceof Promise)) {
      endSpan(span)
      return accepted(x, bucket.name, outcome)
    }
    return outcome.then(
      (principal) => {
        endSpan(span)
        accepted(x, bucket.name, principal)
      },
      (err: unknown) => {
        endSpan(span, err)
        return refused(bucket.name, err)
      }
    )
  }
}

function endSpan(span: TraceSpan | undefined, err?: unknown): void {
  if (span === undefined) return
  if (err !== undefined) span.fail(err)
  span.end()
}
