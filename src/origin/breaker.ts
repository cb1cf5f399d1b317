// A circuit breaker for one replica, fed by the real outcomes of its requests and health probes.
//
//            failure_threshold consecutive failures
//   CLOSED ---------------------------------------------> OPEN
//     ^                                                  |  ^
//     | success_threshold trial successes                |  | any trial failure
//     |                                                  v  |
//     +------------------------------------------- HALF-OPEN
//                       after timeout_seconds in OPEN, up to half_open_max_requests trials
//                       run at once; other requests skip the replica meanwhile
//
// What counts is decided by the caller (replicas.ts): connection errors, timeouts and 5xx are
// failures; any answer from S3 (2xx, 304, 403, 404, 416) is a success; a client that went away
// is neither (`release`). The clock is injected so the state machine is tested without waiting.

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface BreakerOptions {
  failureThreshold: number
  successThreshold: number
  openMs: number
  halfOpenMaxRequests: number
  now?: () => number
  /** Told about every state change (metrics, logs). */
  onChange?: (from: BreakerState, to: BreakerState) => void
}

/**
 * What `acquire` granted: a normal request, or one of the limited half-open trials, in the state
 * period (`epoch`) it was granted in. An outcome from an earlier period (a request that started
 * before the breaker last changed state) is ignored: it says nothing about the replica now.
 */
export interface Permit {
  kind: 'normal' | 'trial'
  epoch: number
}

export class CircuitBreaker {
  readonly #options: Required<Omit<BreakerOptions, 'onChange'>> & Pick<BreakerOptions, 'onChange'>
  #state: BreakerState = 'closed'
  #failures = 0
  #successes = 0
  #openedAt = 0
  #trialsInFlight = 0
  #epoch = 0

  constructor(options: BreakerOptions) {
    this.#options = { now: Date.now, ...options }
  }

  get state(): BreakerState {
    // An open breaker whose wait is over is half-open, even before the next request asks.
    if (this.#state === 'open' && this.#options.now() - this.#openedAt >= this.#options.openMs) this.#to('half-open')
    return this.#state
  }

  /** Milliseconds until an open breaker admits trials (0 when it already does). */
  retryAfterMs(): number {
    if (this.state !== 'open') return 0
    return Math.max(0, this.#openedAt + this.#options.openMs - this.#options.now())
  }

  /** Whether a request may go to the replica now; the permit is handed back with the outcome. */
  acquire(): Permit | undefined {
    const state = this.state
    if (state === 'closed') return { kind: 'normal', epoch: this.#epoch }
    if (state === 'open' || this.#trialsInFlight >= this.#options.halfOpenMaxRequests) return undefined
    this.#trialsInFlight++
    return { kind: 'trial', epoch: this.#epoch }
  }

  success(permit: Permit): void {
    if (!this.#settle(permit)) return
    if (this.#state === 'closed') {
      this.#failures = 0
    } else if (this.#state === 'half-open' && permit.kind === 'trial') {
      this.#successes++
      if (this.#successes >= this.#options.successThreshold) this.#to('closed')
    }
  }

  failure(permit: Permit): void {
    if (!this.#settle(permit)) return
    if (this.#state === 'closed') {
      this.#failures++
      if (this.#failures >= this.#options.failureThreshold) this.#to('open')
    } else if (this.#state === 'half-open') {
      this.#to('open')
    }
  }

  /** Neither success nor failure (the client went away): frees a trial slot. */
  release(permit: Permit): void {
    this.#settle(permit)
  }

  /** Frees the permit's trial slot; false when the permit is from an earlier state period. */
  #settle(permit: Permit): boolean {
    // Reading `state` first lets an expired open period turn half-open (a new epoch).
    void this.state
    if (permit.epoch !== this.#epoch) return false
    if (permit.kind === 'trial' && this.#trialsInFlight > 0) this.#trialsInFlight--
    return true
  }

  #to(next: BreakerState): void {
    const from = this.#state
    if (from === next) return
    this.#state = next
    this.#epoch++
    this.#failures = 0
    this.#successes = 0
    if (next === 'open') this.#openedAt = this.#options.now()
    this.#trialsInFlight = 0
    this.#options.onChange?.(from, next)
  }
}
