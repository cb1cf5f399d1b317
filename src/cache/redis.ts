// Redis tier (ioredis; Redis Cluster through ioredis' cluster client when `cluster_nodes` is set):
// entries in their binary form (codec.ts) under `<key_prefix><cache key>`, expiring with their
// stale window. A Redis node that is dead, hangs or refuses commands must cost nothing:
//   - every command has a short timeout (deadlines.ts: one timer for all calls, tolerant of an
//     event loop held up by this process), never waits in an offline queue, and is not retried by
//     ioredis (after a closed connection, CLUSTERDOWN or TRYAGAIN): a failed call is a miss (get)
//     or a no-op (set, delete);
//   - a breaker per node (store-breaker.ts: Closed -> Open -> Half-open, one probe at a time) skips
//     a node after 3 consecutive failures, for 5 s: connection errors, and timeouts while the node
//     answers nothing (redis-node-health.ts: a timeout while replies keep arriving is a queue of
//     large replies, not a failing node, unless no call has been answered in time for 1 s). On a
//     Cluster the node is the master ioredis routes the key to (the key's CRC16 slot in
//     `cluster.slots`), so one dead master never slows the keys of the others; a single Redis has
//     one breaker. An error reply
//     (CLUSTERDOWN while the cluster elects a replica) is a miss but not a failure: the node
//     answered at once, skipping it would save nothing;
//   - a Cluster client re-reads the slot table every SLOTS_REFRESH_MS, so once the cluster has
//     promoted a replica in place of a master that hangs (SIGSTOP: no closed connection, no MOVED)
//     the keys go to the new master, which has its own breaker;
//   - reads go to masters only: a replica may still hold an entry a purge just deleted.
// Purges are also broadcast on `<key_prefix>purge` so every instance drops its own memory and disk
// copies (see onPurge); on a Cluster, a PUBLISH to any node reaches the subscribers of every node.
import { Cluster, Redis, ReplyError } from 'ioredis'
// @ts-expect-error cluster-key-slot (ioredis' own slot hash) ships no type declarations
import calculateSlot from 'cluster-key-slot'
import type { CachedObject, CacheStore, CacheTierStats } from '../ports.ts'
import { EntryDecoder, encodeEntry, FIRST_READ, GUARD_END, GUARD_START, type BlockLayout } from './codec.ts'
import { Deadlines } from './deadlines.ts'
import { RedisBody } from './redis-body.ts'
import { RedisNodeHealth } from './redis-node-health.ts'
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
  /** How long a node may answer but none in time before it counts as failing (redis-node-health.ts; tests). */
  slowForMs?: number | undefined
}

/**
 * How often a Cluster client re-reads the slot table (a new connection and CLUSTER SLOTS to one
 * node). Bounds how long keys stay routed to a master that hangs after its replica took over.
 */
const SLOTS_REFRESH_MS = 1000

type Client = Redis | Cluster

/**
 * How long a read of a large entry's body may take (cache.redis.timeout_ms when longer). The short
 * timeout is for lookups, where a slow Redis must cost nothing: the origin answers instead. Once an
 * answer streams from Redis, a read that gives up cuts it; reads queue behind other streams' 512 KiB
 * replies on the one connection (32 clients of 10 MiB hits gave up at 50 ms and each fetched the
 * object from S3 again).
 */
const BODY_READ_TIMEOUT_MS = 5_000

const slotOf = calculateSlot as (key: string) => number
const NOTHING: Promise<undefined> = Promise.resolve(undefined)

export class RedisCache implements CacheStore {
  readonly name = 'redis'
  readonly maxItemBytes: number
  readonly #options: RedisCacheOptions
  readonly #client: Client
  /**
   * The connection large entries' bodies are read on, opened at the first such read: replies come
   * in order on a connection, and a lookup queued behind other answers' 512 KiB reads gave up at its
   * short timeout (a miss).
   */
  #bodies: Client | undefined
  #closed = false
  #subscriber: Client | undefined
  /** By node (`host:port`) on a Cluster; one entry, '', for a single Redis. */
  readonly #health = new Map<string, RedisNodeHealth>()
  readonly #counters = new TierCounters()
  readonly #deadlines: Deadlines
  /** For the reads of a large entry's body once its answer began (BODY_READ_TIMEOUT_MS). */
  readonly #bodyDeadlines: Deadlines
  readonly #decoder = new EntryDecoder()
  /** A single Redis's write batching (a Cluster client auto-pipelines). */
  readonly #writes: TurnWrites | undefined

  constructor(options: RedisCacheOptions) {
    this.#options = options
    this.maxItemBytes = options.maxItemBytes
    this.#deadlines = new Deadlines(options.timeoutMs)
    this.#bodyDeadlines = new Deadlines(Math.max(options.timeoutMs, BODY_READ_TIMEOUT_MS))
    this.#client = connectRedis(options, 'cache')
    this.#writes = this.#client instanceof Redis ? new TurnWrites(this.#client) : undefined
  }

  keeps(_key: string, size: number): boolean {
    return size <= this.maxItemBytes
  }

  /**
   * One read of the value's first FIRST_READ bytes: a small entry whole; a large one's header, its
   * body then read by range as it is sent (RedisBody). A large value known from an earlier lookup:
   * its header only.
   */
  async get(key: string): Promise<CachedObject | undefined> {
    const id = this.#options.keyPrefix + key
    const node = this.#nodeOf(id)
    const streamed = (layout: BlockLayout) => this.#streamed(key, id, layout)
    // A large value this process decoded before: its header only (a few hundred bytes).
    const known = this.#decoder.headLength(key)
    let bytes = await this.#call(node, () => this.#client.getrangeBuffer(id, 0, (known ?? FIRST_READ) - 1))
    let entry = bytes === undefined || bytes.length === 0 ? undefined : this.#decoder.decode(key, bytes, streamed)
    // Another value took its place: read as an unknown one.
    if (entry === undefined && known !== undefined && bytes?.length === known) {
      bytes = await this.#call(node, () => this.#client.getrangeBuffer(id, 0, FIRST_READ - 1))
      entry = bytes === undefined || bytes.length === 0 ? undefined : this.#decoder.decode(key, bytes, streamed)
    }
    return this.#counters.record(entry)
  }

  /**
   * A large entry's body, read by range; a damaged one is deleted. Each read is a MULTI of two
   * GETRANGEs, the value's guard bytes and the range: one atomic read, so the range is used only
   * while the guard is the one the stream began with (a Lua script doing the same cost Redis ~1 ms
   * per 512 KiB read, copying the range into Lua). Not through the node's breaker: an answer that
   * streams reads on while Redis answers within BODY_READ_TIMEOUT_MS (its fallback, the rest from
   * S3, costs a ranged GET); lookups meanwhile go to the origin as the breaker says.
   */
  #streamed(key: string, id: string, layout: BlockLayout): RedisBody {
    const read = async (start: number, end: number) => {
      if (this.#closed) return undefined
      this.#bodies ??= connectRedis(this.#options, 'cache')
      // Until its own connection is up, on the lookups' one.
      const client = this.#bodies.status === 'ready' ? this.#bodies : this.#client.status === 'ready' ? this.#client : undefined
      if (client === undefined) return undefined
      const replies = await within(this.#bodyDeadlines, () => client.multi().getrangeBuffer(id, GUARD_START, GUARD_END - 1).getrangeBuffer(id, start, end).exec())
      const [guard, range] = replies ?? []
      if (guard === undefined || range === undefined || guard[0] !== null || range[0] !== null) return undefined
      return Buffer.isBuffer(guard[1]) && guard[1].equals(layout.guard) && Buffer.isBuffer(range[1]) ? range[1] : undefined
    }
    return new RedisBody(layout, read, () => void this.delete(key))
  }

  async set(key: string, entry: CachedObject): Promise<void> {
    if (entry.body.length > this.maxItemBytes) return
    const retention = Math.ceil(entry.freshUntil + this.#options.staleSeconds * 1000 - Date.now())
    const cap = this.#options.maxTtlSeconds === undefined ? Infinity : this.#options.maxTtlSeconds * 1000
    const ttl = Math.min(retention, cap)
    if (ttl <= 0) return
    const id = this.#options.keyPrefix + key
    await this.#call(this.#nodeOf(id), () => this.#client.set(id, encodeEntry(key, entry), 'PX', ttl))
  }

  async delete(key: string): Promise<void> {
    const id = this.#options.keyPrefix + key
    await this.#call(this.#nodeOf(id), () => this.#client.del(id))
  }

  /** SCANs every master; a master that is down or skipped is left out (its keys expire). */
  async purge(prefix: string): Promise<number> {
    const pattern = `${escapeGlob(this.#options.keyPrefix + prefix)}*`
    let count = 0
    for (const [id, node] of this.#masters()) {
      let cursor = '0'
      do {
        const reply = await this.#call(id, () => node.scan(cursor, 'MATCH', pattern, 'COUNT', 500))
        if (reply === undefined) break
        cursor = reply[0]
        for (const key of reply[1]) {
          if ((await this.#call(id, () => node.unlink(key))) === 1) count++
        }
      } while (cursor !== '0')
    }
    return count
  }

  /**
   * Publishes a purge message so that other instances drop their local copies. False when no node
   * took it (Redis down, hung or its breaker open): nobody else heard of the purge.
   */
  async broadcastPurge(message: string): Promise<boolean> {
    const channel = `${this.#options.keyPrefix}purge`
    // Any one master relays it to the whole cluster: try them until one takes it.
    for (const [id, node] of this.#masters()) {
      if ((await this.#call(id, () => node.publish(channel, message))) !== undefined) return true
    }
    return false
  }

  /** Calls `handler` with every purge message any instance broadcasts. */
  onPurge(handler: (message: string) => void): void {
    const subscriber = connectRedis(this.#options, 'subscriber')
    this.#subscriber = subscriber
    subscriber.on('message', (_channel: string, message: string) => handler(message))
    void subscriber.subscribe(`${this.#options.keyPrefix}purge`).catch(() => {})
  }

  stats(): CacheTierStats {
    return this.#counters.snapshot(null, null)
  }

  async close(): Promise<void> {
    // Before the disconnects: a client's status turns 'end' only once its socket closed, and a
    // stream reading meanwhile must not open a connection nobody closes.
    this.#closed = true
    this.#decoder.clear()
    this.#client.disconnect()
    this.#bodies?.disconnect()
    this.#subscriber?.disconnect()
  }

  /** The node a key's command goes to, as ioredis routes it ('' for a single Redis). */
  #nodeOf(id: string): string {
    if (!(this.#client instanceof Cluster)) return ''
    return this.#client.slots[slotOf(id)]?.[0] ?? 'unmapped'
  }

  /** The masters by node id; the single Redis is its own master. */
  #masters(): Array<[string, Redis]> {
    if (!(this.#client instanceof Cluster)) return [['', this.#client]]
    return this.#client.nodes('master').map((node) => [`${node.options.host}:${node.options.port}`, node])
  }

  /**
   * `command` through the node's breaker and within the deadline: its result, or undefined when
   * it was skipped, failed or given up (a late outcome is ignored, but tells the node answered).
   */
  #call<T>(node: string, command: () => Promise<T>): Promise<T | undefined> {
    if (this.#client.status !== 'ready') return NOTHING
    let health = this.#health.get(node)
    if (health === undefined) {
      health = new RedisNodeHealth(this.#options.timeoutMs, this.#options.slowForMs)
      this.#health.set(node, health)
    }
    const permit = health.acquire()
    if (permit === undefined) return NOTHING
    const nodeHealth = health
    this.#writes?.batch()
    return new Promise((resolve) => {
      const deadline = this.#deadlines.start(() => {
        nodeHealth.timedOut(permit, performance.now())
        resolve(undefined)
      })
      sent(command).then(
        (result) => {
          if (!deadline.settle()) return nodeHealth.answeredLate(performance.now())
          nodeHealth.answered(permit, performance.now())
          resolve(result)
        },
        (err: unknown) => {
          const answer = err instanceof ReplyError
          if (!deadline.settle()) {
            if (answer) nodeHealth.answeredLate(performance.now())
            return
          }
          if (answer) nodeHealth.answered(permit, performance.now())
          else nodeHealth.failed(permit)
          resolve(undefined)
        }
      )
    })
  }
}

/** `command`'s result within the deadline; undefined when it failed or did not answer in time. */
function within<T>(deadlines: Deadlines, command: () => Promise<T>): Promise<T | undefined> {
  return new Promise((resolve) => {
    const deadline = deadlines.start(() => resolve(undefined))
    sent(command).then(
      (result) => deadline.settle() && resolve(result),
      () => deadline.settle() && resolve(undefined)
    )
  })
}

/** `command()`, a synchronous throw as a rejection. */
function sent<T>(command: () => Promise<T>): Promise<T> {
  try {
    return command()
  } catch (err) {
    return Promise.reject(err)
  }
}

/**
 * A client that never queues: while Redis is down every command fails at once (callers treat that
 * as a miss, or fall back), except for a subscriber, which must resubscribe when Redis returns.
 * Also the rate limiters' client (runtime.ts), whose commands time out in ioredis; the cache's
 * calls have their own deadlines (no timer per command).
 */
export function connectRedis(options: Pick<RedisCacheOptions, 'url' | 'clusterNodes' | 'timeoutMs'>, use: 'commands' | 'cache' | 'subscriber' = 'commands'): Client {
  const subscriber = use === 'subscriber'
  const common = {
    commandTimeout: use === 'commands' ? options.timeoutMs : undefined,
    maxRetriesPerRequest: subscriber ? null : 0,
    connectTimeout: Math.max(options.timeoutMs, 1000),
    // Commands issued in the same event-loop turn (concurrent requests) go out in one write rather
    // than a syscall each: ~10% less proxy CPU per 1 KiB hit at 64 connections. The cache's single
    // Redis batches its writes itself (TurnWrites), which costs half as much CPU per command.
    enableAutoPipelining: !subscriber && !(use === 'cache' && options.clusterNodes.length === 0),
  }
  const client =
    options.clusterNodes.length > 0
      ? new RefreshingCluster(options.clusterNodes, {
          enableOfflineQueue: subscriber,
          enableAutoPipelining: !subscriber,
          scaleReads: 'master',
          // A failed command is a miss, not something to wait for: no retries after a closed
          // connection, CLUSTERDOWN or TRYAGAIN. MOVED/ASK are still followed (at once), a few times.
          retryDelayOnFailover: 0,
          retryDelayOnClusterDown: 0,
          retryDelayOnTryAgain: 0,
          maxRedirections: 4,
          redisOptions: common,
        })
      : new Redis(options.url, { ...common, enableOfflineQueue: subscriber, retryStrategy: (times: number) => Math.min(times * 200, 2000) })
  // Connection errors are expected while Redis is down; the breakers and `status` handle them.
  client.on('error', () => {})
  if (client instanceof Cluster) client.on('node error', () => {})
  return client
}

/**
 * Batches the command writes of one event-loop turn on a single Redis: the first command of a turn
 * corks the connection and the check phase (after the poll phase that handled the requests behind
 * the commands) uncorks it, so concurrent requests' commands go out in one writev. ioredis'
 * auto-pipelining does the same with a Pipeline object per batch and one batch in flight at a
 * time; measured with 64 concurrent 1 KiB GETs on one core: ~3.2 us of CPU per GET against ~6.8,
 * and 2 mark-compacts per 300k GETs against 14 (its batches' objects survive scavenges).
 */
class TurnWrites {
  readonly #client: Redis
  #corked = false

  constructor(client: Redis) {
    this.#client = client
  }

  /** Called before a command is sent. */
  batch(): void {
    if (this.#corked) return
    const stream = this.#client.stream
    if (stream === undefined || stream === null || !stream.writable) return
    stream.cork()
    this.#corked = true
    setImmediate(() => {
      this.#corked = false
      stream.uncork()
    })
  }
}

/**
 * ioredis' Cluster with its slot table re-read every SLOTS_REFRESH_MS by a timer of our own rather
 * than its `slotsRefreshInterval`: that one re-arms itself when disconnect() lands while a refresh
 * is in flight, and then keeps refreshing (and the process alive) forever.
 */
class RefreshingCluster extends Cluster {
  readonly #timer: NodeJS.Timeout = setInterval(() => {
    if (this.status === 'ready') this.refreshSlotsCache()
    else if (this.status === 'end') clearInterval(this.#timer) // after quit()
  }, SLOTS_REFRESH_MS).unref()

  override disconnect(reconnect = false): void {
    // ioredis itself calls disconnect(true) to reconnect: keep refreshing then.
    if (!reconnect) clearInterval(this.#timer)
    super.disconnect(reconnect)
  }
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
