// A bucket's backends as one ObjectSource: replicas tried in priority order, each behind its own
// circuit breaker (breaker.ts), with a background health probe per replica.
//
// - A request goes to the first replica whose breaker admits it. A retryable failure (connection
//   error, timeout, 5xx) before any byte reached the client moves it to the next replica, within
//   the request's deadline (`s3.timeout`). Any answer from S3 (404, 403, 416 included) is final:
//   a missing object is not an outage.
// - Once a body is streaming there is no silent switch: a failing body aborts the response (and
//   counts against the replica).
// - `hedge_after_ms`: when the first replica has not answered headers in that time, the same
//   read goes to the next admitted replica too; the first answer wins and the other is aborted.
// - Every replica open or failed: 503 ORIGIN_UNAVAILABLE with Retry-After (serve() answers from a
//   stale cache entry first when it has one: the cache is looked up before any of this).
// - Health: a probe every `health_check.interval_seconds` (HeadBucket, or HeadObject on
//   `health_check.key`) feeds the breaker like a request does; without a breaker the last probe
//   decides. /ready reads `health()`.
import { ProxyError } from '../errors.ts'
import type { ListPage, ListPageRequest, ObjectBody, ObjectSource, ReadOptions, ReplicaHealth, ReplicaHealthSource } from '../ports.ts'
import type { Logger } from '../telemetry/log.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { ObjectMeta, RangeSpec } from '../types.ts'
import type { BreakerState, CircuitBreaker, Permit } from './breaker.ts'

export interface Replica {
  name: string
  source: ObjectSource
  /** Undefined for a single backend without `circuit_breaker`: it is always tried. */
  breaker: CircuitBreaker | undefined
}

export interface ReplicaSetOptions {
  bucket: string
  /** In priority order. */
  replicas: readonly Replica[]
  deadlineMs: number
  hedgeAfterMs: number | undefined
  probeIntervalMs: number
  metrics: Metrics | undefined
  logger: Logger
}

/** Errors that say the replica is not working (as opposed to an answer about the object). */
const REPLICA_FAILURES = new Set(['ORIGIN_TIMEOUT', 'ORIGIN_UNREACHABLE', 'ORIGIN_UNAVAILABLE', 'ORIGIN_ERROR'])

export function isReplicaFailure(err: unknown): err is ProxyError {
  return err instanceof ProxyError && REPLICA_FAILURES.has(err.code) && err.reason !== 'deadline'
}

/** The permit of a replica without a breaker: never looked at. */
const UNGUARDED: Permit = { kind: 'normal', epoch: 0 }

const BREAKER_GAUGE: Record<BreakerState, number> = { closed: 0, open: 1, 'half-open': 2 }

type Outcome<T> = { attempt: Attempt<T>; ok: true; value: T } | { attempt: Attempt<T>; ok: false; error: unknown }

interface Attempt<T> {
  replica: Replica
  controller: AbortController
  settled: Promise<Outcome<T>>
}

type Read<T> = (source: ObjectSource, options: ReadOptions) => Promise<T>

export class ReplicaSet implements ObjectSource, ReplicaHealthSource {
  readonly #options: ReplicaSetOptions
  readonly #replicas: readonly Replica[]
  /** Last probe result per replica (undefined until the first probe answers). */
  readonly #probed = new Map<string, boolean>()
  #firstProbes: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(options: ReplicaSetOptions) {
    this.#options = options
    this.#replicas = options.replicas
  }

  /**
   * Starts the background probes (once). Not done on construction: a runtime built only to check
   * a configuration (`--check`) never touches the network.
   */
  startProbing(): Promise<void> {
    if (this.#firstProbes !== undefined || this.#closed) return this.#firstProbes ?? Promise.resolve()
    let probing = true
    this.#firstProbes = this.#probeAll().finally(() => (probing = false))
    this.#timer = setInterval(() => {
      // A slow round (probes wait up to 5 s) is never overlapped by the next.
      if (probing) return
      probing = true
      void this.#probeAll().finally(() => (probing = false))
    }, this.#options.probeIntervalMs)
    this.#timer.unref()
    return this.#firstProbes
  }

  head(key: string, options: ReadOptions): Promise<ObjectMeta> {
    return this.#read('s3.HeadObject', (source, o) => source.head(key, o), options, false)
  }

  get(key: string, range: RangeSpec | undefined, options: ReadOptions): Promise<ObjectBody> {
    return this.#read('s3.GetObject', (source, o) => source.get(key, range, o), options, true)
  }

  revalidate(key: string, etag: string, options: ReadOptions): Promise<ObjectBody | 'not-modified'> {
    return this.#read('s3.GetObject', (source, o) => source.revalidate(key, etag, o), options, true)
  }

  list(page: ListPageRequest, options: ReadOptions): Promise<ListPage> {
    return this.#read('s3.ListObjects', (source, o) => source.list(page, o), options, false)
  }

  /** Whether any replica takes traffic (waits for the first probes at start-up). */
  async probe(): Promise<boolean> {
    const health = await this.health()
    return Object.values(health).some((h) => h === 'healthy')
  }

  /** Each replica's health, by name, in priority order. */
  async health(): Promise<Record<string, ReplicaHealth>> {
    await this.startProbing()
    const health: Record<string, ReplicaHealth> = {}
    for (const replica of this.#replicas) health[replica.name] = this.#healthOf(replica)
    return health
  }

  close(): void {
    // A probe still in flight must not feed breakers the next generation has taken over.
    this.#closed = true
    clearInterval(this.#timer)
    for (const replica of this.#replicas) replica.source.close()
  }

  #healthOf(replica: Replica): ReplicaHealth {
    const state = replica.breaker?.state ?? 'closed'
    if (state === 'open') return 'unhealthy'
    if (state === 'half-open') return 'half-open'
    return this.#probed.get(replica.name) === false ? 'unhealthy' : 'healthy'
  }

  async #probeAll(): Promise<void> {
    await Promise.all(
      this.#replicas.map(async (replica) => {
        // A probe is a request like any other: it waits for an open breaker's timeout and then
        // counts as one of the half-open trials.
        const permit = replica.breaker === undefined ? UNGUARDED : replica.breaker.acquire()
        if (permit === undefined) return
        const ok = await replica.source.probe()
        if (this.#closed) return
        this.#probed.set(replica.name, ok)
        if (ok) replica.breaker?.success(permit)
        else replica.breaker?.failure(permit)
        this.#publish(replica)
      })
    )
  }

  /** Gauges for one replica, after anything that may have changed its state. */
  #publish(replica: Replica): void {
    const metrics = this.#options.metrics
    if (metrics === undefined) return
    const labels = { bucket: this.#options.bucket, replica: replica.name }
    metrics.replicaHealth.set(labels, this.#healthOf(replica) === 'healthy' ? 1 : 0)
    metrics.breakerState.set(labels, BREAKER_GAUGE[replica.breaker?.state ?? 'closed'])
  }

  #read<T>(operation: string, read: Read<T>, options: ReadOptions, hedgeable: boolean): Promise<T> {
    const deadlineAt = Date.now() + this.#options.deadlineMs
    if (this.#replicas.length === 1) return this.#readOnly(operation, this.#replicas[0] as Replica, read, options, deadlineAt)
    return this.#readSet(operation, read, options, hedgeable, deadlineAt)
  }

  /** Replicas in priority order, with failover and hedging. */
  async #readSet<T>(operation: string, read: Read<T>, options: ReadOptions, hedgeable: boolean, deadlineAt: number): Promise<T> {
    const queue = [...this.#replicas]
    const running = new Set<Attempt<T>>()
    let lastFailure: ProxyError | undefined
    let failedFrom: string | undefined

    /** Starts the next replica whose breaker admits a request, if any is left before the deadline. */
    const startNext = (): Attempt<T> | undefined => {
      while (queue.length > 0 && Date.now() < deadlineAt) {
        const replica = queue.shift() as Replica
        const permit = replica.breaker === undefined ? UNGUARDED : replica.breaker.acquire()
        if (permit === undefined) continue
        const attempt = this.#start(operation, replica, permit, read, options, deadlineAt)
        running.add(attempt)
        return attempt
      }
      return undefined
    }

    if (startNext() === undefined) throw this.#unavailable('circuit_open')
    const hedgeAfterMs = hedgeable ? this.#options.hedgeAfterMs : undefined
    while (running.size > 0) {
      let hedgeTimer: NodeJS.Timeout | undefined
      const contenders: Array<Promise<Outcome<T> | 'hedge'>> = [...running].map((a) => a.settled)
      if (hedgeAfterMs !== undefined && running.size === 1 && queue.length > 0) {
        contenders.push(new Promise((resolve) => (hedgeTimer = setTimeout(resolve, hedgeAfterMs, 'hedge'))))
      }
      const first = await Promise.race(contenders)
      clearTimeout(hedgeTimer)
      if (first === 'hedge') {
        const hedged = startNext()
        if (hedged !== undefined) this.#options.metrics?.replicaHedges.inc({ bucket: this.#options.bucket, replica: hedged.replica.name })
        continue
      }
      running.delete(first.attempt)
      if (first.ok) {
        this.#abandon(running)
        const name = first.attempt.replica.name
        if (failedFrom !== undefined && failedFrom !== name) {
          this.#options.metrics?.replicaFailovers.inc({ bucket: this.#options.bucket, from: failedFrom, to: name })
          this.#options.logger.warn({ bucket: this.#options.bucket, from: failedFrom, to: name, reason: lastFailure?.reason }, 'replica failover')
        }
        options.servedBy?.(name)
        return first.value
      }
      if (!isReplicaFailure(first.error)) {
        // An answer about the object (404, 403, 416...) or a client that went away: final.
        this.#abandon(running)
        throw first.error
      }
      lastFailure = first.error
      failedFrom = first.attempt.replica.name
      if (running.size === 0) startNext()
    }
    throw this.#unavailable('all_replicas_failed', lastFailure)
  }

  /**
   * A single backend: no race to run and no attempt to abandon, so it reads with the client's own
   * signal (no controller of its own) and settles without the bookkeeping of a replica set. Its
   * errors are its own (502, 504), not "all replicas failed".
   */
  #readOnly<T>(operation: string, replica: Replica, read: Read<T>, options: ReadOptions, deadlineAt: number): Promise<T> {
    const permit = replica.breaker === undefined ? UNGUARDED : replica.breaker.acquire()
    if (permit === undefined) return Promise.reject(this.#unavailable('circuit_open'))
    return this.#attempt(operation, replica, permit, read, options, deadlineAt, options.signal, true)
  }

  /** One replica of a set, cancelled when the client goes away or the attempt is abandoned. */
  #start<T>(operation: string, replica: Replica, permit: Permit, read: Read<T>, options: ReadOptions, deadlineAt: number): Attempt<T> {
    const controller = new AbortController()
    // The client's abort is forwarded until the attempt settles (its body is then cancelled through
    // the stream); cheaper than AbortSignal.any, whose composite signal lives on in a registry.
    const clientSignal = options.signal
    const onClientGone = () => controller.abort(clientSignal?.reason)
    if (clientSignal?.aborted === true) onClientGone()
    else clientSignal?.addEventListener('abort', onClientGone, { once: true })
    const unlink = () => clientSignal?.removeEventListener('abort', onClientGone)
    const attempt: Attempt<T> = {
      replica,
      controller,
      settled: this.#attempt(operation, replica, permit, read, options, deadlineAt, controller.signal, false).then(
        (value): Outcome<T> => {
          unlink()
          return { attempt, ok: true, value }
        },
        (error: unknown): Outcome<T> => {
          unlink()
          return { attempt, ok: false, error }
        }
      ),
    }
    return attempt
  }

  /**
   * Reads from one replica and settles its breaker, span and gauges by the outcome; `announce`: a
   * success is told to `options.servedBy` here (a replica set tells it once the race is won).
   */
  async #attempt<T>(
    operation: string,
    replica: Replica,
    permit: Permit,
    read: Read<T>,
    options: ReadOptions,
    deadlineAt: number,
    signal: AbortSignal | undefined,
    announce: boolean
  ): Promise<T> {
    const span = options.span?.child(operation, { 'yatagarasu.bucket': this.#options.bucket, 'yatagarasu.replica': replica.name })
    const breaker = replica.breaker
    const clientAbort = options.abortResponse
    const attemptOptions: ReadOptions = {
      signal,
      deadlineAt,
      ifMatch: options.ifMatch,
      // A body that fails mid-transfer is this replica failing too.
      abortResponse:
        clientAbort === undefined || breaker === undefined
          ? clientAbort
          : (error) => {
              if (isReplicaFailure(error)) {
                // The headers counted as a success; the body failing counts against the replica
                // in the same state period (a trial's body failing re-opens the breaker).
                breaker.failure({ kind: 'normal', epoch: permit.epoch })
                this.#publish(replica)
              }
              return clientAbort(error)
            },
    }
    let value: T
    try {
      value = await read(replica.source, attemptOptions)
    } catch (error) {
      if (span !== undefined) {
        span.fail(error)
        span.end()
      }
      if (isReplicaFailure(error)) breaker?.failure(permit)
      else if (error instanceof ProxyError && (error.code === 'ORIGIN_ABORTED' || error.reason === 'deadline')) breaker?.release(permit)
      else breaker?.success(permit)
      this.#publish(replica)
      throw error
    }
    span?.end()
    breaker?.success(permit)
    this.#publish(replica)
    if (announce) options.servedBy?.(replica.name)
    return value
  }

  /** Aborts attempts that lost (hedging) and drops any body they still deliver. */
  #abandon<T>(running: Set<Attempt<T>>): void {
    for (const attempt of running) {
      attempt.controller.abort()
      void attempt.settled.then((outcome) => {
        if (outcome.ok) void discard(outcome.value)
      })
    }
    running.clear()
  }

  #unavailable(reason: string, cause?: unknown): ProxyError {
    const waits = this.#replicas.map((r) => r.breaker?.retryAfterMs() ?? 0).filter((ms) => ms > 0)
    const seconds = Math.max(1, Math.ceil((waits.length > 0 ? Math.min(...waits) : 1000) / 1000))
    return new ProxyError('ORIGIN_UNAVAILABLE', { reason, cause, headers: { 'retry-after': String(seconds) } })
  }
}

async function discard(value: unknown): Promise<void> {
  const stream = (value as Partial<ObjectBody> | undefined)?.stream
  await stream?.cancel().catch(() => undefined)
}
