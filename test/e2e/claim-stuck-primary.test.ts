// A worker's claim of a key (cache/disk-cluster.ts) with a cluster primary that is stuck: the
// worker fetches on its own instead of waiting for the primary, and a claim the primary hands it
// late is let go, so the key's later claims are answered at once (test/support/claim-cluster.ts).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, it } from 'node:test'
import type { StuckPrimaryReport } from '../support/claim-cluster.ts'
import { ledgerScriptReport } from '../support/ledger-script.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

it('a claim sent while the primary is stuck goes on its own, and the late claim is let go', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-claim-'))
  dirs.push(dir)
  const report = await ledgerScriptReport<StuckPrimaryReport>('test/support/claim-cluster.ts', dir)
  // It waits 2 s for a first answer, not the 60 s it would wait for another worker's fetch.
  assert.deepEqual(report.first, { answer: 'fetch', beforePrimaryBack: true }, 'fetched on its own before the primary (stuck 6 s) was back')
  // The primary answers at once; a claim it still held for the worker would wait the full 10 s.
  assert.equal(report.again.answer, 'fetch')
  assert.ok(report.again.ms < 5_000, `the next claim answered at once, not after waiting for a claim nobody holds: ${report.again.ms} ms`)
})
