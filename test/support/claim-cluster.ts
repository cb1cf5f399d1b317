// A cluster primary serving the disk ledgers (src/cache/disk-cluster.ts) and one worker that claims
// a key while the primary is stuck: the primary blocks its event loop (as a long synchronous task
// would) for BLOCK_MS, and the worker's claim, sent meanwhile, must not wait for it. When the
// primary comes back it hands the claim to the worker that already went on its own, which must
// let it go, or every later claim of the key would wait. Prints one JSON line and exits. Run by
// test/e2e/claim-stuck-primary.test.ts:
//   node --import tsx test/support/claim-cluster.ts DIR
import { joinDiskLedger } from '../../src/cache/disk-cluster.ts'
import { runLedgerScript } from './ledger-script.ts'

const dir = process.argv[2] as string
const BLOCK_MS = 6_000

export interface StuckPrimaryReport {
  /** The first claim: its answer, and whether it came before the primary was back. */
  first: { answer: string; beforePrimaryBack: boolean }
  /** A claim of the same key once the primary is back: its answer and how long it took. */
  again: { answer: string; ms: number }
}

type TestMessage = { test: 'block' } | { test: 'back' } | { test: 'ping' } | { test: 'pong' }
const isTest = (message: unknown): message is TestMessage => typeof message === 'object' && message !== null && 'test' in message

/** The next test message of this kind from the primary. */
const next = (kind: TestMessage['test']) =>
  new Promise<void>((resolve) => {
    const on = (message: unknown) => {
      if (!isTest(message) || message.test !== kind) return
      process.off('message', on)
      resolve()
    }
    process.on('message', on)
  })

async function worker(): Promise<StuckPrimaryReport> {
  const link = await joinDiskLedger({ dir, maxBytes: 10_000_000, maxItemBytes: 1_000_000, staleSeconds: 60, budgets: {} })
  let back = false
  const primaryBack = next('back').then(() => {
    back = true
  })
  process.send?.({ test: 'block' })
  const first = await link.claim('b/key', 60_000)
  const beforePrimaryBack = !back
  await primaryBack
  // The primary handles messages in order: once it answers this, it has answered the first claim.
  const pong = next('pong')
  process.send?.({ test: 'ping' })
  await pong
  const started = performance.now()
  const again = await link.claim('b/key', 10_000)
  const ms = Math.round(performance.now() - started)
  again.done(false)
  return { first: { answer: first.answer, beforePrimaryBack }, again: { answer: again.answer, ms } }
}

runLedgerScript(worker, (message, child) => {
  if (!isTest(message)) return
  if (message.test === 'ping') child.send({ test: 'pong' })
  if (message.test === 'block') {
    // Stuck: nothing else runs in the primary meanwhile.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, BLOCK_MS)
    child.send({ test: 'back' })
  }
})
