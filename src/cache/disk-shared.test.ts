// The disk tier shared by workers, against real entry files: the ledger (a DiskCache) and two
// workers' views of one directory in one process, their messages (cluster-disk.ts carries them
// between processes) delivered when the test says. test/e2e/disk-shared.test.ts runs the same
// through a real cluster.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { access, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { flipBodyByte } from '../../test/support/disk-entry.ts'
import { objectMeta } from '../../test/support/meta.ts'
import type { CachedObject } from '../ports.ts'
import { DiskCache, type DiskLedgerLink } from './disk.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

const KB = 1000
const fileOf = (dir: string, key: string) => join(dir, `${createHash('sha256').update(key).digest('hex')}.entry`)
const exists = (file: string) => access(file).then(
  () => true,
  () => false
)
const entry = (body: Buffer): CachedObject => ({ meta: objectMeta({ size: body.length }), storedAt: Date.now(), freshUntil: Date.now() + 60_000, body })

async function bodyOf(disk: DiskCache, key: string): Promise<Buffer | undefined> {
  const got = await disk.get(key)
  if (got === undefined) return undefined
  return got.body instanceof Uint8Array ? Buffer.from(got.body) : Buffer.from(await got.body.bytes())
}

/** A directory with its ledger and two workers' views; what the views report waits for `deliver`. */
async function sharedDirectory(options: { ledgerBytes: number; viewBytes: number }) {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-shared-'))
  dirs.push(dir)
  const reports: Array<() => Promise<void>> = []
  const gone: string[] = []
  const forgets: Array<(keys: string[]) => void> = []
  const ledger = await DiskCache.open({ dir, maxBytes: options.ledgerBytes, maxItemBytes: 1 << 24, staleSeconds: 60, onGone: (key) => gone.push(key) })
  /** The reports sent so far, adopted by the ledger in order; then what it stopped holding, told to the views. */
  const deliver = async () => {
    for (const report of reports.splice(0)) await report()
    const keys = gone.splice(0)
    if (keys.length > 0) for (const forget of forgets) forget(keys)
  }
  const link = (): DiskLedgerLink => ({
    held: (key, size) => void reports.push(() => ledger.adopt(key, size)),
    dropped: (key) => void reports.push(async () => ledger.forget([key])),
    async purge(target) {
      await deliver()
      let count = 1
      if ('prefix' in target) count = await ledger.purge(target.prefix)
      else await ledger.delete(target.exact)
      await ledger.filesDeleted()
      await deliver()
      return count
    },
    budgets: (budgets) => ledger.setBudgets(budgets),
    totals: () => {
      const { entries, bytes, evictions } = ledger.stats()
      return { entries: entries ?? 0, bytes: bytes ?? 0, evictions, reporter: true }
    },
    onGone: (forget) => void forgets.push(forget),
    close: () => {},
  })
  const view = () => DiskCache.open({ dir, maxBytes: options.viewBytes, maxItemBytes: 1 << 24, staleSeconds: 60, ledger: link() })
  return { dir, ledger, a: await view(), b: await view(), deliver }
}

describe('a disk directory shared by workers', () => {
  it('a worker serves what another wrote, found by its name; a worker forgetting an entry deletes no file', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 1000 * KB })
    const bodies = [randomBytes(400 * KB), randomBytes(400 * KB), randomBytes(400 * KB)]
    for (const [i, body] of bodies.entries()) await a.set(`b/${i}`, entry(body))
    // Worker a's own index holds 1000 KB: it let go of b/0, and the file stays (only the ledger evicts).
    assert.equal(a.stats().entries, 0, "a worker's stats are the ledger's")
    await deliver()
    assert.equal(ledger.stats().entries, 3)
    assert.equal(a.stats().entries, 3)
    assert.equal(await exists(fileOf(dir, 'b/0')), true)
    for (const [i, body] of bodies.entries()) assert.deepEqual(await bodyOf(b, `b/${i}`), body, `b/${i} from b, which never wrote it`)
    assert.deepEqual(await bodyOf(a, 'b/0'), bodies[0], 'and from a again')
    assert.equal(b.has('b/2'), true)
    assert.equal(b.has('b/9'), false)
  })

  it('only the ledger evicts: the least recently used file, hits on any worker counting, goes and every worker forgets it', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 1000 * KB, viewBytes: 10_000 * KB })
    const bodies = [randomBytes(400 * KB), randomBytes(400 * KB), randomBytes(400 * KB)]
    await a.set('b/0', entry(bodies[0]!))
    await b.set('b/1', entry(bodies[1]!))
    // b/0 written first, but hit (through b) after b/1 was written.
    assert.deepEqual(await bodyOf(b, 'b/0'), bodies[0])
    assert.deepEqual(await bodyOf(a, 'b/1'), bodies[1])
    assert.deepEqual(await bodyOf(b, 'b/0'), bodies[0])
    await deliver()
    await a.set('b/2', entry(bodies[2]!))
    await deliver()
    await ledger.filesDeleted()
    assert.equal(await exists(fileOf(dir, 'b/1')), false, 'the least recently used file is deleted')
    assert.equal(await exists(fileOf(dir, 'b/0')), true)
    assert.equal(ledger.stats().evictions, 1)
    assert.equal(a.has('b/1') || b.has('b/1'), false, 'both workers forgot it')
    assert.equal(await a.get('b/1'), undefined)
    assert.deepEqual(await bodyOf(b, 'b/2'), bodies[2])
    assert.deepEqual(await bodyOf(a, 'b/0'), bodies[0])
  })

  it('a lookup by name that the ledger says is gone while it reads indexes nothing', async () => {
    const { a, b, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/k', entry(randomBytes(3 * KB)))
    await deliver()
    const looking = b.get('b/k')
    b.forget(['b/k'])
    assert.equal(await looking, undefined, 'purged or evicted while it was read: a miss')
    assert.equal(b.stats().misses, 1)
  })

  it('a damaged entry one worker meets is deleted, the ledger stops counting it, and the other workers forget it', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/k', entry(randomBytes(3 * KB)))
    assert.ok((await b.get('b/k')) !== undefined)
    await deliver()
    await flipBodyByte(fileOf(dir, 'b/k'), 99)
    // A new worker view reads the file whole (the others know its header and read only its body).
    assert.equal(await a.get('b/k'), undefined)
    await ledger.filesDeleted()
    assert.equal(await exists(fileOf(dir, 'b/k')), false)
    await deliver()
    assert.equal(ledger.stats().entries, 0)
    assert.equal(b.has('b/k'), false, 'b forgot it')
  })

  it('a purge through one worker deletes the files every worker wrote, before it answers', async () => {
    const { dir, a, b, ledger } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/x/1', entry(randomBytes(3 * KB)))
    await b.set('b/x/2', entry(randomBytes(300 * KB)))
    await b.set('b/y', entry(randomBytes(3 * KB)))
    // Reports not yet delivered: the purge carries them first.
    assert.equal(await a.purge('b/x/'), 2)
    assert.equal(await exists(fileOf(dir, 'b/x/1')), false)
    assert.equal(await exists(fileOf(dir, 'b/x/2')), false)
    assert.equal(b.has('b/x/2'), false)
    assert.equal(ledger.stats().entries, 1, 'b/y stays')
    await a.delete('b/y')
    assert.equal(await exists(fileOf(dir, 'b/y')), false)
    assert.equal(b.has('b/y'), false)
  })

  it('the ledger counts a worker\'s file only when it is there', async () => {
    const { ledger } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await ledger.adopt('b/evicted-meanwhile', 3 * KB)
    assert.equal(ledger.stats().entries, 0)
  })
})
