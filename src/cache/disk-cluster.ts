// The disk tier's directory, shared by the workers of one instance (`server.workers` > 1). The
// primary keeps one ledger per directory while a worker's tier uses it: a DiskCache too
// (cache/disk.ts), rebuilt from the files when the first worker opens the tier, and the only one
// that counts the directory's budget and evicts. Each worker's DiskCache is its view of the
// directory: it reports the entries it writes and hits and the files it deletes (batched, every
// REPORT_MS), finds the files other workers wrote by their names, asks the ledger to purge, and
// forgets what the ledger says is gone.
//   worker --open {options}--> primary: opens the directory's ledger (rebuilt from the files the
//                               first time), or joins it --ready {state}--> worker
//   worker --report {held, written, dropped}--> primary
//   worker --purge {target}--> primary: deletes the files --purged {count}--> worker
//   worker --live {options}--> primary: a reload committed; the ledger takes its limits (without
//                               reading a file) and budgets. A reload that fails never sends it,
//                               so its limits never reach the directory.
//   worker --leave--> primary (its tier closed)
//   worker --claim {key}--> primary: one worker at a time fetches a key (a whole object or a
//                               slice) for the directory
//                               --claimed fetch--> the first; --claimed wait--> the others, and later
//                               --claimed stored--> (read it from the directory) or, when it was
//                               not stored, --claimed fetch--> (each fetches on its own)
//   worker --grows {key, file}--> primary: the fetching worker's body is being written to that
//                               temp file --claimed {growing: file}--> every waiter, at once to a
//                               later claim: each reads the file as it grows (other-workers-file.ts)
//                               until --claimed stored / fetch--> ends it
//   worker --release {key, stored}--> primary: its fetch is over (cache/fill-claims.ts)
//   primary --state {gone, rewritten, totals, reporter}--> each worker of the directory, when it
//                               changed (a worker forgets what is gone, and what another wrote again)
// When a worker dies, the primary deletes the temp files it was writing (named with its pid) and
// counts the entries it renamed into place but had not reported yet.
// The messages stay inside the instance: its own processes over node:cluster's channel.
import cluster, { type Worker } from 'node:cluster'
import { open } from 'node:fs/promises'
import type { FillClaim, GrowingFileShare, OtherWorkersFill, SharedFills } from '../ports.ts'
import type { BucketBudgetMap } from './bucket-budgets.ts'
import { metaFromJson, metaToJson, type MetaJson } from './codec.ts'
import { deleteTempFilesOf, DiskCache, type DiskLedgerLink } from './disk.ts'
import { type ClaimNews, FillClaims } from './fill-claims.ts'
import { GrowingFileBody } from './growing-body.ts'
import { OtherWorkersFile } from './other-workers-file.ts'
import type { PurgeTarget } from './purge-log.ts'

const CHANNEL = 'yatagarasu:disk'
/** How long a worker's holds and drops wait to go to the ledger together. */
const REPORT_MS = 100
/** How long the ledger gathers changes before it tells the workers. */
const STATE_MS = 50
/**
 * How long a worker waits for another's fetch of a slice before it fetches on its own (the other's
 * origin may be slow to send it; the waiter's client waits meanwhile). A whole object's claim says
 * how long it waits (pipeline/serve.ts: less, for that fetch's body to begin).
 */
export const CLAIM_WAIT_MS = 30_000
/**
 * How long a worker waits for the primary's first answer to a claim (fetch, or wait for another
 * worker) before it fetches on its own: the primary answers at once unless it is stuck, and every
 * cold miss of a worker sharing the disk asks it.
 */
export const CLAIM_ANSWER_MS = 2_000

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
  | { step: 'report'; dir: string; held: Array<[string, number]>; written: string[]; dropped: string[] }
  | { step: 'purge'; id: number; dir: string; target: PurgeTarget }
  | { step: 'purged'; id: number; count: number }
  | { step: 'live'; options: LedgerOptions }
  | { step: 'leave'; dir: string }
  | { step: 'claim'; id: number; dir: string; key: string }
  | { step: 'claimed'; id: number; answer: ClaimNews<GrowingNews> | 'wait' }
  | { step: 'grows'; dir: string; key: string; growing: GrowingNews }
  | { step: 'release'; dir: string; key: string; stored: boolean }
  | ({ step: 'state'; dir: string; gone: string[]; rewritten: Array<[string, number]> } & LedgerState)
)

/** Where a worker's fill of a key is being written, and the entry's head (as the channel carries it). */
interface GrowingNews extends GrowingFileShare {
  head: { meta: MetaJson; storedAt: number; freshUntil: number }
}

const isDiskMessage = (m: { channel?: unknown; step?: unknown } | null | undefined): m is DiskMessage =>
  m?.channel === CHANNEL && typeof m.step === 'string'

// In a worker.
const links = new Set<WorkerLink>()
const waiting = new Map<number, (answer: DiskMessage | undefined) => void>()
/**
 * Claims sent, by id: each hears 'fetch', 'wait' or where another worker's fill grows at once; after
 * a wait, 'fetch', 'stored' or where it grows; after where it grows, 'fetch' or 'stored' (its end).
 */
const claiming = new Map<number, (answer: ClaimNews<GrowingNews> | 'wait') => void>()
let lastId = 0
let listening = false

function listen(): void {
  if (listening) return
  listening = true
  process.on('message', (message: DiskMessage | null) => {
    if (!isDiskMessage(message)) return
    if (message.step === 'ready' || message.step === 'purged') return waiting.get(message.id)?.(message)
    if (message.step === 'claimed') return claiming.get(message.id)?.(message.answer)
    if (message.step === 'state') for (const link of links) if (link.dir === message.dir) link.apply(message)
  })
}

function send(message: DiskMessage, failed?: () => void): void {
  if (process.send === undefined || !process.connected) return failed?.()
  process.send(message, undefined, undefined, (err: Error | null) => {
    if (err !== null) failed?.()
  })
}

/** Sends `message` (an open or a purge) and resolves with the primary's answer; undefined when it cannot be sent. */
function ask(message: DiskMessage & { id: number }): Promise<DiskMessage | undefined> {
  return new Promise((resolve) => {
    const settle = (answer: DiskMessage | undefined) => {
      if (waiting.delete(message.id)) resolve(answer)
    }
    waiting.set(message.id, settle)
    send(message, () => settle(undefined))
  })
}

/**
 * In a worker: opens (or joins) the ledger of `options.dir` in the primary, once it has rebuilt
 * the directory's index; rejects with the primary's reason when it cannot open the directory.
 */
export async function joinDiskLedger(options: LedgerOptions): Promise<DiskLedgerLink & SharedFills> {
  listen()
  // No deadline: the first open rebuilds the index from every file in the directory.
  const answer = await ask({ channel: CHANNEL, step: 'open', id: ++lastId, options })
  if (answer?.step !== 'ready') throw Object.assign(new Error('the cluster primary did not answer'), { code: 'NO_PRIMARY' })
  if (answer.state === undefined) throw Object.assign(new Error(`the cluster primary could not open it: ${answer.error}`), { code: answer.error })
  const link = new WorkerLink(options, answer.state)
  links.add(link)
  return link
}

/** What a claim answers when the worker fetches without the others (no primary, or it waited too long). */
const ON_ITS_OWN: FillClaim = { answer: 'fetch', done: () => {}, grows: () => {} }
const STORED: FillClaim = { answer: 'stored', done: () => {}, grows: () => {} }

/** Another worker's fill, told by the primary; `ended` settles with the primary's last word on it. */
function otherWorkersFill(news: GrowingNews, ended: Promise<boolean>): OtherWorkersFill {
  const { meta, storedAt, freshUntil } = news.head
  const head = { meta: metaFromJson(meta), storedAt, freshUntil }
  return {
    head,
    ended,
    open: async (rest, stallMs) => {
      // Gone already: renamed into place (stored) or removed (given up).
      const handle = await open(news.path, 'r').catch(() => undefined)
      if (handle === undefined) return undefined
      const file = new OtherWorkersFile(handle, news.bodyOffset, head.meta.size, ended, stallMs)
      return new GrowingFileBody(file, news.bodyOffset, head.meta.size, rest)
    },
  }
}

class WorkerLink implements DiskLedgerLink, SharedFills {
  readonly dir: string
  readonly #options: LedgerOptions
  #held = new Map<string, number>()
  #written = new Set<string>()
  #dropped = new Set<string>()
  #timer: NodeJS.Timeout | undefined
  #state: LedgerState
  #forget: ((gone: string[], rewritten: string[]) => void) | undefined

  constructor(options: LedgerOptions, state: LedgerState) {
    this.dir = options.dir
    this.#options = options
    this.#state = state
  }

  held(key: string, fileSize: number, written = false): void {
    this.#dropped.delete(key)
    this.#held.set(key, fileSize)
    if (written) this.#written.add(key)
    this.#schedule()
  }

  dropped(key: string): void {
    this.#held.delete(key)
    this.#written.delete(key)
    this.#dropped.add(key)
    this.#schedule()
  }

  async purge(target: PurgeTarget): Promise<number> {
    // What this worker wrote before the purge reaches the ledger first.
    this.#flush()
    // No deadline: the purge is done when the files are gone (the ledger answers a failed one too).
    const answer = await ask({ channel: CHANNEL, step: 'purge', id: ++lastId, dir: this.dir, target })
    return answer?.step === 'purged' ? answer.count : 0
  }

  /**
   * Resolves when this worker may fetch `key` (no other worker is, or another's fetch was not
   * stored), or when another worker's fetch of it stored it. It fetches on its own when the
   * primary does not answer within CLAIM_ANSWER_MS, or after waiting `waitMs` for another worker
   * (an answer that comes later changes nothing).
   */
  claim(key: string, waitMs = CLAIM_WAIT_MS): Promise<FillClaim> {
    const id = ++lastId
    const { dir } = this
    const release = (stored: boolean) => send({ channel: CHANNEL, step: 'release', dir, key, stored })
    const sent = performance.now()
    return new Promise((resolve) => {
      let answered = false
      /** The primary said another worker is fetching it: a later 'fetch' does not make this one the holder. */
      let waited = false
      const onItsOwn = () => {
        answered = true
        resolve(ON_ITS_OWN)
      }
      let timer = setTimeout(onItsOwn, Math.min(CLAIM_ANSWER_MS, waitMs)).unref()
      /** Settles the other worker's fill this one reads, when it was told of one. */
      let end: ((stored: boolean) => void) | undefined
      claiming.set(id, (answer) => {
        if (answer === 'wait') {
          waited = true
          clearTimeout(timer)
          // From the claim's sending: a worker waits this long at most, whatever the primary answers.
          if (!answered) timer = setTimeout(onItsOwn, Math.max(0, waitMs - (performance.now() - sent))).unref()
          return
        }
        if (typeof answer === 'object') {
          // Another worker's fill grows on the disk: read as it grows (unless this one went on
          // its own already); its end comes later.
          waited = true
          if (answered) return
          answered = true
          clearTimeout(timer)
          const ended = Promise.withResolvers<boolean>()
          end = ended.resolve
          return resolve({ answer: 'growing', growing: otherWorkersFill(answer.growing, ended.promise), done: () => {}, grows: () => {} })
        }
        claiming.delete(id)
        clearTimeout(timer)
        if (end !== undefined) return end(answer === 'stored')
        if (answered) {
          // Made the holder after it went on its own: the others need not wait for it.
          if (answer === 'fetch' && !waited) release(false)
          return
        }
        answered = true
        if (answer === 'stored') return resolve(STORED)
        let released = false
        resolve({
          answer,
          done: (stored) => {
            if (released) return
            released = true
            release(stored)
          },
          grows: (file, head) => {
            if (released) return
            const growing: GrowingNews = { ...file, head: { meta: metaToJson(head.meta), storedAt: head.storedAt, freshUntil: head.freshUntil } }
            send({ channel: CHANNEL, step: 'grows', dir, key, growing })
          },
        })
      })
      send({ channel: CHANNEL, step: 'claim', id, dir, key }, () => {
        claiming.delete(id)
        clearTimeout(timer)
        answered = true
        resolve(ON_ITS_OWN)
      })
    })
  }

  live(budgets: BucketBudgetMap): void {
    send({ channel: CHANNEL, step: 'live', options: { ...this.#options, budgets } })
  }

  totals(): Totals & { reporter: boolean } {
    return { ...this.#state.totals, reporter: this.#state.reporter === cluster.worker?.id }
  }

  onGone(forget: (gone: string[], rewritten: string[]) => void): void {
    this.#forget = forget
  }

  /** @internal the ledger's news. */
  apply(message: LedgerState & { gone: string[]; rewritten: Array<[string, number]> }): void {
    this.#state = { totals: message.totals, reporter: message.reporter }
    const me = cluster.worker?.id
    const rewritten = message.rewritten.filter(([, writer]) => writer !== me).map(([key]) => key)
    if (message.gone.length > 0 || rewritten.length > 0) this.#forget?.(message.gone, rewritten)
  }

  close(): void {
    this.#flush()
    links.delete(this)
    send({ channel: CHANNEL, step: 'leave', dir: this.dir })
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => this.#flush(), REPORT_MS).unref()
  }

  #flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#held.size === 0 && this.#dropped.size === 0) return
    send({ channel: CHANNEL, step: 'report', dir: this.dir, held: [...this.#held], written: [...this.#written], dropped: [...this.#dropped] })
    this.#held = new Map()
    this.#written = new Set()
    this.#dropped = new Set()
  }
}

// In the primary.
interface Ledger {
  dir: string
  /** The limits it holds: set by the open that created it, then by each reload that commits (`live`). */
  settings: string
  /** Replaced (DiskCache.takeOver) when the limits change, inside the queue. */
  cache: Promise<DiskCache>
  /** The workers whose tiers use this directory, with how many tiers each (two during a reload). */
  links: Map<Worker, number>
  /** Every live worker that ever opened it (one whose tier closed may still finish a write). */
  writers: Set<Worker>
  /** Keys the ledger stopped holding since the workers were last told. */
  gone: string[]
  /** Keys written again since the workers were last told, with the worker that wrote each. */
  rewritten: Array<[string, number]>
  /** The totals and reporter the workers were last told. */
  told: string
  timer: NodeJS.Timeout | undefined
  /** The workers' opens, reports, purges and new limits, handled one after another. */
  queue: Promise<void>
}

const settingsOf = ({ maxBytes, maxItemBytes, staleSeconds }: LedgerOptions) => JSON.stringify({ maxBytes, maxItemBytes, staleSeconds })

/**
 * In the primary: keeps a ledger for each disk directory the workers open, while any worker's
 * tier uses it, and answers them.
 */
export function serveDiskLedgers(): void {
  const ledgers = new Map<string, Ledger>()
  const toWorker = (worker: Worker, message: DiskMessage) => {
    if (worker.isConnected()) worker.send(message, undefined, undefined, () => {})
  }
  // By directory and key; kept apart from the ledgers, which a reload may replace meanwhile.
  const claimed = (worker: Worker, id: number, answer: ClaimNews<GrowingNews> | 'wait') =>
    toWorker(worker, { channel: CHANNEL, step: 'claimed', id, answer })
  const claims = new FillClaims<Worker, GrowingNews>(claimed)
  const claimKey = (dir: string, key: string) => `${dir}\0${key}`

  const stateOf = (ledger: Ledger, cache: DiskCache): LedgerState => {
    const stats = cache.stats()
    const ids = [...ledger.links.keys()].filter((w) => w.isConnected()).map((w) => w.id)
    return { totals: { entries: stats.entries ?? 0, bytes: stats.bytes ?? 0, evictions: stats.evictions }, reporter: Math.min(...ids) }
  }
  /** Tells the workers what is gone and the new totals, if anything changed. */
  const tell = (ledger: Ledger, cache: DiskCache) => {
    clearTimeout(ledger.timer)
    ledger.timer = undefined
    if (ledgers.get(ledger.dir) !== ledger) return
    const state = stateOf(ledger, cache)
    const told = JSON.stringify(state)
    if (ledger.gone.length === 0 && ledger.rewritten.length === 0 && told === ledger.told) return
    ledger.told = told
    const message: DiskMessage = { channel: CHANNEL, step: 'state', dir: ledger.dir, gone: ledger.gone.splice(0), rewritten: ledger.rewritten.splice(0), ...state }
    for (const worker of ledger.links.keys()) toWorker(worker, message)
  }
  const tellSoon = (ledger: Ledger) => {
    ledger.timer ??= setTimeout(() => void ledger.cache.then((cache) => tell(ledger, cache), () => {}), STATE_MS).unref()
  }
  /**
   * Runs `step` on the ledger's cache after every step queued before it (a worker's report is
   * adopted before the purge it sent after it, so the purge finds its files).
   */
  const run = <T>(ledger: Ledger, step: (cache: DiskCache) => T | Promise<T>): Promise<T> => {
    const done = ledger.queue.then(() => ledger.cache).then(step)
    ledger.queue = done.then(
      () => {},
      () => {}
    )
    return done
  }
  /** `options` with the ledger's onGone (`ledgerOf`: the ledger, which may be under construction now). */
  const optionsOf = (ledgerOf: () => Ledger, options: LedgerOptions) => ({
    ...options,
    onGone: (key: string) => {
      const ledger = ledgerOf()
      ledger.gone.push(key)
      tellSoon(ledger)
    },
  })

  /** The ledger of `options.dir`: the one there is (its limits unchanged), or a new one with these. */
  const ledgerOf = (options: LedgerOptions): Ledger => {
    const existing = ledgers.get(options.dir)
    if (existing !== undefined) return existing
    const ledger: Ledger = {
      dir: options.dir,
      settings: settingsOf(options),
      // The first worker to open the directory waits while the index is rebuilt from its files.
      cache: DiskCache.open(optionsOf(() => ledger, options)),
      links: new Map(),
      writers: new Set(),
      gone: [],
      rewritten: [],
      told: '',
      timer: undefined,
      queue: Promise.resolve(),
    }
    ledgers.set(options.dir, ledger)
    return ledger
  }
  /** `worker` no longer uses the ledger (its tier closed, or it died); forgotten when nobody does. */
  const leave = (ledger: Ledger, worker: Worker, tiers = 1) => {
    const left = (ledger.links.get(worker) ?? 0) - tiers
    if (left > 0) ledger.links.set(worker, left)
    else ledger.links.delete(worker)
    if (ledger.links.size === 0 && ledgers.get(ledger.dir) === ledger) ledgers.delete(ledger.dir)
    else tellSoon(ledger)
  }

  cluster.on('exit', (worker) => {
    claims.leave(worker)
    for (const ledger of [...ledgers.values()]) {
      if (!ledger.writers.delete(worker)) continue
      const tiers = ledger.links.get(worker)
      if (tiers !== undefined) leave(ledger, worker, tiers)
      // What it was writing will never be renamed into place; what it renamed but had not yet
      // reported is counted now.
      const { pid } = worker.process
      if (pid !== undefined) void deleteTempFilesOf(ledger.dir, pid)
      if (ledgers.get(ledger.dir) === ledger) void run(ledger, (cache) => cache.adoptUnknownFiles()).then(() => tellSoon(ledger), () => {})
    }
  })
  cluster.on('message', (worker, message: DiskMessage | null) => {
    if (!isDiskMessage(message)) return
    if (message.step === 'claim') {
      return claimed(worker, message.id, claims.claim(worker, message.id, claimKey(message.dir, message.key)))
    }
    if (message.step === 'release') return claims.release(worker, claimKey(message.dir, message.key), message.stored)
    if (message.step === 'grows') return claims.grows(worker, claimKey(message.dir, message.key), message.growing)
    if (message.step === 'open') {
      const ledger = ledgerOf(message.options)
      ledger.links.set(worker, (ledger.links.get(worker) ?? 0) + 1)
      ledger.writers.add(worker)
      run(ledger, (cache) => {
        toWorker(worker, { channel: CHANNEL, step: 'ready', id: message.id, state: stateOf(ledger, cache) })
        tellSoon(ledger)
      }).catch((err: unknown) => {
        // A directory that could not be opened is tried again by the next worker that opens it.
        leave(ledger, worker)
        if (ledgers.get(ledger.dir) === ledger) ledgers.delete(ledger.dir)
        toWorker(worker, { channel: CHANNEL, step: 'ready', id: message.id, error: (err as NodeJS.ErrnoException).code ?? String(err) })
      })
      return
    }
    if (message.step === 'live') {
      const ledger = ledgers.get(message.options.dir)
      if (ledger === undefined) return
      const { options } = message
      const settings = settingsOf(options)
      if (ledger.settings !== settings) {
        // New limits: the index carries over (evicting what no longer fits), no file is read.
        ledger.settings = settings
        void run(ledger, (cache) => {
          ledger.cache = Promise.resolve(DiskCache.takeOver(cache, optionsOf(() => ledger, options)))
        })
      }
      void run(ledger, (cache) => {
        cache.setBudgets(options.budgets)
        tellSoon(ledger)
      })
      return
    }
    if (message.step !== 'report' && message.step !== 'purge' && message.step !== 'leave') return
    const ledger = ledgers.get(message.dir)
    if (ledger === undefined) {
      if (message.step === 'purge') toWorker(worker, { channel: CHANNEL, step: 'purged', id: message.id, count: 0 })
      return
    }
    if (message.step === 'leave') return leave(ledger, worker)
    void run(ledger, async (cache) => {
      if (message.step === 'report') {
        await cache.dropped(message.dropped)
        await Promise.all(message.held.map(([key, size]) => cache.adopt(key, size)))
        for (const key of message.written) ledger.rewritten.push([key, worker.id])
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
    }).catch(() => {
      // The worker's purge waits for an answer: a purge that failed answers nothing purged.
      if (message.step === 'purge') toWorker(worker, { channel: CHANNEL, step: 'purged', id: message.id, count: 0 })
    })
  })
}
