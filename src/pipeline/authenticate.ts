// authenticate: for a bucket with auth, the request must carry a token its verifier accepts
// (401 otherwise) that passes the bucket's claim rules (403). Public buckets skip this stage's work.
// Sets `principal` (null for public buckets). A token the verifier has already checked is accepted
// without waiting on anything.
import type { Context } from 'hono'
import { getCookie } from 'hono/cookie'
import { ProxyError } from '../errors.ts'
import type { TokenCarrier, TraceSpan } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { AppEnv, Principal, Stage } from '../types.ts'
import { requestHeader } from './request-target.ts'

export interface AuthenticateOptions {
  metrics: Metrics | undefined
  /** Records token verification as a span (tracing on). */
  tracing: boolean
}

/** The token sources of one request, read only when the verifier asks for them. */
class RequestCarrier implements TokenCarrier {
  readonly #c: Context<AppEnv>
  constructor(c: Context<AppEnv>) {
    this.#c = c
  }
  header(name: string): string | undefined {
    return requestHeader(this.#c, name)
  }
  query(name: string): string | undefined {
    return this.#c.req.query(name)
  }
  cookie(name: string): string | undefined {
    return getCookie(this.#c, name)
  }
}

export function authenticate(options: AuthenticateOptions): Stage {
  const { metrics, tracing } = options
  const refused = (bucket: string, err: unknown): never => {
    if (metrics !== undefined && err instanceof ProxyError) {
      metrics.authResults.inc({ bucket, result: err.status === 401 ? 'invalid' : 'denied', reason: err.reason ?? err.code })
    }
    throw err
  }
  const accepted = (c: Context<AppEnv>, bucket: string, principal: Principal): void => {
    metrics?.authResults.inc({ bucket, result: 'ok', reason: 'ok' })
    c.set('principal', principal)
  }

  return function authenticate(c) {
    const { bucket, key } = c.get('route')
    if (bucket.verifier === null) {
      c.set('principal', null)
      return
    }
    const span = tracing ? c.get('span')?.child('jwt.verify', { 'yatagarasu.bucket': bucket.name }) : undefined
    let outcome: Principal | Promise<Principal>
    try {
      outcome = bucket.verifier.authenticate(new RequestCarrier(c), key)
    } catch (err) {
      endSpan(span, err)
      return refused(bucket.name, err)
    }
    if (!(outcome instanceof Promise)) {
      endSpan(span)
      return accepted(c, bucket.name, outcome)
    }
    return outcome.then(
      (principal) => {
        endSpan(span)
        accepted(c, bucket.name, principal)
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
