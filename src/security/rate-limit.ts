// Rate limits (rate-limiter-flexible): fixed windows of `window` seconds admitting `points` requests
// per key. From `requests_per_second` and `burst`: window = ceil(burst / rps) whole seconds (at least
// 1; Redis expiries are whole seconds), points = max(burst, rps x window). So a client averages at
// most `requests_per_second`, and may send `burst` at once.
//
// Where the counters live, so that a limit means the same with one process or sixteen:
//   - Redis configured: in Redis (every instance and worker shares them). When Redis is not ready or
//     a call fails, the same limit is counted in this process instead, so a Redis outage loosens
//     limits to per-process, never to errors. A breaker per Redis client (shared by every scope:
//     one request takes up to four limits) stops asking a Redis that keeps failing: a hung Redis
//     keeps its connection 'ready' and would otherwise cost every take a command timeout.
//   - a cluster worker without Redis: in the cluster primary (serveRateLimits), asked over the
//     cluster's IPC channel (the takes of one event-loop turn in one message each way). A primary that does not
//     answer within PRIMARY_TIMEOUT_MS (stuck, or the channel closed) is not asked again for
//     PRIMARY_RETRY_MS; meanwhile the same limit is counted in this worker: per-process, never
//     errors.
//   - otherwise in this process.
// Not the library's RateLimiterCluster: its worker limiter adds a process 'message' listener it
// never removes (one more on every reload that changes a limit), has no insurance limiter for a
// primary that does not answer, and holds requests in 30 ms polls until the primary acknowledges
// each new limiter. Here one listener per worker serves every limiter of every generation.
import cluster from 'node:cluster'
import type { Cluster, Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import type { RateLimitConfig } from '../config/schema.ts'
import type { RateLimiter, RateLimitRefusal } from '../ports.ts'
import { NodeBreaker } from '../store-breaker.ts'

export interface RateLimiterOptions {
  /** Distinguishes the scope's keys in a shared store, e.g. `per_ip`, `bucket:media`. */
  scope: string
  /** Prefix of every key in Redis, e.g. `yatagarasu:`. */
  keyPrefix: string
  redis: Redis | Cluster | undefined
  /** Count in the cluster primary (a worker of yatagarasu's own cluster, without Redis). */
  viaPrimary: boolean
}

/** A healthy primary answers in well under a millisecond; this is a primary that is stuck. */
export const PRIMARY_TIMEOUT_MS = 250
const PRIMARY_RETRY_MS = 1000

export function windowOf(config: RateLimitConfig): { points: number; windowSeconds: number } {
  const windowSeconds = Math.max(1, Math.ceil(config.burst / config.requests_per_second))
  return { points: Math.max(config.burst, Math.floor(config.requests_per_second * windowSeconds)), windowSeconds }
}

export function createRateLimiter(config: RateLimitConfig, options: RateLimiterOptions): RateLimiter {
  const { points, windowSeconds } = windowOf(config)
  // The settings are part of the key: a reload that changes a limit starts fresh counters.
  const keyPrefix = `${options.keyPrefix}rl:${options.scope}:${points}/${windowSeconds}`
  const local = new RateLimiterMemory({ points, duration: windowSeconds, keyPrefix })
  const refusal = (retryAfterMs: number): RateLimitRefusal => ({ limit: points, windowSeconds, retryAfterMs })

  if (options.redis === undefined && options.viaPrimary) {
    const primary = primaryChannel()
    return {
      async take(key) {
        const retryAfterMs = await primary.take({ prefix: keyPrefix, points, seconds: windowSeconds, key })
        if (retryAfterMs === undefined) return consume(local, key, refusal)
        return retryAfterMs === null ? undefined : refusal(retryAfterMs)
      },
    }
  }
  if (options.redis === undefined) return { take: (key) => consume(local, key, refusal) }
  const redis = new RateLimiterRedis({ storeClient: options.redis, points, duration: windowSeconds, keyPrefix, rejectIfRedisNotReady: true })
  const breaker = breakerOf(options.redis)
  return {
    async take(key) {
      const permit = breaker.acquire()
      if (permit === undefined) return consume(local, key, refusal)
      try {
        await redis.consume(key)
        breaker.report(permit, true)
        return undefined
      } catch (outcome) {
        // A refusal is Redis answering: healthy. Anything else (not ready, a command timeout, a
        // connection error) counts against Redis, and this take is counted in the process.
        breaker.report(permit, outcome instanceof RateLimiterRes)
        return outcome instanceof RateLimiterRes ? refusal(outcome.msBeforeNext) : consume(local, key, refusal)
      }
    },
  }
}

async function consume(
  limiter: RateLimiterAbstract,
  key: string,
  refusal: (retryAfterMs: number) => RateLimitRefusal
): Promise<RateLimitRefusal | undefined> {
  try {
    await limiter.consume(key)
    return undefined
  } catch (outcome) {
    if (outcome instanceof RateLimiterRes) return refusal(outcome.msBeforeNext)
    // Neither store could count (not expected with the in-process insurance): admit.
    return undefined
  }
}

// The IPC messages. A worker sends the takes of one event-loop turn together (the primary answers
// them together): under load one message each way carries many requests.
const CHANNEL = 'yatagarasu:rate-limit'

interface Take {
  /** The limiter's key prefix: scope and settings, so one prefix always means one limit. */
  prefix: string
  points: number
  seconds: number
  key: string
}

interface TakeRequest extends Take {
  id: number
}

interface Answer {
  id: number
  /** Null: admitted. */
  retryAfterMs: number | null
}

const isTakeRequest = (t: Partial<TakeRequest> | null | undefined): t is TakeRequest =>
  typeof t?.id === 'number' &&
  typeof t.prefix === 'string' &&
  typeof t.points === 'number' &&
  typeof t.seconds === 'number' &&
  typeof t.key === 'string'

const isAnswer = (a: Partial<Answer> | null | undefined): a is Answer =>
  typeof a?.id === 'number' && (a.retryAfterMs === null || typeof a.retryAfterMs === 'number')

/**
 * In the cluster primary: keeps the counters of every worker's limiters, one in-memory limiter per
 * key prefix (per scope and settings), so all workers spend one budget.
 */
export function serveRateLimits(): void {
  const limiters = new Map<string, RateLimiterMemory>()
  const count = ({ prefix, points, seconds, key }: Take): Promise<number | null> => {
    let limiter = limiters.get(prefix)
    if (limiter === undefined) {
      limiter = new RateLimiterMemory({ points, duration: seconds, keyPrefix: prefix })
      limiters.set(prefix, limiter)
    }
    return limiter.consume(key).then(
      () => null,
      (outcome: unknown) => (outcome instanceof RateLimiterRes ? outcome.msBeforeNext : null)
    )
  }
  cluster.on('message', (worker, message: { channel?: unknown; takes?: unknown } | null) => {
    if (message?.channel !== CHANNEL || !Array.isArray(message.takes)) return
    const takes = (message.takes as Array<Partial<TakeRequest> | null>).filter(isTakeRequest)
    void Promise.all(takes.map(async (take): Promise<Answer> => ({ id: take.id, retryAfterMs: await count(take) }))).then((answers) => {
      // A callback, so a worker gone meanwhile is not an 'error' event.
      if (worker.isConnected()) worker.send({ channel: CHANNEL, answers }, undefined, undefined, () => {})
    })
  })
}

/** Takes sent to the primary together, answered within PRIMARY_TIMEOUT_MS or counted locally. */
interface Batch {
  takes: TakeRequest[]
  /** Takes not answered yet. */
  left: number
  timer: NodeJS.Timeout | undefined
}

/** A worker's end of the channel: one 'message' listener and one id sequence for every limiter. */
class PrimaryChannel {
  readonly #waiting = new Map<number, { resolve: (retryAfterMs: number | null | undefined) => void; batch: Batch }>()
  /** The batch gathering this turn's takes, sent once the turn's I/O callbacks have run. */
  #open: Batch | undefined
  #lastId = 0
  /** Until then the primary is not asked: it did not answer in time. */
  #skipUntil = 0

  constructor() {
    process.on('message', (message: { channel?: unknown; answers?: unknown } | null) => {
      if (message?.channel !== CHANNEL || !Array.isArray(message.answers)) return
      for (const answer of message.answers as Array<Partial<Answer> | null>) {
        if (isAnswer(answer)) this.#settle(answer.id, answer.retryAfterMs)
      }
    })
  }

  /**
   * The primary's count: null admitted, a number of ms refused; undefined when the primary did
   * not answer in time (count locally then).
   */
  take(request: Take): Promise<number | null | undefined> {
    if (process.send === undefined || !process.connected || Date.now() < this.#skipUntil) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const id = ++this.#lastId
      let batch = this.#open
      if (batch === undefined) {
        const opened: Batch = { takes: [], left: 0, timer: undefined }
        setImmediate(() => this.#send(opened))
        this.#open = batch = opened
      }
      batch.takes.push({ id, ...request })
      batch.left++
      this.#waiting.set(id, { resolve, batch })
    })
  }

  #send(batch: Batch): void {
    this.#open = undefined
    batch.timer = setTimeout(() => this.#giveUp(batch), PRIMARY_TIMEOUT_MS)
    process.send?.({ channel: CHANNEL, takes: batch.takes }, undefined, undefined, (err: Error | null) => {
      if (err !== null) this.#giveUp(batch)
    })
  }

  #settle(id: number, answer: number | null | undefined): void {
    const waiting = this.#waiting.get(id)
    if (waiting === undefined) return
    this.#waiting.delete(id)
    if (--waiting.batch.left === 0) clearTimeout(waiting.batch.timer)
    waiting.resolve(answer)
  }

  #giveUp(batch: Batch): void {
    if (batch.left === 0) return
    this.#skipUntil = Date.now() + PRIMARY_RETRY_MS
    for (const { id } of batch.takes) this.#settle(id, undefined)
  }
}

let channel: PrimaryChannel | undefined
const primaryChannel = (): PrimaryChannel => (channel ??= new PrimaryChannel())

// One breaker per Redis client, shared by every scope that counts in it (store-breaker.ts).
const breakers = new WeakMap<Redis | Cluster, NodeBreaker>()
function breakerOf(client: Redis | Cluster): NodeBreaker {
  let breaker = breakers.get(client)
  if (breaker === undefined) breakers.set(client, (breaker = new NodeBreaker()))
  return breaker
}
