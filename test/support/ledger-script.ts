// Scripts that run a cluster primary serving the disk ledgers (src/cache/disk-cluster.ts) and one
// worker, for tests of what crosses the cluster channel: `runLedgerScript` in the script, and
// `ledgerScriptReport` in the test that runs it.
import { execFile } from 'node:child_process'
import cluster, { type Worker } from 'node:cluster'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { serveDiskLedgers } from '../../src/runtime.ts'

const ROOT = join(import.meta.dirname, '../..')

/**
 * In the primary: serves the ledgers, forks one worker, prints the report the worker's `work`
 * resolves with as one JSON line and exits (1 when it failed). `onMessage` sees the other messages
 * from the worker (the ledger's own go by on the same channel).
 */
export function runLedgerScript<R>(work: () => Promise<R>, onMessage: (message: unknown, worker: Worker) => void = () => {}): void {
  if (cluster.isPrimary) {
    serveDiskLedgers()
    const child = cluster.fork()
    child.on('message', (message: { report?: R; error?: string } | null) => {
      if (message?.report === undefined && message?.error === undefined) return onMessage(message, child)
      if (message.report !== undefined) process.stdout.write(`${JSON.stringify(message.report)}\n`)
      if (message.error !== undefined) process.stderr.write(`${message.error}\n`)
      child.kill()
      process.exitCode = message.error === undefined ? 0 : 1
    })
    child.on('exit', () => process.exit())
  } else {
    work().then(
      (report) => process.send?.({ report }),
      (err: unknown) => process.send?.({ error: String((err as Error).stack ?? err) })
    )
  }
}

/** Runs `node --import tsx <script> <dir>` and answers the report it printed. */
export async function ledgerScriptReport<R>(script: string, dir: string): Promise<R> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, dir], { cwd: ROOT, timeout: 120_000 })
  return JSON.parse(stdout.trim()) as R
}
