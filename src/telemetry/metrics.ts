// Every Prometheus metric of the proxy, declared here and nowhere else (docs/metrics.md lists them;
// test/e2e/metrics.test.ts keeps the two in step). Histograms, not summaries, so they aggregate
// across instances. Labels are bounded: bucket (a configured name), method, status, cache result
// and tier, replica, result, reason. Never a path, key, token or user.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export class Metrics {
  readonly registry = new Registry()

  readonly requests = new Counter({
    name: 'http_requests_total',
    help: 'Requests answered, by bucket, method and status code',
    labelNames: ['bucket', 'method', 'status'] as const,
    registers: [this.registry],
  })
  readonly requestDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time from request to the last byte sent (or the connection closed), by bucket, method and status class',
    labelNames: ['bucket', 'method', 'status_class'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly bytesSent = new Counter({
    name: 'http_response_body_bytes_total',
    help: 'Body bytes sent to clients, by bucket and cache tier (none when the origin answered)',
    labelNames: ['bucket', 'tier'] as const,
    registers: [this.registry],
  })
  readonly inFlight = new Gauge({
    name: 'http_requests_in_flight',
    help: 'Requests being answered right now',
    registers: [this.registry],
  })
  readonly cacheRequests = new Counter({
    name: 'cache_requests_total',
    help: 'Cache outcomes of object requests, by bucket and result (hit, miss, stale)',
    labelNames: ['bucket', 'result'] as const,
    registers: [this.registry],
  })
  readonly cacheHitBytes = new Counter({
    name: 'cache_hit_bytes_total',
    help: 'Object bytes answered from the cache, by bucket and tier',
    labelNames: ['bucket', 'tier'] as const,
    registers: [this.registry],
  })
  /** Reads the cache sizes from the tiers; set by the server, called once per scrape. */
  onScrape: (() => void) | undefined
  readonly cacheEntries = new Gauge({
    name: 'cache_entries',
    help: 'Entries held, by tier (memory, disk)',
    labelNames: ['tier'] as const,
    registers: [this.registry],
    // The first of the cache gauges to be collected: it fills in the others too (sizes are read
    // when Prometheus asks, not kept up to date per request). Also runs in a cluster worker.
    collect: () => this.onScrape?.(),
  })
  readonly cacheBytes = new Gauge({
    name: 'cache_size_bytes',
    help: 'Bytes held, by tier (memory, disk)',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  })
  readonly cacheEvictions = new Gauge({
    name: 'cache_evictions',
    help: 'Entries evicted to stay under the size limit since start, by tier',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  })
  readonly cacheWritesPaused = new Gauge({
    name: 'cache_writes_paused',
    help: 'Whether the disk tier takes no new writes now (1) because the disk failed one lately (stalled, full, I/O error), by tier; with workers, 1 when any worker\'s are paused',
    labelNames: ['tier'] as const,
    aggregator: 'max',
    registers: [this.registry],
  })
  readonly cacheScrubEntries = new Gauge({
    name: 'cache_scrub_entries',
    help: 'Entries the disk scrub read and checked since start, by tier and result (intact, or damaged: deleted)',
    labelNames: ['tier', 'result'] as const,
    registers: [this.registry],
  })
  readonly cacheScrubBytes = new Gauge({
    name: 'cache_scrub_bytes',
    help: 'Bytes the disk scrub read since start, by tier',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  })
  readonly originRequests = new Counter({
    name: 'http_requests_by_replica_total',
    help: 'Requests sent to a storage backend, by bucket, replica and result (ok, or the error code)',
    labelNames: ['bucket', 'replica', 'result'] as const,
    registers: [this.registry],
  })
  readonly originDuration = new Histogram({
    name: 'origin_request_duration_seconds',
    help: 'Time to the backend’s response headers, by bucket and replica',
    labelNames: ['bucket', 'replica'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly replicaFailovers = new Counter({
    name: 'replica_failovers_total',
    help: 'Requests that moved from a failing replica to the next one, by bucket, from and to',
    labelNames: ['bucket', 'from', 'to'] as const,
    registers: [this.registry],
  })
  readonly replicaHedges = new Counter({
    name: 'replica_hedged_requests_total',
    help: 'Second requests sent to the next replica because the first was slow (hedge_after_ms), by bucket and replica',
    labelNames: ['bucket', 'replica'] as const,
    registers: [this.registry],
  })
  readonly replicaHealth = new Gauge({
    name: 'replica_health',
    help: 'Whether a replica takes traffic: 1 healthy (breaker closed, last probe answered), 0 otherwise, by bucket and replica',
    labelNames: ['bucket', 'replica'] as const,
    registers: [this.registry],
  })
  readonly breakerState = new Gauge({
    name: 'circuit_breaker_state',
    help: 'Circuit breaker state of a replica: 0 closed, 1 open, 2 half-open, by bucket and replica',
    labelNames: ['bucket', 'replica'] as const,
    registers: [this.registry],
  })
  readonly authResults = new Counter({
    name: 'auth_results_total',
    help: 'Authentication outcomes on buckets that require a token, by bucket, result and reason',
    labelNames: ['bucket', 'result', 'reason'] as const,
    registers: [this.registry],
  })
  readonly authzDecisions = new Counter({
    name: 'opa_decisions_total',
    help: 'OPA decisions, by bucket and reason (opa_allow, opa_deny, opa_error, opa_timeout, opa_fail_open)',
    labelNames: ['bucket', 'reason'] as const,
    registers: [this.registry],
  })
  readonly authzDuration = new Histogram({
    name: 'opa_decision_duration_seconds',
    help: 'Time to an OPA decision (cached decisions included), by bucket',
    labelNames: ['bucket'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly auditDropped = new Counter({
    name: 'audit_records_dropped_total',
    help: 'Audit records an output could not write (unwritable file, syslog unreachable, S3 backlog full), by output',
    labelNames: ['output'] as const,
    registers: [this.registry],
  })
  readonly requestsRefused = new Counter({
    name: 'requests_refused_total',
    help: 'Requests refused before any object work, by reason (ip_filter, rate_limit_global, rate_limit_per_ip, rate_limit_per_user, rate_limit_bucket, overloaded)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly configReloads = new Counter({
    name: 'config_reloads_total',
    help: 'Configuration reloads, by result (success, failure)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly configGeneration = new Gauge({
    name: 'config_generation',
    help: 'The generation of the configuration being served (1 at start, +1 per successful reload)',
    // Every worker of a cluster serves the same generation: the newest, not their sum.
    aggregator: 'max',
    registers: [this.registry],
  })

  readonly imageRenders = new Counter({
    name: 'image_renders_total',
    help: 'Image renders, by bucket, preset (or "custom", "original" for a watermarked original), output format and result (ok, busy, timeout, unprocessable, error)',
    labelNames: ['bucket', 'preset', 'format', 'result'] as const,
    registers: [this.registry],
  })
  readonly imageRenderDuration = new Histogram({
    name: 'image_render_duration_seconds',
    help: 'Time one image render took in libvips (queue wait excluded), by bucket and output format',
    labelNames: ['bucket', 'format'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  })
  readonly imageQueueDepth = new Gauge({
    name: 'image_render_queue_depth',
    help: 'Image renders waiting for a render slot, by bucket',
    labelNames: ['bucket'] as const,
    registers: [this.registry],
  })
  readonly compressions = new Counter({
    name: 'compressions_total',
    help: 'Representations compressed (once per object version and encoding; served many times from the cache), by encoding',
    labelNames: ['encoding'] as const,
    registers: [this.registry],
  })

  constructor() {
    collectDefaultMetrics({ register: this.registry })
  }
}
