// docs/errors.md lists every code of the catalogue with the same status, source and retry flag.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'node:test'
import { ERROR_CATALOGUE } from '../../src/errors.ts'

it('documents every error code exactly as the catalogue defines it', async () => {
  const doc = await readFile(join(import.meta.dirname, '../../docs/errors.md'), 'utf8')
  const rows = new Map<string, { status: number; source: string; retryable: boolean }>()
  for (const match of doc.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \| (\w+) \| (yes|no) \|/gm)) {
    rows.set(match[1] as string, { status: Number(match[2]), source: match[3] as string, retryable: match[4] === 'yes' })
  }
  const catalogue = Object.entries(ERROR_CATALOGUE).map(([code, spec]) => [code, { status: spec.status, source: spec.source, retryable: spec.retryable }] as const)
  assert.deepEqual(new Map(catalogue), rows)
})
