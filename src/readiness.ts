// Readiness (/ready): whether each bucket's backend answers, from a cheap check (S3 HeadBucket)
// cached for a few seconds so a busy load balancer cannot turn probes into backend load.
// 200 when every bucket is reachable; 503 names the buckets that are not.
import type { ObjectSource } from './ports.ts'

export type BackendStatus = 'ready' | 'unavailable'

export interface ReadinessReport {
  status: 'ready' | 'unavailable'
  backends: Record<string, { status: BackendStatus; replicas: Record<string, 'healthy' | 'unhealthy'> }>
}

export class Readiness {
  readonly #buckets: ReadonlyArray<{ name: string; source: ObjectSource }>
  readonly #maxAgeMs: number
  #last: { at: number; report: ReadinessReport } | undefined
  #pending: Promise<ReadinessReport> | undefined

  constructor(buckets: ReadonlyArray<{ name: string; source: ObjectSource }>, maxAgeMs = 2000) {
    this.#buckets = buckets
    this.#maxAgeMs = maxAgeMs
  }

  report(): Promise<ReadinessReport> {
    if (this.#last !== undefined && Date.now() - this.#last.at < this.#maxAgeMs) {
      return Promise.resolve(this.#last.report)
    }
    this.#pending ??= this.#probe().finally(() => {
      this.#pending = undefined
    })
    return this.#pending
  }

  async #probe(): Promise<ReadinessReport> {
    const results = await Promise.all(this.#buckets.map((b) => b.source.probe()))
    const backends: ReadinessReport['backends'] = {}
    this.#buckets.forEach((bucket, i) => {
      const ok = results[i] === true
      backends[bucket.name] = {
        status: ok ? 'ready' : 'unavailable',
        replicas: { primary: ok ? 'healthy' : 'unhealthy' },
      }
    })
    const report: ReadinessReport = {
      status: results.every((ok) => ok) ? 'ready' : 'unavailable',
      backends,
    }
    this.#last = { at: Date.now(), report }
    return report
  }
}
