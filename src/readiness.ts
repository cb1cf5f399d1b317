// Readiness (/ready): each bucket's replicas as their breakers and background probes see them
// (replicas.ts), so a busy load balancer's probes never turn into backend load.
//   ready        every replica of every bucket is healthy                       200
//   degraded     every bucket has a healthy replica, some replica is not        200
//   unavailable  some bucket has no healthy replica (named in `backends`)        503
import type { ReplicaHealth, ReplicaHealthSource } from './ports.ts'

export type BackendStatus = 'ready' | 'degraded' | 'unavailable'

export interface ReadinessReport {
  status: BackendStatus
  backends: Record<string, { status: BackendStatus; replicas: Record<string, ReplicaHealth> }>
}

export class Readiness {
  readonly #buckets: ReadonlyArray<{ name: string; replicas: ReplicaHealthSource }>

  constructor(buckets: ReadonlyArray<{ name: string; replicas: ReplicaHealthSource }>) {
    this.#buckets = buckets
  }

  async report(): Promise<ReadinessReport> {
    const healths = await Promise.all(this.#buckets.map((b) => b.replicas.health()))
    const backends: ReadinessReport['backends'] = {}
    const statuses: BackendStatus[] = []
    this.#buckets.forEach((bucket, i) => {
      const replicas = healths[i] ?? {}
      const states = Object.values(replicas)
      const healthy = states.filter((s) => s === 'healthy').length
      const status: BackendStatus = healthy === 0 ? 'unavailable' : healthy === states.length ? 'ready' : 'degraded'
      statuses.push(status)
      backends[bucket.name] = { status, replicas }
    })
    const status: BackendStatus = statuses.includes('unavailable') ? 'unavailable' : statuses.includes('degraded') ? 'degraded' : 'ready'
    return { status, backends }
  }
}
