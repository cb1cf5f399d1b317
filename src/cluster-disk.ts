// The disk tier's directory, shared by the workers of one instance (`server.workers` > 1). The
// primary keeps one ledger per directory: a DiskCache too (cache/disk.ts), rebuilt from the files
// when the first worker opens the tier, and the only one that counts the directory's budget and
// evicts. Each worker's DiskCache is its view of the directory: it reports the entries it writes
// and hits and the files it deletes (batched, every REPORT_MS), finds the files other workers
// wrote by their names, asks the ledger to purge, and forgets what the ledger says is gone.
//   worker --open {options}--> primary: opens the directory's ledger once --ready {state}--> worker
//   worker --report {held, dropped}--> primary
//   worker --purge {target}--> primary: deletes the files --purged {count}--> worker
//   worker --budgets {budgets}--> primary (a reload)
//   primary --state {gone, totals, reporter}--> each worker of the directory, when it changed
// When a worker dies, the primary deletes the temp files it was writing (named with its pid).
// The messages stay inside the instance: its own processes over node:cluster's channel.
import cluster, { type Worker } from 'node:cluster'
import type { BucketBudgetMap } from './cache/bucket-budgets.ts'
import type { DiskCache, DiskLedgerLink } from './cache/disk.ts'
import type { PurgeTarget } from './cache/purge-log.ts'

const CHANNEL = 'yatagarasu:disk'
/** How long a worker's holds and drops wait to go to the ledger together. */
const REPORT_MS = 100
/** How long the ledger gathers changes before it tells the workers. */
const STATE_MS = 50
/** A purge the ledger has not answered by then counts as none. */
const PURGE_WAIT_MS = 5000

export interface LedgerOptions {
  dir: string
  maxBytes: number
  maxItemBytes: number
  staleSeconds: number
  budgets: BucketBudgetMap
}

interface Totals {
  entries: number
  bytes: number
  evictions: number
}

/** What the ledger tells the workers: the directory's totals, and which worker exports them. */
interface LedgerState {
  totals: Totals
  reporter: number
}

type DiskMessage = { channel: typeof CHANNEL } & (
  | { step: 'open'; id: number; options: LedgerOptions }
  | { step: 'ready'; id: number; state?: LedgerState; error?: string }
  | { step: 'report'; dir: string; held: Array<[string, number]>; dropped: string[] }
  | { step: 'purge'; id: number; dir: string; target: PurgeTarget }
  | { step: 'purged'; id: number; count: number }
  | { step: 'budgets'; dir: string; budgets: BucketBudgetMap }
  | ({ step: 'state'; dir: string; gone: string[] } & LedgerState)
)

const isDiskMessage = (m: { channel?: unknown; step?: unknown } | null | undefined): m is DiskMessage =>
  m?.channel === CHANNEL && typeof m.step === 'string'

// In a worker.
const links = new Set<WorkerLink>()
const waiting = new Map<number, (answer: DiskMessage | undefined) => void>()
let lastId = 0
let listening = false

function listen(): void {
  if (listening) return
  listening = true
  process.on('message', (message: DiskMessage | null) => {
    if (!isDiskMessage(message)) return
    if (message.step === 'ready' || message.step === 'purged') return waiting.get(message.id)?.(message)
    if (message.step === 'state') for (const link of links) if (link.dir === message.dir) link.apply(message)
  })
}

function send(message: DiskMessage, failed?: () => void): void {
  if (process.send === undefined || !process.connected) return failed?.()
  process.send(message, undefined, undefined, (err: Error | null) => {
    if (err !== null) failed?.()
  })
}

/** Sends `message` (an open or a purge) and resolves with the primary's answer; undefined when it cannot be sent or times out. */
function ask(message: DiskMessage & { id: number }, timeoutMs?: number): Promise<DiskMessage | undefined> {
  return new Promise((resolve) => {
    const settle = (answer: DiskMessage | undefined) => {
      if (!waiting.delete(message.id)) return
      clearTimeout(timer)
      resolve(answer)
    }
    const timer = timeoutMs === undefined ? undefined : setTimeout(settle, timeoutMs, undefined)
    waiting.set(message.id, settle)
    send(message, () => settle(undefined))
  })
}

/**
 * In a worker: opens (or joins) the ledger of `options.dir` in the primary, once it has rebuilt
 * the directory's index; rejects with the primary's reason when it cannot open the directory.
 */
export async function joinDiskLedger(options: LedgerOptions): Promise<DiskLedgerLink> {
  listen()
  // No deadline: the first open rebuilds the index from every file in the directory.
  const answer = await ask({ channel: CHANNEL, step: 'open', id: ++lastId, options })
  if (answer?.step !== 'ready') throw Object.assign(new Error('the cluster primary did not answer'), { code: 'NO_PRIMARY' })
  if (answer.state === undefined) throw Object.assign(new Error(`the cluster primary could not open it: ${answer.error}`), { code: answer.error })
  const link = new WorkerLink(options.dir, answer.state)
  links.add(link)
  return link
}

class WorkerLink implements DiskLedgerLink {
  readonly dir: string
  #held = new Map<string, number>()
  #dropped = new Set<string>()
  #timer: NodeJS.Timeout | undefined
  #state: LedgerState
  #forget: ((keys: string[]) => void) | undefined

  constructor(dir: string, state: LedgerState) {
    this.dir = dir
    this.#state = state
  }

  held(key: string, fileSize: number): void {
    this.#dropped.delete(key)
    this.#held.set(key, fileSize)
    this.#schedule()
  }

  dropped(key: string): void {
    this.#held.delete(key)
    this.#dropped.add(key)
    this.#schedule()
  }

  async purge(target: PurgeTarget): Promise<number> {
    // What this worker wrote before the purge reaches the ledger first.
    this.#flush()
    const answer = await ask({ channel: CHANNEL, step: 'purge', id: ++lastId, dir: this.dir, target }, PURGE_WAIT_MS)
    return answer?.step === 'purged' ? answer.count : 0
  }

  budgets(budgets: BucketBudgetMap): void {
    send({ channel: CHANNEL, step: 'budgets', dir: this.dir, budgets })
  }

  totals(): Totals & { reporter: boolean } {
    return { ...this.#state.totals, reporter: this.#state.reporter === cluster.worker?.id }
  }

  onGone(forget: (keys: string[]) => void): void {
    this.#forget = forget
  }

  /** @internal the ledger's news. */
  apply(message: LedgerState & { gone: string[] }): void {
    this.#state = { totals: message.totals, reporter: message.reporter }
    if (message.gone.length > 0) this.#forget?.(message.gone)
  }

  close(): void {
    this.#flush()
    links.delete(this)
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => this.#flush(), REPORT_MS).unref()
  }

  #flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#held.size === 0 && this.#dropped.size === 0) return
    send({ channel: CHANNEL, step: 'report', dir: this.dir, held: [...this.#held], dropped: [...this.#dropped] })
    this.#held = new Map()
    this.#dropped = new Set()
  }
}

// In the primary.
interface Ledger {
  dir: string
  /** The settings it was opened with: a worker opening the directory with others replaces it. */
  settings: string
  cache: Promise<DiskCache>
  /** The workers whose tier uses this directory. */
  members: Set<Worker>
  /** Keys the ledger stopped holding since the workers were last told. */
  gone: string[]
  /** The totals and reporter the workers were last told. */
  told: string
  timer: NodeJS.Timeout | undefined
  /** The workers' reports, purges and budgets, handled one after another. */
  queue: Promise<void>
}

/** In the primary: keeps a ledger for each disk directory the workers open, and answers them. */
export function serveDiskLedgers(): void {
  const ledgers = new Map<string, Ledger>()
  const toWorker = (worker: Worker, message: DiskMessage) => {
    if (worker.isConnected()) worker.send(message, undefined, undefined, () => {})
  }
  const current = (dir: string) => ledgers.get(dir)

  const stateOf = (ledger: Ledger, cache: DiskCache): LedgerState => {
    const stats = cache.stats()
    const ids = [...ledger.members].filter((w) => w.isConnected()).map((w) => w.id)
    return { totals: { entries: stats.entries ?? 0, bytes: stats.bytes ?? 0, evictions: stats.evictions }, reporter: Math.min(...ids) }
  }
  /** Tells the workers what is gone and the new totals, if anything changed. */
  const tell = (ledger: Ledger, cache: DiskCache) => {
    clearTimeout(ledger.timer)
    ledger.timer = undefined
    if (current(ledger.dir) !== ledger) return
    const state = stateOf(ledger, cache)
    const told = JSON.stringify(state)
    if (ledger.gone.length === 0 && told === ledger.told) return
    ledger.told = told
    const message: DiskMessage = { channel: CHANNEL, step: 'state', dir: ledger.dir, gone: ledger.gone.splice(0), ...state }
    for (const worker of ledger.members) toWorker(worker, message)
  }
  const tellSoon = (ledger: Ledger) => {
    ledger.timer ??= setTimeout(() => void ledger.cache.then((cache) => tell(ledger, cache), () => {}), STATE_MS).unref()
  }

  const open = (options: LedgerOptions): Ledger => {
    const { dir, maxBytes, maxItemBytes, staleSeconds, budgets } = options
    const settings = JSON.stringify({ maxBytes, maxItemBytes, staleSeconds })
    const existing = current(dir)
    if (existing?.settings === settings) return existing
    const gone: string[] = []
    const cache = import('./cache/disk.ts').then(({ DiskCache: Disk }) =>
      Disk.open({
        dir,
        maxBytes,
        maxItemBytes,
        staleSeconds,
        budgets,
        onGone: (key) => {
          gone.push(key)
          tellSoon(ledger)
        },
      })
    )
    const ledger: Ledger = { dir, settings, cache, members: new Set(existing?.members), gone, told: '', timer: undefined, queue: Promise.resolve() }
    ledgers.set(dir, ledger)
    // A directory that could not be opened is tried again by the next worker that opens it.
    ledger.cache.catch(() => {
      if (current(dir) === ledger) ledgers.delete(dir)
    })
    void existing?.cache.then((cache) => cache.close(), () => {})
    return ledger
  }

  cluster.on('exit', (worker) => {
    for (const ledger of ledgers.values()) {
      if (!ledger.members.delete(worker)) continue
      tellSoon(ledger)
      // What it was writing will never be renamed into place.
      const { pid } = worker.process
      if (pid !== undefined) void import('./cache/disk.ts').then(({ deleteTempFilesOf }) => deleteTempFilesOf(ledger.dir, pid))
    }
  })
  cluster.on('message', (worker, message: DiskMessage | null) => {
    if (!isDiskMessage(message)) return
    if (message.step === 'open') {
      const ledger = open(message.options)
      ledger.members.add(worker)
      ledger.cache.then(
        (cache) => {
          cache.setBudgets(message.options.budgets)
          toWorker(worker, { channel: CHANNEL, step: 'ready', id: message.id, state: stateOf(ledger, cache) })
          tellSoon(ledger)
        },
        (err: unknown) => {
          ledger.members.delete(worker)
          toWorker(worker, { channel: CHANNEL, step: 'ready', id: message.id, error: (err as NodeJS.ErrnoException).code ?? String(err) })
        }
      )
      return
    }
    if (message.step !== 'report' && message.step !== 'purge' && message.step !== 'budgets') return
    const ledger = current(message.dir)
    if (ledger === undefined) {
      if (message.step === 'purge') toWorker(worker, { channel: CHANNEL, step: 'purged', id: message.id, count: 0 })
      return
    }
    // One message at a time, in order: a worker's report (its files' adoption) is done before the
    // purge it sent after it, so the purge finds them.
    ledger.queue = ledger.queue.then(() => ledger.cache).then(async (cache) => {
      if (message.step === 'report') {
        cache.forget(message.dropped)
        await Promise.all(message.held.map(([key, size]) => cache.adopt(key, size)))
        return tellSoon(ledger)
      }
      if (message.step === 'budgets') {
        cache.setBudgets(message.budgets)
        return tellSoon(ledger)
      }
      const { target } = message
      let count = 1
      if ('prefix' in target) count = await cache.purge(target.prefix)
      else await cache.delete(target.exact)
      await cache.filesDeleted()
      // What is gone reaches the asking worker before the answer (one channel, in order).
      tell(ledger, cache)
      toWorker(worker, { channel: CHANNEL, step: 'purged', id: message.id, count })
    })
    // A failed open was answered at the open; a failed purge is answered by the worker's deadline.
    ledger.queue = ledger.queue.catch(() => {})
  })
}
