// Deadlines of the Redis tier's calls: a call that has not settled `timeoutMs` after it started is
// given up (the caller answers a miss) and counts as a failure for its node's breaker.
//
// A plain timer per command (ioredis' `commandTimeout`) also fires when Redis answered at once but
// this process did not read the answer in time: a garbage collection or a long batch of requests
// holds the event loop, the timers phase comes before the poll phase that would read the reply, and
// a burst of 64 "timeouts" opens the breaker of a healthy node, turning every hit into an origin
// fetch for OPEN_MS. So when the timer fires late (the loop was held up past the deadline), the
// calls it would expire get a grace period first, in which the loop reads what is already there
// and Redis, which may share the core, gets to answer; again while the timer keeps firing late,
// up to MAX_HELD_MS past the deadline. Giving up sooner would not shorten any wait (the loop was
// not running), only turn hits into origin fetches. With a loop that runs on time a node that
// hangs is given up after timeoutMs, as before.
//
// One timer for all calls (the deadlines are in start order, one timeout for all), none per call.

/** A timer this much later than asked means the event loop was held up. */
export const LATE_MS = 10
/** How long calls past their deadline wait after a late timer before they are given up. */
export const GRACE_MS = 20
/** However late the timers, a call is given up this long after its deadline. */
export const MAX_HELD_MS = 1000

export interface Deadline {
  /** True when the call is settled now; false when it was given up before (ignore its outcome). */
  settle(): boolean
}

class Pending implements Deadline {
  /** Until the call settles or is given up: a settled call waiting to leave the queue must not keep its caller's objects alive. */
  expire: (() => void) | undefined

  constructor(
    readonly at: number,
    expire: () => void
  ) {
    this.expire = expire
  }

  get done(): boolean {
    return this.expire === undefined
  }

  settle(): boolean {
    if (this.expire === undefined) return false
    this.expire = undefined
    return true
  }
}

export class Deadlines {
  readonly #timeoutMs: number
  readonly #now: () => number
  /** Calls not yet settled nor given up, in deadline order from `#head` (settled ones are skipped lazily). */
  #queue: Pending[] = []
  #head = 0
  #timer: NodeJS.Timeout | undefined
  /** When the armed timer was due. */
  #due = 0

  constructor(timeoutMs: number, now: () => number = () => performance.now()) {
    this.#timeoutMs = timeoutMs
    this.#now = now
  }

  /** Starts the clock of one call; `expire` runs if it has not settled by its deadline. */
  start(expire: () => void): Deadline {
    const call = new Pending(this.#now() + this.#timeoutMs, expire)
    this.#queue.push(call)
    if (this.#timer === undefined) this.#arm(call.at)
    return call
  }

  /** Calls in flight (settled ones still queued included). */
  get size(): number {
    return this.#queue.length - this.#head
  }

  #arm(due: number): void {
    this.#due = due
    this.#timer = setTimeout(() => this.#fire(), Math.max(1, due - this.#now()))
    this.#timer.unref()
  }

  #fire(): void {
    this.#timer = undefined
    const now = this.#now()
    // Late: the loop was held up, so the calls past their deadline get a grace period (up to the cap).
    const late = now - this.#due > LATE_MS
    const expireUpTo = late ? now - MAX_HELD_MS : now
    while (this.#head < this.#queue.length) {
      const call = this.#queue[this.#head] as Pending
      if (!call.done && call.at > expireUpTo) break
      this.#head++
      const expire = call.expire
      call.expire = undefined
      expire?.()
    }
    this.#skipSettled()
    const next = this.#queue[this.#head]
    if (next !== undefined) this.#arm(next.at <= now ? now + GRACE_MS : next.at)
  }

  #skipSettled(): void {
    while (this.#head < this.#queue.length && (this.#queue[this.#head] as Pending).done) this.#head++
    this.#compact()
  }

  #compact(): void {
    if (this.#head === this.#queue.length) {
      this.#queue = []
      this.#head = 0
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head)
      this.#head = 0
    }
  }
}
