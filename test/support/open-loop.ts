// An open-loop load generator for tests: each client sends requests on a fixed schedule whatever
// the previous answers take (a slow answer never delays the next request), and each latency is
// measured from when the request was *scheduled*, not sent, so a stall shows up in every request
// it held back (no coordinated omission). Bounded: it stops by itself after `maxMs`. It also
// records this process's event-loop delay over the run, to tell a stall of the whole process (a
// busy machine) from a slow answer.
import { monitorEventLoopDelay } from 'node:perf_hooks'

export interface Sample<T> {
  client: number
  /** When the request was scheduled, in performance.now() milliseconds. */
  scheduledAt: number
  /** From scheduledAt to the answer (or the error). */
  latencyMs: number
  value?: T
  error?: unknown
}

export interface OpenLoopOptions<T> {
  clients: number
  /** Requests per second, per client. */
  rate: number
  /** Sends one request; `seq` counts every request of the run, in schedule order. */
  request(client: number, seq: number): Promise<T>
  /** A hard bound on the run (stop() usually ends it first). */
  maxMs: number
}

export interface OpenLoop<T> {
  /** Every finished request so far, in completion order. */
  readonly samples: Sample<T>[]
  /** Stops scheduling and resolves once every request in flight has answered. */
  stop(): Promise<Sample<T>[]>
  /** The longest the event loop was held up during the run, in milliseconds. */
  maxEventLoopDelayMs(): number
}

export function startOpenLoop<T>(options: OpenLoopOptions<T>): OpenLoop<T> {
  const samples: Sample<T>[] = []
  const inFlight = new Set<Promise<void>>()
  const interval = 1000 / options.rate
  const start = performance.now()
  let stopped = false
  let seq = 0
  const timers = new Set<NodeJS.Timeout>()
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()

  const fire = (client: number, scheduledAt: number) => {
    const n = seq++
    const done = options.request(client, n).then(
      (value) => void samples.push({ client, scheduledAt, latencyMs: performance.now() - scheduledAt, value }),
      (error: unknown) => void samples.push({ client, scheduledAt, latencyMs: performance.now() - scheduledAt, error })
    )
    inFlight.add(done)
    void done.then(() => inFlight.delete(done))
  }

  const schedule = (client: number, k: number) => {
    // Clients are spread evenly over one interval; a late timer fires at once and its latency
    // still counts from the planned time.
    const at = start + (client * interval) / options.clients + k * interval
    if (stopped || at - start > options.maxMs) return
    const timer = setTimeout(() => {
      timers.delete(timer)
      if (stopped) return
      // Catch up on every request that should have started by now (the event loop was busy).
      let next = k
      for (; start + (client * interval) / options.clients + next * interval <= performance.now(); next++) {
        fire(client, start + (client * interval) / options.clients + next * interval)
      }
      schedule(client, next)
    }, Math.max(0, at - performance.now()))
    timers.add(timer)
  }
  for (let client = 0; client < options.clients; client++) schedule(client, 0)

  return {
    samples,
    async stop() {
      stopped = true
      delay.disable()
      for (const timer of timers) clearTimeout(timer)
      while (inFlight.size > 0) await Promise.all([...inFlight])
      return samples
    },
    maxEventLoopDelayMs: () => delay.max / 1e6,
  }
}

/** The p-th percentile (0-100) by nearest rank; NaN for no values. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number
}
