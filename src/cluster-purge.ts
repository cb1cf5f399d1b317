// Cache purges across the workers of one instance, in cluster mode without Redis, or when Redis did
// not take the broadcast (down or hung; when it does, its pub/sub reaches every worker of every
// instance). The worker that received the purge has purged
// its own tiers; it asks the primary to pass the target on. Each other worker that is serving
// purges its local tiers and says so; the primary tells the asking worker once all have, so the
// admin call answers when no worker can serve the purged entries any more. The asking worker waits
// at most WAIT_MS: a stuck or dying worker must not hang the call.
//   worker A --ask {id, target}--> primary --purge {relay, target}--> every other serving worker
//   worker A <--done {id}--------- primary <--purged {relay}--------- each of them
import cluster, { type Worker } from 'node:cluster'
import type { PurgeTarget } from './runtime.ts'

const CHANNEL = 'yatagarasu:purge'
const WAIT_MS = 5000

interface PurgeMessage {
  channel: typeof CHANNEL
  step: 'ask' | 'purge' | 'purged' | 'done'
  /** The asking worker's id (ask, done) or the primary's relay id (purge, purged). */
  id: number
  target?: PurgeTarget
}

const isPurgeMessage = (m: Partial<PurgeMessage> | null | undefined): m is PurgeMessage =>
  m?.channel === CHANNEL && typeof m.step === 'string' && typeof m.id === 'number'

function targetOf(message: PurgeMessage): PurgeTarget | undefined {
  const target = message.target as Record<string, unknown> | undefined
  if (typeof target?.prefix === 'string') return { prefix: target.prefix }
  if (typeof target?.exact === 'string') return { exact: target.exact }
  return undefined
}

// In a worker.
const purgers = new Set<(target: PurgeTarget) => Promise<unknown>>()
const asked = new Map<number, (done: boolean) => void>()
let lastAsk = 0
let listening = false

function send(message: PurgeMessage, failed?: () => void): void {
  if (process.send === undefined || !process.connected) return failed?.()
  process.send(message, undefined, undefined, (err: Error | null) => {
    if (err !== null) failed?.()
  })
}

function listen(): void {
  if (listening) return
  listening = true
  process.on('message', (message: Partial<PurgeMessage> | null) => {
    if (!isPurgeMessage(message)) return
    if (message.step === 'done') return asked.get(message.id)?.(true)
    const target = targetOf(message)
    if (message.step !== 'purge' || target === undefined) return
    void Promise.allSettled([...purgers].map((purge) => purge(target))).then(() =>
      send({ channel: CHANNEL, step: 'purged', id: message.id })
    )
  })
}

/**
 * Runs `purge` with each target another worker of this instance purged. Returns the way to stop
 * (when the cache it purges is closed).
 */
export function onPurgeFromOtherWorkers(purge: (target: PurgeTarget) => Promise<unknown>): () => void {
  listen()
  purgers.add(purge)
  return () => purgers.delete(purge)
}

/** Resolves true once every other serving worker purged `target`, false if not all did in time. */
export function purgeOtherWorkers(target: PurgeTarget): Promise<boolean> {
  listen()
  return new Promise((resolve) => {
    const id = ++lastAsk
    const settle = (done: boolean) => {
      if (!asked.delete(id)) return
      clearTimeout(timer)
      resolve(done)
    }
    const timer = setTimeout(settle, WAIT_MS, false)
    asked.set(id, settle)
    send({ channel: CHANNEL, step: 'ask', id, target }, () => settle(false))
  })
}

/** In the primary: passes each worker's purge on to the other serving workers, collects their answers. */
export function relayPurges(): void {
  const serving = new Set<Worker>()
  const relays = new Map<number, { asker: Worker; id: number; waiting: Set<Worker> }>()
  let lastRelay = 0
  const toWorker = (worker: Worker, message: PurgeMessage) => {
    if (worker.isConnected()) worker.send(message, undefined, undefined, () => {})
  }
  const answered = (relayId: number, worker: Worker) => {
    const relay = relays.get(relayId)
    if (relay === undefined || !relay.waiting.delete(worker) || relay.waiting.size > 0) return
    relays.delete(relayId)
    toWorker(relay.asker, { channel: CHANNEL, step: 'done', id: relay.id })
  }

  cluster.on('listening', (worker) => serving.add(worker))
  cluster.on('exit', (worker) => {
    serving.delete(worker)
    // A worker that died holds nothing to purge any more.
    for (const relayId of relays.keys()) answered(relayId, worker)
  })
  cluster.on('message', (worker, message: Partial<PurgeMessage> | null) => {
    if (!isPurgeMessage(message)) return
    if (message.step === 'purged') return answered(message.id, worker)
    const target = targetOf(message)
    if (message.step !== 'ask' || target === undefined) return
    const others = [...serving].filter((other) => other !== worker && other.isConnected())
    if (others.length === 0) return toWorker(worker, { channel: CHANNEL, step: 'done', id: message.id })
    const relayId = ++lastRelay
    relays.set(relayId, { asker: worker, id: message.id, waiting: new Set(others) })
    // The asker has given up by then; forget a relay a stuck worker never answered.
    setTimeout(() => relays.delete(relayId), WAIT_MS).unref()
    for (const other of others) toWorker(other, { channel: CHANNEL, step: 'purge', id: relayId, target })
  })
}
