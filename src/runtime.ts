// buildRuntime: turns a validated Config into live objects (S3 clients, token verifiers, the
// readiness checker). The only module that knows concrete adapter classes.
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import type { JwtVerifier } from './auth/jwt.ts'
import { constants } from 'node:fs'
import { access, mkdir } from 'node:fs/promises'
import { DiskCache } from './cache/disk.ts'
import { joinDiskLedger } from './cache/disk-cluster.ts'
import type { WritesEvent } from './cache/disk-write-pause.ts'
import { MemoryCache } from './cache/memory.ts'
import type { connectRedis, RedisCache } from './cache/redis.ts'
import { ipFilterOf } from './http/ip-filter.ts'
import { createRateLimiter } from './security/rate-limit.ts'
import { onPurgeFromOtherWorkers, purgeOtherWorkers } from './cluster-purge.ts'
import { SliceCache } from './cache/slices.ts'
import { purgeCovers, type PurgeTarget } from './cache/purge-log.ts'
import { TieredCache } from './cache/tiered.ts'
import { createAuditLog } from './audit/log.ts'
import { ConfigError } from './config/load.ts'
import type { BucketConfig, Config, JwtVerifierConfig, RateLimitConfig, S3StsConfig } from './config/schema.ts'
import { loadTracing } from './telemetry/tracing.ts'
import type { AuditSink, Authorizer, CachedObject, CacheStore, RateLimiter, ScrubLimits, SharedFills, ScrubReport, TokenVerifier, Tracer } from './ports.ts'
import { CircuitBreaker } from './origin/breaker.ts'
import { ReplicaSet } from './origin/replicas.ts'
import { S3Source } from './origin/s3.ts'
import { Readiness } from './readiness.ts'
import { PrewarmRegistry } from './cache-prewarm.ts'
import { CredentialTable } from './frontends/s3-api/credentials.ts'
import { ListPageCache } from './frontends/s3-api/list.ts'
import { SessionSealer } from './frontends/s3-api/session-token.ts'
import { SigningKeyCache } from './frontends/s3-api/sigv4.ts'
import type { StsRuntime } from './frontends/s3-api/sts.ts'
import type { S3ApiRuntime } from './frontends/s3-api/stage.ts'
import type { Logger } from './telemetry/log.ts'
import type { Metrics } from './telemetry/metrics.ts'
import type { BucketRoute, CacheCounters, Representations } from './types.ts'
import type { ImagesConfig } from './config/representations-schema.ts'
import type { ImageRenderer } from './images/render.ts'
import { supportedEncodings } from './compression/negotiate.ts'

/** The cache shared by every bucket of a generation, handed on to the next when its config is unchanged. */
export interface SharedCache {
  readonly store: TieredCache
  readonly redis: RedisCache | undefined
  readonly flights: Map<string, Promise<CachedObject | undefined>>
  /** With `server.workers` > 1 and a disk tier: fetches (whole objects and slices) coordinated with the other workers. */
  readonly fills: SharedFills | undefined
  /** Per-bucket counters for /admin/cache/stats. */
  readonly counters: Map<string, CacheCounters>
  /** The cache config it was built from (JSON), to decide reuse on reload. */
  readonly built: string
  /** Whether this generation closes it: set when built, or when the reusing generation commits. */
  owned: boolean
  /** The previous generation's handle, until this generation commits (see Runtime.commit). */
  from?: { owned: boolean } | undefined
  /** Stops purging on other workers' purges (cluster mode without Redis); called when it closes. */
  readonly stopPurges?: (() => void) | undefined
}

/** A part of a generation handed on to the next when the config it was built from is unchanged. */
export interface HandedOver<T> {
  readonly part: T
  /** The config it was built from (JSON). */
  readonly built: string
  /** Only the owner closes it: the generation that built it, or the one that took it over on commit. */
  owned: boolean
  /** The previous generation's handle, until this generation commits (see Runtime.commit). */
  from?: { owned: boolean } | undefined
}

/**
 * Reuses the previous generation's part when its settings are unchanged. Ownership moves only when
 * the new generation commits, so a reload that fails half-way leaves the running one intact.
 */
function handOver<T>(previous: HandedOver<T> | null, settings: unknown, build: () => T): HandedOver<T> {
  const built = JSON.stringify(settings)
  if (previous !== null && previous.built === built) return { part: previous.part, built, owned: false, from: previous }
  return { part: build(), built, owned: true }
}

function takeOver(handle: { owned: boolean; from?: { owned: boolean } | undefined } | null): void {
  if (handle?.from === undefined) return
  handle.from.owned = false
  handle.owned = true
  handle.from = undefined
}

export interface Runtime {
  readonly generation: number
  readonly config: Config
  readonly logger: Logger
  readonly buckets: readonly BucketRoute[]
  readonly readiness: Readiness
  /** Circuit breakers by `bucket/replica`, handed on to the next generation when their config is unchanged. */
  readonly breakers: ReadonlyMap<string, { built: string; breaker: CircuitBreaker }>
  readonly startedAt: number
  readonly cache: SharedCache | null
  /** Null when the audit log is off. Handed on to the next generation when its config is unchanged. */
  readonly audit: HandedOver<AuditSink> | null
  /** Null when tracing is off. Handed on to the next generation when its config is unchanged. */
  readonly tracer: HandedOver<Tracer> | null
  /** Undefined when metrics are disabled. */
  readonly metrics: Metrics | undefined
  /** Null when no rate limit is configured. Handed on to the next generation when its config is unchanged. */
  readonly limits: HandedOver<RateLimits> | null
  /** Verifies admin JWTs (the global jwt block), when admin claims are configured. */
  readonly adminVerifier: TokenVerifier | null
  /** The S3 API listener's credentials and caches; null when `s3_api` is off. */
  readonly s3Api: S3ApiRuntime | null
  /**
   * Cache prewarm jobs, shared with the previous and next generations (a job's outcome stays
   * readable); a job stops when the generation that started it is replaced or closed.
   */
  readonly prewarms: PrewarmRegistry
  /**
   * Purges cache keys (`exact` key, or every key under `prefix`) on every tier of this process
   * and, through Redis pub/sub, of every instance sharing it; without Redis, or when Redis does not
   * take the broadcast, in cluster mode, of every other worker (through the primary, waiting for
   * them). Resolves with the count here and how far the purge reached.
   */
  purge(target: PurgeTarget): Promise<PurgeOutcome>
  /**
   * Scrubs the disk tier now (cache/disk-scrub.ts) with this config's limits and `overrides`, and
   * logs the report as a scheduled pass's; `signal` (the caller left) stops it, as a shutdown
   * does. 'no disk tier', or 'running' while another pass runs.
   */
  scrubDisk(overrides?: Partial<ScrubLimits>, signal?: AbortSignal): Promise<ScrubReport | 'no disk tier' | 'running'>
  /** Takes over the parts reused from the previous generation; called when this one is swapped in. */
  commit(): void
  /** Starts background work (replica health probes); `--check` builds a runtime without it. */
  start(): void
  /**
   * Releases backend connections and writes out what the audit log and tracer still hold; called
   * once no request runs on this generation any more.
   */
  close(): Promise<void>
}

export interface RuntimeDeps {
  logger: Logger
  metrics?: Metrics | undefined
  generation: number
  startedAt: number
}

/**
 * Builds every live object the config describes. Throws ConfigError (naming the key) when an
 * adapter cannot be built from a valid-looking config, such as a policy file that is not a policy.
 */
export async function buildRuntime(config: Config, deps: RuntimeDeps, previous?: Runtime): Promise<Runtime> {
  const authorizers = await Promise.all(config.buckets.map((bucket, i) => buildAuthorizer(config, bucket, i)))
  const cache = await buildCache(config, deps.logger, previous?.cache ?? null)
  const { audit: auditSettings, observability } = config
  const audit =
    auditSettings === null ? null : handOver(previous?.audit ?? null, auditSettings, () => createAuditLog(auditSettings, deps.logger, deps.metrics))
  // The tracing SDK is loaded only when tracing is on (telemetry/tracing.ts).
  const createTracer = observability.tracing.enabled ? await loadTracing(observability.tracing) : undefined
  const tracer = createTracer === undefined ? null : handOver(previous?.tracer ?? null, observability.tracing, createTracer)
  const limitSettings = rateLimitSettings(config)
  // ioredis (like OPA's wasm runtime and the tracing SDK) is loaded only when the config uses it.
  const connect = limitSettings?.redis == null ? undefined : (await import('./cache/redis.ts')).connectRedis
  const limits = limitSettings === null ? null : handOver(previous?.limits ?? null, limitSettings, () => buildRateLimits(limitSettings, connect))
  if (limits?.owned === true) await limits.part.ready
  const breakers = new Map<string, { built: string; breaker: CircuitBreaker }>()
  // sharp (libvips) is loaded only when a bucket renders images.
  // jose is loaded only when some token is verified (a bucket's, the admin API's, the STS exchange's).
  const jwtModule =
    config.buckets.some((b) => b.auth !== null) || config.admin?.jwt != null || config.s3_api?.sts != null ? await import('./auth/jwt.ts') : undefined
  const verifierOf = (settings: ConstructorParameters<typeof JwtVerifier>[0]): JwtVerifier => {
    if (jwtModule === undefined) throw new Error('token verification was not loaded')
    return new jwtModule.JwtVerifier(settings)
  }
  const renderModule = config.buckets.some((b) => b.images !== null) ? await import('./images/render.ts') : undefined
  const marks = config.buckets.some((b) => b.watermark !== null) ? await import('./images/watermark.ts') : undefined
  // Text marks that draw nothing (no font) would serve clean images: refuse to start instead.
  const textMarked = config.buckets.findIndex((b) => b.watermark?.rules.some((r) => r.watermarks.some((w) => w.type === 'text')))
  if (marks !== undefined && textMarked !== -1) {
    try {
      await marks.assertWatermarkFont()
    } catch (err) {
      throw new ConfigError(config.file, [{ path: `buckets[${textMarked}].watermark`, message: (err as Error).message }])
    }
  }
  const imaging: Imaging | undefined =
    renderModule === undefined
      ? undefined
      : { renderer: (name, images, metrics) => new renderModule.ImageRenderer(name, images, metrics), marks }
  const replicaSets = config.buckets.map((bucket) => buildReplicaSet(bucket, deps, previous?.breakers, breakers))
  const buckets: BucketRoute[] = config.buckets.map((bucket, i) => ({
    name: bucket.name,
    prefix: bucket.path_prefix,
    source: replicaSets[i] as ReplicaSet,
    verifier: bucket.auth === null ? null : verifierOf(bucket.auth),
    authorizer: authorizers[i] ?? null,
    cors: bucket.cors,
    cdnCacheControl: bucket.cdn_cache_control,
    ipFilter: ipFilterOf(bucket.ip_filter),
    rateLimit: limits?.part.buckets.get(bucket.name) ?? null,
    forceDownload: bucket.force_download,
    representations: representationsOf(bucket, deps.metrics, imaging),
    cache:
      bucket.cache === null || cache === null
        ? null
        : {
            store: cache.store,
            flights: cache.flights,
            ttlSeconds: bucket.cache.ttl_seconds,
            maxItemBytes: bucket.cache.max_item_bytes,
            staleIfErrorSeconds: bucket.cache.stale_if_error_seconds,
            followerWaitMs: bucket.backend.deadline_seconds * 1000,
            fills: cache.fills,
            counters: countersOf(cache, bucket.name),
            slices:
              bucket.cache.slice_bytes === null
                ? null
                : new SliceCache({
                    local: cache.store.local,
                    bulk: cache.store.bulk,
                    flights: cache.flights,
                    fills: cache.fills,
                    sliceBytes: bucket.cache.slice_bytes,
                    ttlSeconds: bucket.cache.ttl_seconds,
                  }),
          },
  }))
  const adminVerifier =
    config.admin?.jwt != null && config.admin.claims.length > 0
      ? verifierOf({ ...config.admin.jwt, claims: config.admin.claims, path_scope_claim: undefined })
      : null
  const s3Settings = config.s3_api
  const s3Api: S3ApiRuntime | null =
    s3Settings === null
      ? null
      : {
          region: s3Settings.region,
          domain: s3Settings.domain,
          credentials: new CredentialTable(s3Settings.credentials),
          keys: new SigningKeyCache(),
          pages: new ListPageCache(s3Settings.list_cache_seconds),
          sts: s3Settings.sts === null ? null : buildSts(s3Settings.sts, config.buckets, verifierOf),
        }
  const prewarms = previous?.prewarms ?? new PrewarmRegistry((report) => deps.logger.info({ prewarm: report }, 'cache prewarm ended'))
  return {
    generation: deps.generation,
    config,
    logger: deps.logger,
    buckets,
    readiness: new Readiness(buckets.map((b, i) => ({ name: b.name, replicas: replicaSets[i] as ReplicaSet }))),
    breakers,
    startedAt: deps.startedAt,
    cache,
    audit,
    tracer,
    metrics: deps.metrics,
    limits,
    adminVerifier,
    s3Api,
    prewarms,
    async purge(target) {
      if (cache === null) return { purged: 0, broadcast: 'local' }
      forgetFlights(cache.flights, target)
      const { redis } = cache
      // Told before the Redis SCAN (which can take seconds) passes their keys, other instances
      // refuse copies fetched before the purge instead of writing them back into Redis; told
      // again after it, they drop what they copied up from Redis meanwhile, as this one does.
      if (redis !== undefined) await redis.broadcastPurge(JSON.stringify(target))
      const purged = await purgeTiers(cache.store, target)
      if (redis !== undefined) {
        await purgeTiers(cache.store.local, target)
        if (await redis.broadcastPurge(JSON.stringify(target))) return { purged, broadcast: 'redis' }
        deps.logger.warn({ purge: target }, 'cache purge: Redis did not take the broadcast, other instances were not reached')
      }
      if (!inOwnCluster(config)) return { purged, broadcast: redis === undefined ? 'local' : 'incomplete' }
      // No Redis, or it did not take the broadcast: this instance's other workers hear of it
      // through the primary.
      if (await purgeOtherWorkers(target)) return { purged, broadcast: 'workers' }
      deps.logger.warn({ purge: target }, 'cache purge: not every other worker confirmed it in time')
      return { purged, broadcast: 'incomplete' }
    },
    async scrubDisk(overrides, signal) {
      const disk = cache?.store.disk
      if (disk === undefined) return 'no disk tier'
      const report = await disk.scrub({ ...scrubLimitsOf(config), ...overrides }, signal)
      if (report === undefined) return 'running'
      logScrub(deps.logger, report, 'admin')
      return report
    },
    commit() {
      // The previous generation's prewarms read through its sources, which it is about to close.
      void prewarms.stop((generation) => generation !== deps.generation)
      for (const handle of [cache, audit, tracer, limits]) takeOver(handle)
      // A reused cache takes this config's per-bucket budgets when it goes live.
      if (cache !== null) cache.store.setBudgets(config.cache?.budgets ?? {})
    },
    start() {
      for (const warning of config.warnings) deps.logger.warn({ key: warning.path }, `config: ${warning.message}`)
      for (const replicas of replicaSets) void replicas.startProbing()
      const scrub = config.cache?.disk_scrub
      cache?.store.disk?.scrubEvery(scrub?.enabled === true ? { everyMs: scrub.interval_seconds * 1000, limits: scrubLimitsOf(config) } : null, (report) =>
        logScrub(deps.logger, report, 'schedule')
      )
    },
    async close() {
      await prewarms.stop((generation) => generation === deps.generation)
      for (const bucket of buckets) bucket.source.close()
      if (cache?.owned === true) {
        cache.stopPurges?.()
        void cache.store.close()
      }
      if (limits?.owned === true) limits.part.close()
      await Promise.allSettled([audit?.owned === true ? audit.part.close() : undefined, tracer?.owned === true ? tracer.part.close() : undefined])
    },
  }
}

/**
 * The web-identity exchange: its token verifier (the path scope applies per bucket later, not to
 * the exchange) and the buckets its credentials may name: those without auth, and those whose
 * tokens are verified with the same keys, issuer and audience as the exchanged token (a token
 * from another issuer would not open them on the HTTP path either), each with its own verifier:
 * the exchange seals only the buckets whose verifier accepts the token.
 */
function buildSts(settings: S3StsConfig, buckets: readonly BucketConfig[], verifierOf: (settings: ConstructorParameters<typeof JwtVerifier>[0]) => JwtVerifier): StsRuntime {
  const trust = (jwt: JwtVerifierConfig) => JSON.stringify([jwt.key, jwt.issuer, jwt.audience])
  const trusted = trust(settings.jwt)
  const bearerOnly = (jwt: JwtVerifierConfig) => verifierOf({ ...jwt, token_sources: [{ type: 'bearer' }], path_scope_claim: undefined })
  return {
    sealer: new SessionSealer(settings.keys),
    verifier: bearerOnly(settings.jwt),
    open: new Set(buckets.filter((b) => b.auth === null).map((b) => b.name)),
    checked: buckets.flatMap((b) =>
      b.auth !== null && trust(b.auth) === trusted
        ? [{ name: b.name, verifier: bearerOnly(b.auth), maxLifetimeSeconds: b.auth.max_token_lifetime_seconds }]
        : []
    ),
    maxDurationSeconds: settings.max_duration_seconds,
  }
}

export interface RateLimits {
  global: RateLimiter | null
  perIp: RateLimiter | null
  perUser: RateLimiter | null
  /** By bucket name, for buckets with their own limit. */
  buckets: ReadonlyMap<string, RateLimiter>
  /** Settles once the shared store is connected, or after REDIS_READY_WAIT_MS (never rejects). */
  ready: Promise<void>
  close(): void
}

/**
 * How long a start or reload waits for a new Redis connection before the limits go live, so that
 * the first requests are counted in the shared store, not per process; a dead Redis delays a start
 * by at most this much (its limits then count per process until it is back).
 */
const REDIS_READY_WAIT_MS = 2000

type RateLimitSettings = NonNullable<ReturnType<typeof rateLimitSettings>>

/** Everything the limiters are built from; null when no limit is configured. */
function rateLimitSettings(config: Config) {
  const buckets = config.buckets.flatMap((b) => (b.rate_limit === null ? [] : [[b.name, b.rate_limit] as const]))
  if (config.server.rate_limit === null && buckets.length === 0) return null
  const { redis } = config
  return {
    server: config.server.rate_limit,
    buckets,
    // Counters are shared through Redis when one is configured, else through the cluster primary.
    redis: redis === null ? null : { url: redis.url, clusterNodes: redis.cluster_nodes, keyPrefix: redis.key_prefix, timeoutMs: redis.timeout_ms },
    viaPrimary: redis === null && inOwnCluster(config),
  }
}

function buildRateLimits(settings: RateLimitSettings, connect: typeof connectRedis | undefined): RateLimits {
  const client = settings.redis === null ? undefined : connect?.(settings.redis)
  const keyPrefix = settings.redis?.keyPrefix ?? ''
  const limiter = (scope: string, limit: RateLimitConfig | null | undefined) =>
    limit == null ? null : createRateLimiter(limit, { scope, keyPrefix, redis: client, viaPrimary: settings.viaPrimary })
  return {
    global: limiter('global', settings.server?.global),
    perIp: limiter('per_ip', settings.server?.per_ip),
    perUser: limiter('per_user', settings.server?.per_user),
    buckets: new Map(settings.buckets.map(([name, limit]) => [name, limiter(`bucket:${name}`, limit) as RateLimiter])),
    ready: client === undefined ? Promise.resolve() : readyOrAfter(client, REDIS_READY_WAIT_MS),
    close: () => client?.disconnect(),
  }
}

function readyOrAfter(client: ReturnType<typeof connectRedis>, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      client.off('ready', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    client.once('ready', done)
  })
}

/**
 * The bucket's replicas behind their breakers. A breaker whose config is unchanged is taken over
 * from the previous generation, so a reload neither forgets an outage nor resets a recovery.
 */
function buildReplicaSet(
  bucket: BucketConfig,
  deps: RuntimeDeps,
  previous: Runtime['breakers'] | undefined,
  breakers: Map<string, { built: string; breaker: CircuitBreaker }>
): ReplicaSet {
  const { backend } = bucket
  const settings = backend.circuit_breaker
  const replicas = backend.replicas.map((connection) => {
    let breaker: CircuitBreaker | undefined
    if (settings !== null) {
      const id = `${bucket.name}/${connection.name}`
      const built = JSON.stringify(settings)
      const kept = previous?.get(id)
      breaker =
        kept !== undefined && kept.built === built
          ? kept.breaker
          : new CircuitBreaker({
              failureThreshold: settings.failure_threshold,
              successThreshold: settings.success_threshold,
              openMs: settings.timeout_seconds * 1000,
              halfOpenMaxRequests: settings.half_open_max_requests,
              onChange: (from, to) =>
                deps.logger.warn({ bucket: bucket.name, replica: connection.name, from, to }, 'circuit breaker state change'),
            })
      breakers.set(id, { built, breaker })
    }
    const source = new S3Source(connection, { metrics: deps.metrics, bucket: bucket.name, probeKey: backend.health_check.key })
    return { name: connection.name, source, breaker }
  })
  return new ReplicaSet({
    bucket: bucket.name,
    replicas,
    deadlineMs: backend.deadline_seconds * 1000,
    hedgeAfterMs: backend.hedge_after_ms,
    probeIntervalMs: backend.health_check.interval_seconds * 1000,
    metrics: deps.metrics,
    logger: deps.logger,
  })
}

/**
 * The tiers in configured order. Reuses the previous generation's cache (contents, files, Redis
 * connections) when the cache config did not change. A disk directory that cannot be written is a
 * configuration error; a Redis that is merely down is not (the tier misses until it is back).
 */
async function buildCache(config: Config, logger: Logger, previous: SharedCache | null): Promise<SharedCache | null> {
  const settings = config.cache
  if (settings === null) return null
  // Budgets are applied to a reused cache on commit: a changed budget keeps the cache's contents.
  // Budgets and the disk scrub apply to a reused cache when its generation goes live: changing
  // them keeps the cache's contents.
  const { budgets, disk_scrub: _scrub, ...tierSettings } = settings
  const built = JSON.stringify(tierSettings)
  if (previous !== null && previous.built === built) {
    return { ...previous, owned: false, from: previous }
  }
  const stale = settings.stale_if_error_seconds
  const tiers: CacheStore[] = []
  let redis: RedisCache | undefined
  let fills: SharedFills | undefined
  for (const layer of settings.layers) {
    if (layer === 'memory') {
      tiers.push(new MemoryCache({ maxBytes: settings.memory.max_bytes, maxItemBytes: settings.max_item_bytes, staleSeconds: stale, budgets }))
    } else if (layer === 'disk' && settings.disk !== null) {
      const { dir, max_bytes } = settings.disk
      try {
        await mkdir(dir, { recursive: true })
        await access(dir, constants.W_OK)
        const options = { dir, maxBytes: max_bytes, maxItemBytes: settings.max_item_bytes, staleSeconds: stale, budgets }
        // The workers of this instance share the directory through a ledger in the primary.
        const ledger = inOwnCluster(config) ? await joinDiskLedger(options) : undefined
        fills = ledger
        const onWrites = (event: WritesEvent) =>
          event.paused
            ? logger.warn({ dir, reason: event.reason, seconds: event.seconds }, 'disk cache writes paused: the disk failed a write')
            : logger.info({ dir }, 'disk cache writes resumed')
        tiers.push(await DiskCache.open({ ...options, ledger, onWrites }))
      } catch (err) {
        throw new ConfigError(config.file, [
          { path: 'cache.disk.dir', message: `${dir} is not a writable directory (${(err as NodeJS.ErrnoException).code ?? String(err)})` },
        ])
      }
    } else if (layer === 'redis' && settings.redis !== null) {
      const r = settings.redis
      const { RedisCache: Redis } = await import('./cache/redis.ts')
      redis = new Redis({
        url: r.url,
        clusterNodes: r.cluster_nodes,
        keyPrefix: r.key_prefix,
        timeoutMs: r.timeout_ms,
        staleSeconds: stale,
        maxItemBytes: settings.max_item_bytes,
        maxTtlSeconds: r.ttl_seconds,
      })
      tiers.push(redis)
    }
  }
  const store = new TieredCache(tiers)
  // Memory and disk: what a purge broadcast by another instance or worker leaves to this one.
  const { local } = store
  const flights: SharedCache['flights'] = new Map()
  redis?.onPurge((message) => {
    const target = parsePurge(message)
    if (target === undefined) return
    forgetFlights(flights, target)
    void purgeTiers(local, target)
    logger.info({ purge: target }, 'cache purge received from another instance')
  })
  // With Redis too: a purge Redis did not take is relayed through the primary instead.
  const stopPurges = inOwnCluster(config)
    ? onPurgeFromOtherWorkers(async (target) => {
        forgetFlights(flights, target)
        await purgeTiers(local, target)
        logger.info({ purge: target }, 'cache purge received from another worker')
      })
    : undefined
  return { store, redis, flights, fills, counters: previous?.counters ?? new Map(), built, owned: true, stopPurges }
}

/**
 * The disk scrub's limits in this process: in a cluster each worker scrubs its own index of the
 * shared directory, so it takes its share of the entries and bytes per pass.
 */
function scrubLimitsOf(config: Config): ScrubLimits {
  const scrub = config.cache?.disk_scrub
  if (scrub == null) throw new Error('the cache has no disk tier')
  const workers = !inOwnCluster(config) ? 1 : config.server.workers === 'auto' ? availableParallelism() : config.server.workers
  return { sampleRate: scrub.sample_rate, maxEntries: Math.ceil(scrub.max_per_run / workers), bytesPerSec: scrub.bytes_per_sec / workers }
}

/** Each damaged entry a scrub found (and deleted), then the pass. */
function logScrub(logger: Logger, report: ScrubReport, trigger: 'schedule' | 'admin'): void {
  for (const { key, file, reason } of report.damagedEntries) logger.warn({ key, file, reason }, 'disk cache entry damaged; deleted')
  const { damagedEntries: _, ...pass } = report
  logger.info({ trigger, ...pass }, 'disk cache scrub pass')
}

/**
 * A worker of yatagarasu's own cluster (main.ts forks only when `server.workers` > 1): its siblings
 * are reached through the primary. A process forked by another cluster manager is on its own.
 */
function inOwnCluster(config: Config): boolean {
  return cluster.isWorker && config.server.workers !== 1
}

/** The cluster primary keeps the workers' shared rate-limit counters (see security/rate-limit.ts). */
export { serveRateLimits } from './security/rate-limit.ts'
/** The cluster primary keeps the ledger of each disk directory the workers share (cache/disk-cluster.ts). */
export { serveDiskLedgers } from './cache/disk-cluster.ts'

export type { PurgeTarget }

/**
 * How far a purge reached, besides this process: `redis` every instance and worker subscribed to
 * Redis; `workers` every other worker of this instance (through the primary), no other instance;
 * `local` this process only, and there is nothing else to reach (one process, no Redis);
 * `incomplete` some of the rest may still serve the old entries (Redis did not take the broadcast
 * in a single process, or a worker did not confirm in time).
 */
export interface PurgeOutcome {
  purged: number
  broadcast: 'redis' | 'workers' | 'local' | 'incomplete'
}

/** Fills in flight of purged keys: requests after the purge fetch afresh instead of joining them. */
function forgetFlights(flights: SharedCache['flights'], target: PurgeTarget): void {
  for (const key of flights.keys()) if (purgeCovers(target, key)) flights.delete(key)
}

/** Through the tiered cache, which remembers the purge so no fill in flight stores the old copy. */
async function purgeTiers(store: TieredCache, target: PurgeTarget): Promise<number> {
  if ('prefix' in target) return store.purge(target.prefix)
  await store.delete(target.exact)
  return store.tiers.length === 0 ? 0 : 1
}

function parsePurge(message: string): PurgeTarget | undefined {
  try {
    const value = JSON.parse(message) as Record<string, unknown>
    if (typeof value.prefix === 'string') return { prefix: value.prefix }
    if (typeof value.exact === 'string') return { exact: value.exact }
  } catch {
    // Not ours: ignore.
  }
  return undefined
}

function countersOf(cache: SharedCache, bucket: string): CacheCounters {
  let counters = cache.counters.get(bucket)
  if (counters === undefined) {
    counters = { hits: 0, misses: 0, stale: 0, hitBytes: 0 }
    cache.counters.set(bucket, counters)
  }
  return counters
}

async function buildAuthorizer(config: Config, bucket: BucketConfig, index: number): Promise<Authorizer | null> {
  const authz = bucket.authorization
  if (authz === null) return null
  const { loadWasmAuthorizer, PolicyLoadError, remoteAuthorizer } = await import('./auth/opa.ts')
  if (authz.kind === 'remote') return remoteAuthorizer(authz)
  try {
    return await loadWasmAuthorizer(authz)
  } catch (err) {
    if (!(err instanceof PolicyLoadError)) throw err
    throw new ConfigError(config.file, [
      { path: `buckets[${index}](${bucket.name}).authorization.policy_file`, message: err.message },
    ])
  }
}

/** The image modules, loaded (with sharp) only when a bucket renders images. */
interface Imaging {
  renderer(bucket: string, images: ImagesConfig, metrics: Metrics | undefined): ImageRenderer
  marks: typeof import('./images/watermark.ts') | undefined
}

/** What the bucket makes of its objects besides sending them as stored. */
function representationsOf(bucket: BucketConfig, metrics: Metrics | undefined, imaging: Imaging | undefined): Representations | null {
  if (bucket.images === null && bucket.watermark === null && bucket.compression === null) return null
  const marks = imaging?.marks
  return {
    images: bucket.images,
    renderer: bucket.images === null || imaging === undefined ? null : imaging.renderer(bucket.name, bucket.images, metrics),
    // config/load.ts refuses a watermark without images, so `marks` is loaded whenever one is set.
    watermark: bucket.watermark === null || marks === undefined ? null : { config: bucket.watermark, marks },
    compression: bucket.compression === null ? null : { config: bucket.compression, offered: supportedEncodings(bucket.compression.encodings) },
  }
}
