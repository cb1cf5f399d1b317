// Cache prewarming (POST /admin/cache/prewarm): lists a prefix of a bucket through its replica set
// (ObjectSource.list) and fills the cache tiers with each object, a few at a time, in the
// background. An object is stored exactly as a whole-object miss of the serve stage stores it
// (same key, storage policy from its Cache-Control and the bucket's ttl, max item size), and a
// fetch joins, or is joined by, a client's fetch of the same key (the bucket's flights), so a
// prewarm never doubles origin requests.
//
// Jobs:  running -> done       listing exhausted or a budget (max_objects, max_bytes) reached
//                -> failed     the listing itself failed (objects that fail count as failures)
//                -> stopped    its generation was replaced (reload) or closed (shutdown)
// One job per bucket + prefix runs at a time. Finished jobs are kept (the last MAX_KEPT) so their
// outcome can still be read, across reloads (the registry is handed to the next generation).
import { randomUUID } from 'node:crypto'
import { isSafeKey } from './http/path.ts'
import type { ListedObject, ReadOptions } from './ports.ts'
import { fetchWhole } from './pipeline/serve.ts'
import type { BucketCache, BucketRoute } from './types.ts'

export type PrewarmStatus = 'running' | 'done' | 'failed' | 'stopped'

export interface PrewarmRequest {
  prefix: string
  maxObjects: number
  maxBytes: number
  concurrency: number
}

export interface PrewarmReport {
  id: string
  bucket: string
  prefix: string
  status: PrewarmStatus
  /** Objects fetched into the cache. */
  objects_done: number
  /** Their bytes. */
  bytes_done: number
  /** Objects left alone: already fresh in the cache, larger than the cache takes, or not storable. */
  objects_skipped: number
  failures: number
  /** Why the listing failed (status failed). */
  error?: string
}

interface Job {
  report: PrewarmReport
  generation: number
  abort: AbortController
  done: Promise<void>
}

const PAGE = 1000
const MAX_KEPT = 100
const STOP_WAIT_MS = 5000

/** The prewarm jobs of a process, across configuration generations. */
export class PrewarmRegistry {
  readonly #jobs = new Map<string, Job>()
  readonly #ended: (report: PrewarmReport) => void

  /** `ended` is told each job's final report (for the log). */
  constructor(ended: (report: PrewarmReport) => void = () => {}) {
    this.#ended = ended
  }

  /** Starts a job, or returns the one already running for the same bucket and prefix. */
  start(bucket: BucketRoute & { cache: BucketCache }, request: PrewarmRequest, generation: number): { started: boolean; report: PrewarmReport } {
    for (const job of this.#jobs.values()) {
      if (job.report.status === 'running' && job.report.bucket === bucket.name && job.report.prefix === request.prefix) return { started: false, report: { ...job.report } }
    }
    const report: PrewarmReport = { id: randomUUID(), bucket: bucket.name, prefix: request.prefix, status: 'running', objects_done: 0, bytes_done: 0, objects_skipped: 0, failures: 0 }
    const abort = new AbortController()
    const job: Job = { report, generation, abort, done: Promise.resolve() }
    job.done = run(bucket, request, report, abort.signal)
      .catch((err: unknown) => {
        report.status = 'failed'
        report.error = err instanceof Error ? err.message : String(err)
      })
      .then(() => this.#ended({ ...report }))
    this.#jobs.set(report.id, job)
    this.#trim()
    return { started: true, report: { ...report } }
  }

  get(id: string): PrewarmReport | undefined {
    const job = this.#jobs.get(id)
    return job === undefined ? undefined : { ...job.report }
  }

  /** Stops the running jobs of the generations `filter` picks; waits (a little) for them to end. */
  async stop(filter: (generation: number) => boolean): Promise<void> {
    const stopping: Promise<void>[] = []
    for (const job of this.#jobs.values()) {
      if (job.report.status !== 'running' || !filter(job.generation)) continue
      job.report.status = 'stopped'
      job.abort.abort()
      stopping.push(job.done)
    }
    if (stopping.length === 0) return
    // A fetch that does not end on its abort must not hold up a reload or a shutdown for long.
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, STOP_WAIT_MS)
      timer.unref()
    })
    await Promise.race([Promise.allSettled(stopping), limit])
    clearTimeout(timer)
  }

  #trim(): void {
    for (const [id, job] of this.#jobs) {
      if (this.#jobs.size <= MAX_KEPT) return
      if (job.report.status !== 'running') this.#jobs.delete(id)
    }
  }
}

async function run(bucket: BucketRoute & { cache: BucketCache }, request: PrewarmRequest, report: PrewarmReport, signal: AbortSignal): Promise<void> {
  const options: ReadOptions = { signal }
  const queue: ListedObject[] = []
  let listed = false
  let claimedBytes = 0
  let claimedObjects = 0
  let budgetReached = false
  // The listing runs ahead of the fetches by at most a page; waiters wake on any change.
  const waiters = new Set<() => void>()
  const wait = () => new Promise<void>((resolve) => waiters.add(resolve))
  const notify = () => {
    for (const resolve of waiters) resolve()
    waiters.clear()
  }
  signal.addEventListener('abort', notify, { once: true })

  const lister = (async () => {
    let after = ''
    try {
      while (!signal.aborted && !budgetReached) {
        const page = await bucket.source.list({ prefix: request.prefix, after, maxKeys: PAGE }, options)
        queue.push(...page.objects)
        notify()
        const last = page.objects.at(-1)
        if (!page.truncated || last === undefined) break
        after = last.key
        while (queue.length > PAGE && !signal.aborted && !budgetReached) await wait()
      }
    } finally {
      listed = true
      notify()
    }
  })()

  const worker = async () => {
    while (!signal.aborted) {
      const next = queue.shift()
      if (next === undefined) {
        if (listed || budgetReached) return
        await wait()
        continue
      }
      notify()
      if (!isSafeKey(next.key) || next.key.endsWith('/') || next.size > bucket.cache.maxItemBytes) {
        report.objects_skipped++
        continue
      }
      const cacheKey = `${bucket.name}/${next.key}`
      try {
        const cached = await bucket.cache.store.lookup(cacheKey)
        if (cached !== undefined && cached.entry.freshUntil > Date.now()) {
          report.objects_skipped++
          continue
        }
      } catch {
        // A tier that cannot answer: fetch as a miss would.
      }
      // Budgets are claimed before the fetch, in key order, so concurrent fetches never overshoot.
      if (claimedObjects >= request.maxObjects || claimedBytes + next.size > request.maxBytes) {
        budgetReached = true
        notify()
        return
      }
      claimedObjects++
      claimedBytes += next.size
      try {
        const stored = await warm(bucket, bucket.cache, next.key, cacheKey, options)
        if (stored === undefined) {
          report.objects_skipped++
        } else if (!signal.aborted) {
          report.objects_done++
          report.bytes_done += stored
        }
      } catch {
        if (!signal.aborted) report.failures++
      }
    }
  }

  const workers = Array.from({ length: request.concurrency }, worker)
  const [listing] = await Promise.allSettled([lister, ...workers])
  if (report.status !== 'running') return
  if (listing?.status === 'rejected') {
    report.status = 'failed'
    const reason: unknown = listing.reason
    report.error = reason instanceof Error ? reason.message : String(reason)
    return
  }
  report.status = 'done'
}

/**
 * Fetches one whole object into every tier, as a serve-stage miss would (serve's fetchWhole); the
 * bytes stored, or undefined when nothing was stored (joined another fetch, not storable, too large).
 */
async function warm(bucket: BucketRoute, cache: BucketCache, key: string, cacheKey: string, options: ReadOptions): Promise<number | undefined> {
  const inFlight = cache.flights.get(cacheKey)
  if (inFlight !== undefined) {
    await inFlight.catch(() => undefined)
    return undefined
  }
  const tooLarge = () => new Error('the object is larger than max_item_size')
  const { whole, stored } = await fetchWhole(bucket, cache, key, options, cache.maxItemBytes, tooLarge)
  if (stored === undefined) return undefined
  await stored
  return whole.bytes.length
}
