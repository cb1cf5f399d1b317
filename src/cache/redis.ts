// Redis tier (ioredis; Redis Cluster through ioredis' cluster client when `cluster_nodes` is set):
// entries in their binary form (codec.ts) under `<key_prefix><cache key>`, expiring with their
// stale window. A dead or slow Redis must cost nothing:
//   - every command has a short timeout and never waits in ioredis' offline queue;
//   - a breaker skips Redis entirely after FAILURES_TO_OPEN consecutive failures, for OPEN_MS,
//     then lets one call through to probe (Closed -> Open -> Half-open -> Closed or Open again);
// a skipped or failed call is a miss (get) or a no-op (set, delete).
// Purges are also broadcast on `<key_prefix>purge` so every instance drops its own memory and disk
// copies (see onPurge).
import { Cluster, Redis } from 'ioredis'
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'
import { decodeEntry, encodeEntry } from './codec.ts'
import { TierCounters } from './tier-stats.ts'

export interface RedisCacheOptions {
  url: string
  clusterNodes: string[]
  keyPrefix: string
  timeoutMs: number
  staleSeconds: number
  maxItemBytes: number
  /** Caps how long Redis keeps an entry, whatever its freshness and stale window. */
  maxTtlSeconds?: number | undefined
}

const FAILURES_TO_OPEN = 3
const OPEN_MS = 5000

type Client = Redis | Cluster

export class RedisCache implements CacheStore {
  readonly name = 'redis'
  readonly #options: RedisCacheOptions
  readonly #client: Client
  #subscriber: Client | undefined
  #failures = 0
  #openUntil = 0
  readonly #counters = new TierCounters()

  constructor(options: RedisCacheOptions) {
    this.#options = options
    this.#client = connectRedis(options)
  }

  async get(key: string): Promise<CachedObject | undefined> {
    const bytes = await this.#call((c) => c.getBuffer(this.#options.keyPrefix + key))
    return this.#counters.record(bytes === undefined || bytes === null ? undefined : decodeEntry(key, bytes))
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    if (entry.body.length > this.#options.maxItemBytes) return
    const retention = Math.ceil(entry.freshUntil + this.#options.staleSeconds * 1000 - Date.now())
    const cap = this.#options.maxTtlSeconds === undefined ? Infinity : this.#options.maxTtlSeconds * 1000
    const ttl = Math.min(retention, cap)
    if (ttl <= 0) return
    await this.#call((c) => c.set(this.#options.keyPrefix + key, encodeEntry(key, entry), 'PX', ttl))
  }

  async delete(key: string): Promise<void> {
    await this.#call((c) => c.del(this.#options.keyPrefix + key))
  }

  async purge(prefix: string): Promise<number> {
    const pattern = `${escapeGlob(this.#options.keyPrefix + prefix)}*`
    let count = 0
    const nodes = this.#client instanceof Cluster ? this.#client.nodes('master') : [this.#client]
    for (const node of nodes) {
      let cursor = '0'
      do {
        const reply = await this.#call(() => node.scan(cursor, 'MATCH', pattern, 'COUNT', 500))
        if (reply === undefined) return count
        cursor = reply[0]
        for (const key of reply[1]) {
          if ((await this.#call(() => node.unlink(key))) === 1) count++
        }
      } while (cursor !== '0')
    }
    return count
  }

  /** Publishes a purge message so that other instances drop their local copies. */
  async broadcastPurge(message: string): Promise<void> {
    await this.#call((c) => c.publish(`${this.#options.keyPrefix}purge`, message))
  }

  /** Calls `handler` with every purge message any instance broadcasts. */
  onPurge(handler: (message: string) => void): void {
    const subscriber = connectRedis(this.#options, true)
    this.#subscriber = subscriber
    subscriber.on('message', (_channel: string, message: string) => handler(message))
    void subscriber.subscribe(`${this.#options.keyPrefix}purge`).catch(() => {})
  }

  stats(): CacheTierStats {
    return this.#counters.snapshot(null, null)
  }

  async close(): Promise<void> {
    this.#client.disconnect()
    this.#subscriber?.disconnect()
  }

  async #call<T>(command: (client: Client) => Promise<T>): Promise<T | undefined> {
    const now = Date.now()
    if (now < this.#openUntil) return undefined
    if (this.#client.status !== 'ready') {
      this.#fail(now)
      return undefined
    }
    try {
      const result = await command(this.#client)
      this.#failures = 0
      return result
    } catch {
      this.#fail(now)
      return undefined
    }
  }

  #fail(now: number): void {
    this.#failures++
    if (this.#failures >= FAILURES_TO_OPEN) {
      this.#openUntil = now + OPEN_MS
      this.#failures = FAILURES_TO_OPEN - 1 // after the open period, one failure re-opens it
    }
  }
}

/**
 * A client that never queues: while Redis is down every command fails at once (callers treat that
 * as a miss, or fall back), except for a subscriber, which must resubscribe when Redis returns.
 */
export function connectRedis(options: Pick<RedisCacheOptions, 'url' | 'clusterNodes' | 'timeoutMs'>, subscriber = false): Client {
  const common = {
    enableOfflineQueue: subscriber,
    commandTimeout: subscriber ? undefined : options.timeoutMs,
    maxRetriesPerRequest: subscriber ? null : 0,
    connectTimeout: Math.max(options.timeoutMs, 1000),
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
  }
  const client =
    options.clusterNodes.length > 0
      ? new Cluster(options.clusterNodes, { enableOfflineQueue: subscriber, redisOptions: common })
      : new Redis(options.url, common)
  // Connection errors are expected while Redis is down; the breaker and `status` handle them.
  client.on('error', () => {})
  return client
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
