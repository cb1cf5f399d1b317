// A cluster primary serving the disk ledgers (src/cache/disk-cluster.ts) and one worker that runs
// a reload of its disk tier against them, step by step, as src/runtime.ts does: the tier of the
// running config, a tier built for a reload that fails (closed without going live), then one
// built for a reload that commits (`setBudgets`, as Runtime.commit calls it). It prints what the
// directory held after each as one JSON line, and exits. Run by test/e2e/disk-ledger-reload.test.ts:
//   node --import tsx test/support/disk-ledger-cluster.ts DIR
import { randomBytes } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { joinDiskLedger } from '../../src/cache/disk-cluster.ts'
import { DiskCache } from '../../src/cache/disk.ts'
import { runLedgerScript } from './ledger-script.ts'
import { objectMeta } from './meta.ts'

const dir = process.argv[2] as string
const MB = 1_000_000
const ENTRIES = 6
const ENTRY_BYTES = MB / 2

export interface LedgerReloadReport {
  /** Bytes of entry files once the running tier's six entries were counted. */
  filled: number
  /** After a reload to `max_size` 1 MB that failed (its tier closed, never live). */
  afterFailedReload: number
  /** The entries the ledger counts then. */
  entriesAfterFailedReload: number
  /** After a reload to `max_size` 1 MB that committed. */
  afterCommittedReload: number
}

async function bytesOnDisk(): Promise<number> {
  let bytes = 0
  // A file listed may be evicted before its stat.
  for (const name of await readdir(dir)) if (name.endsWith('.entry')) bytes += (await stat(join(dir, name)).catch(() => undefined))?.size ?? 0
  return bytes
}

/** Waits for `done` (what the ledger tells the worker, or does to the directory), checking every 20 ms. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function tier(maxBytes: number): Promise<DiskCache> {
  const options = { dir, maxBytes, maxItemBytes: 16 * MB, staleSeconds: 60, budgets: {} }
  return DiskCache.open({ ...options, ledger: await joinDiskLedger(options) })
}

async function worker(): Promise<LedgerReloadReport> {
  const running = await tier(10 * MB)
  for (let i = 0; i < ENTRIES; i++) {
    const body = randomBytes(ENTRY_BYTES)
    await running.set(`b/${i}`, { meta: objectMeta({ size: body.length }), storedAt: Date.now(), freshUntil: Date.now() + 60_000, body })
  }
  await until(() => running.stats().entries === ENTRIES, 'the ledger to count the entries')
  const filled = await bytesOnDisk()

  const failed = await tier(MB)
  await failed.close()
  // A purge through the ledger answers after every message sent before it was handled.
  await running.delete('b/not-there')
  const afterFailedReload = await bytesOnDisk()
  const entriesAfterFailedReload = running.stats().entries ?? 0

  const committed = await tier(MB)
  committed.setBudgets({})
  await running.close()
  await until(async () => (await bytesOnDisk()) <= MB, 'the directory within the committed max_size')
  const afterCommittedReload = await bytesOnDisk()
  await committed.close()
  return { filled, afterFailedReload, entriesAfterFailedReload, afterCommittedReload }
}

runLedgerScript(worker)
