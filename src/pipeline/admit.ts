// admit: who may send requests at all, before any token or object work. IP allow/deny lists (403)
// and rate limits (429 with Retry-After and RateLimit-* headers), checked where their key is known:
//   admitClient  before routing: server.ip_filter, per-IP (IPv6 by /64) and global limits
//   admitBucket  after routing:  the bucket's ip_filter and its own limit
//   admitUser    after authentication: the per-user limit, keyed by the token's `sub`
// Each is built only when something is configured: no work per request otherwise.
import { ProxyError } from '../errors.ts'
import { parseAddress } from '../http/ip-range.ts'
import type { RateLimiter, RateLimitRefusal } from '../ports.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { IpFilter } from '../types.ts'
import type { Stage } from './exchange.ts'

export interface ClientLimits {
  ipFilter: IpFilter | null
  global: RateLimiter | null
  perIp: RateLimiter | null
  metrics: Metrics | undefined
}

export function admitClient(options: ClientLimits): Stage | undefined {
  const { ipFilter, global, perIp, metrics } = options
  if (ipFilter === null && global === null && perIp === null) return undefined
  return function admitClient(x) {
    const ip = x.clientIp
    if (ipFilter !== null && !ipFilter.admits(ip)) refuseAddress(metrics)
    if (global === null && perIp === null) return
    return (async () => {
      // Per client first: a client over its own limit must not spend everyone's global budget.
      // One after the other is cheap even when the store hangs: the limiters share one breaker per
      // store, so a hung Redis costs a few timeouts in all, then none (security/rate-limit.ts).
      if (perIp !== null) refuseWhenSpent(await perIp.take(rateKeyOf(ip)), 'per_ip', metrics)
      if (global !== null) refuseWhenSpent(await global.take('all'), 'global', metrics)
    })()
  }
}

export function admitBucket(options: { metrics: Metrics | undefined }): Stage {
  const { metrics } = options
  return function admitBucket(x) {
    const { bucket } = x.matched
    if (bucket.ipFilter !== null && !bucket.ipFilter.admits(x.clientIp)) refuseAddress(metrics)
    const limit = bucket.rateLimit
    if (limit === null) return
    return limit.take('all').then((refusal) => refuseWhenSpent(refusal, 'bucket', metrics))
  }
}

/** Requests without a token subject (public buckets) are left to the per-IP limit. */
export function admitUser(options: { perUser: RateLimiter | null; metrics: Metrics | undefined }): Stage | undefined {
  const { perUser, metrics } = options
  if (perUser === null) return undefined
  return function admitUser(x) {
    const subject = x.principal?.subject
    if (subject === undefined) return
    return perUser.take(subject).then((refusal) => refuseWhenSpent(refusal, 'per_user', metrics))
  }
}

/**
 * An IPv6 client is counted by its /64: one host usually holds a whole /64 and could otherwise
 * rotate addresses to get a fresh budget per request.
 */
export function rateKeyOf(ip: string): string {
  if (!ip.includes(':')) return ip
  const address = parseAddress(ip)
  if (address === undefined || address.kind() === 'ipv4') return address?.toString() ?? ip
  return `${address.toNormalizedString().split(':').slice(0, 4).join(':')}::/64`
}

function refuseAddress(metrics: Metrics | undefined): never {
  metrics?.requestsRefused.inc({ reason: 'ip_filter' })
  throw new ProxyError('GUARD_IP_DENIED', { reason: 'ip_filter' })
}

function refuseWhenSpent(refusal: RateLimitRefusal | undefined, scope: string, metrics: Metrics | undefined): void {
  if (refusal === undefined) return
  metrics?.requestsRefused.inc({ reason: `rate_limit_${scope}` })
  const seconds = String(Math.max(1, Math.ceil(refusal.retryAfterMs / 1000)))
  throw new ProxyError('GUARD_RATE_LIMITED', {
    reason: `rate_limit_${scope}`,
    headers: {
      'retry-after': seconds,
      'ratelimit-limit': String(refusal.limit),
      'ratelimit-remaining': '0',
      'ratelimit-reset': seconds,
      'ratelimit-policy': `${refusal.limit};w=${refusal.windowSeconds}`,
    },
  })
}
