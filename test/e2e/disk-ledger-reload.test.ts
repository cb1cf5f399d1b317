// A reload that fails leaves the shared disk directory's limits alone; one that commits applies
// them (src/cache/disk-cluster.ts): a real cluster primary and worker, real files, the tier built
// and closed as a reload does it (test/support/disk-ledger-cluster.ts).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, it } from 'node:test'
import type { LedgerReloadReport } from '../support/disk-ledger-cluster.ts'
import { ledgerScriptReport } from '../support/ledger-script.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

it('a reload to a smaller max_size changes the shared directory only once it commits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-ledger-reload-'))
  dirs.push(dir)
  const report = await ledgerScriptReport<LedgerReloadReport>('test/support/disk-ledger-cluster.ts', dir)
  assert.ok(report.filled >= 3_000_000, `six 500 KB entries on disk: ${report.filled} bytes`)
  assert.equal(report.afterFailedReload, report.filled, 'a reload that failed evicted nothing')
  assert.equal(report.entriesAfterFailedReload, 6)
  assert.ok(report.afterCommittedReload > 0 && report.afterCommittedReload <= 1_000_000, `the committed max_size holds: ${report.afterCommittedReload} bytes`)
})
