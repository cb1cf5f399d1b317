// The health of one Redis node of the cache tier, judged by progress: its breaker (store-breaker.ts)
// plus when the node last answered anything on our connection, and last answered a call in time.
//
// A call that reaches its deadline is given up either way (the caller answers a miss), but it
// counts as a failure only if the node has answered nothing for the whole timeout. On one
// connection the replies come back in order, so a call waits behind every reply sent before it:
// 64 requests for 100 KiB hits put 6.4 MB of replies ahead of the last one, and when this process
// is busy (a burst of requests, a garbage collection, a CPU shared with Redis, which then writes
// one large reply per turn of its own loop) the last ones arrive after the timeout while the node
// keeps answering. That is a queue, not a failing node; opening the breaker for it turned every
// hit into an origin fetch for OPEN_MS. A node that hangs (SIGSTOP, a blocking command) answers
// nothing, so the calls sent after it stopped fail as before and open its breaker within about
// one timeout.
//
// A node that keeps answering but answers no call in time for SLOW_FOR_MS is no use either (every
// caller waits a timeout for a miss, and the answers nobody waits for any more keep the queue
// long): its timeouts count as failures again, and the breaker opens and lets the queue drain.
// A probe must be answered in time to close the breaker.
//
// What counts as an answer: a value, an empty reply or an error reply, also one that arrives after
// its call was given up. Connection errors are failures at once.
import { NodeBreaker, type Permit } from '../store-breaker.ts'

/** Answers, but none in time, for this long: the node counts as failing. */
export const SLOW_FOR_MS = 1000

export class RedisNodeHealth {
  readonly breaker = new NodeBreaker()
  readonly #timeoutMs: number
  readonly #slowForMs: number
  /** performance.now() of the node's last answer. */
  #answeredAt = -Infinity
  /** performance.now() of its last answer to a call still waiting for it. */
  #answeredInTimeAt = -Infinity

  constructor(timeoutMs: number, slowForMs = SLOW_FOR_MS) {
    this.#timeoutMs = timeoutMs
    this.#slowForMs = slowForMs
  }

  /** A permit to call the node, or undefined when its breaker is open. */
  acquire(): Permit | undefined {
    return this.breaker.acquire()
  }

  /** The node answered a call in time (a value or an error reply). */
  answered(permit: Permit, now: number): void {
    this.#answeredAt = now
    this.#answeredInTimeAt = now
    this.breaker.report(permit, true)
  }

  /** An answer to a call that was given up: the node is slow, not gone. */
  answeredLate(now: number): void {
    this.#answeredAt = now
  }

  /** The call's connection failed (closed, refused): a failure. */
  failed(permit: Permit): void {
    this.breaker.report(permit, false)
  }

  /** The call was given up at its deadline: a failure unless the node is answering, only late. */
  timedOut(permit: Permit, now: number): void {
    const answering = now - this.#answeredAt <= this.#timeoutMs
    const useful = now - this.#answeredInTimeAt <= this.#slowForMs
    if (permit === 'call' && answering && useful) return
    this.breaker.report(permit, false)
  }
}
