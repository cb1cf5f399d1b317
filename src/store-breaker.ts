// A circuit breaker for a shared store: one Redis node of the cache tier (or the single Redis), or
// the Redis that keeps rate-limit counters, so that a store that is down or hangs costs the
// requests that need it nothing instead of a command timeout each. A leaf: cache/ and security/
// both use it.
//
//            FAILURES_TO_OPEN consecutive failures
//   CLOSED -------------------------------------------> OPEN
//     ^                                                  |  ^
//     | the probe succeeds                               |  | the probe fails
//     |                                                  v  |
//     +------------------------------------------- HALF-OPEN
//                      after OPEN_MS in OPEN, exactly one call (the probe) goes through;
//                      every other call is refused until the probe reports
//
// A refused call never reaches Redis (the caller answers a miss, does nothing, or counts in the
// process). What counts as a failure is the caller's decision (redis.ts: a timeout or a connection
// error, not an error reply; rate-limit.ts: anything but an answer).
// Outcomes of calls admitted before the breaker opened are ignored once it is open: only the
// probe decides. The clock is injected so the state machine is tested without waiting.

export const FAILURES_TO_OPEN = 3
export const OPEN_MS = 5000

export type NodeBreakerState = 'closed' | 'open' | 'half-open'

/** What `acquire` granted; hand it back to `report`. */
export type Permit = 'call' | 'probe'

export class NodeBreaker {
  readonly #now: () => number
  #state: NodeBreakerState = 'closed'
  #failures = 0
  #openUntil = 0

  constructor(now: () => number = Date.now) {
    this.#now = now
  }

  get state(): NodeBreakerState {
    return this.#state
  }

  /** A permit to call the node, or undefined when the call must be skipped. */
  acquire(): Permit | undefined {
    if (this.#state === 'closed') return 'call'
    if (this.#state === 'half-open' || this.#now() < this.#openUntil) return undefined
    this.#state = 'half-open'
    return 'probe'
  }

  report(permit: Permit, ok: boolean): void {
    if (permit === 'probe') {
      if (ok) this.#close()
      else this.#open()
      return
    }
    if (this.#state !== 'closed') return
    if (ok) {
      this.#failures = 0
    } else if (++this.#failures >= FAILURES_TO_OPEN) {
      this.#open()
    }
  }

  #open(): void {
    this.#state = 'open'
    this.#openUntil = this.#now() + OPEN_MS
  }

  #close(): void {
    this.#state = 'closed'
    this.#failures = 0
  }
}
