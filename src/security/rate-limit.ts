// Rate limits (rate-limiter-flexible): fixed windows of `window` seconds admitting `points` requests
// per key. From `requests_per_second` and `burst`: window = ceil(burst / rps) whole seconds (at least
// 1; Redis expiries are whole seconds), points = max(burst, rps x window). So a client averages at
// most `requests_per_second`, and may send `burst` at once.
// With a Redis client the counters live in Redis (every instance and worker shares them); when
// Redis is not ready or a call fails, the same limit is counted in this process instead (the
// library's insurance limiter), so a Redis outage loosens limits to per-process, never to errors.
import type { Cluster, Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import type { RateLimitConfig } from '../config/schema.ts'
import type { RateLimiter, RateLimitRefusal } from '../ports.ts'

export interface RateLimiterOptions {
  /** Distinguishes the scope's keys in a shared store, e.g. `per_ip`, `bucket:media`. */
  scope: string
  /** Prefix of every key in Redis, e.g. `yatagarasu:`. */
  keyPrefix: string
  redis: Redis | Cluster | undefined
}

export function windowOf(config: RateLimitConfig): { points: number; windowSeconds: number } {
  const windowSeconds = Math.max(1, Math.ceil(config.burst / config.requests_per_second))
  return { points: Math.max(config.burst, Math.floor(config.requests_per_second * windowSeconds)), windowSeconds }
}

export function createRateLimiter(config: RateLimitConfig, options: RateLimiterOptions): RateLimiter {
  const { points, windowSeconds } = windowOf(config)
  // The settings are part of the key: a reload that changes a limit starts fresh counters.
  const keyPrefix = `${options.keyPrefix}rl:${options.scope}:${points}/${windowSeconds}`
  const local = new RateLimiterMemory({ points, duration: windowSeconds, keyPrefix })
  const limiter: RateLimiterAbstract =
    options.redis === undefined
      ? local
      : new RateLimiterRedis({
          storeClient: options.redis,
          points,
          duration: windowSeconds,
          keyPrefix,
          insuranceLimiter: local,
          rejectIfRedisNotReady: true,
        })
  return {
    async take(key) {
      try {
        await limiter.consume(key)
        return undefined
      } catch (outcome) {
        if (outcome instanceof RateLimiterRes) {
          return { limit: points, windowSeconds, retryAfterMs: outcome.msBeforeNext } satisfies RateLimitRefusal
        }
        // Neither store could count (not expected with the in-process insurance): admit.
        return undefined
      }
    },
  }
}
