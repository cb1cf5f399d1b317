// The disk tier shared by workers, against real entry files: the ledger (a DiskCache) and two
// workers' views of one directory in one process, their messages (disk-cluster.ts carries them
// between processes) delivered when the test says. test/e2e/disk-shared.test.ts runs the same
// through a real cluster.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { access, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { flipBodyByte } from '../../test/support/disk-entry.ts'
import { eventually } from '../../test/support/eventually.ts'
import { objectMeta } from '../../test/support/meta.ts'
import type { CachedObject } from '../ports.ts'
import { DiskCache, type DiskLedgerLink } from './disk.ts'
import { MemoryCache } from './memory.ts'
import { TieredCache } from './tiered.ts'

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

/** Compares bodies by their bytes (a deepEqual of two large buffers spends minutes on its diff). */
function sameBytes(actual: Buffer | undefined, expected: Buffer, message?: string): void {
  assert.ok(actual?.equals(expected) === true, message ?? `${actual?.length ?? 'no'} bytes, not the ${expected.length} expected`)
}

async function bodyOf(disk: DiskCache, key: string): Promise<Buffer | undefined> {
  const got = await disk.get(key)
  if (got === undefined) return undefined
  return got.body instanceof Uint8Array ? Buffer.from(got.body) : Buffer.from(await got.body.bytes())
}

/** A small and a large entry's keys, with a first and a second copy of each (different bytes). */
function smallAndLargeTwice(): { keys: string[]; first: Buffer[]; second: Buffer[] } {
  const bodies = () => [randomBytes(3 * KB), randomBytes(300 * KB)]
  return { keys: ['b/small', 'b/large'], first: bodies(), second: bodies() }
}

/** A line to no ledger: what a view reports goes nowhere. */
const noLink: DiskLedgerLink = {
  held: () => {},
  dropped: () => {},
  purge: async () => 0,
  live: () => {},
  totals: () => ({ entries: 0, bytes: 0, evictions: 0, reporter: true }),
  onGone: () => {},
  close: () => {},
}

/** A directory with its ledger and two workers' views; what the views report waits for `deliver`. */
async function sharedDirectory(options: { ledgerBytes: number; viewBytes: number }) {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-shared-'))
  dirs.push(dir)
  const reports: Array<() => Promise<void>> = []
  const gone: string[] = []
  /** Keys written again, by the view that wrote them. */
  const rewritten: Array<[string, number]> = []
  const forgets = new Map<number, (gone: string[], rewritten: string[]) => void>()
  const ledger = await DiskCache.open({ dir, maxBytes: options.ledgerBytes, maxItemBytes: 1 << 24, staleSeconds: 60, onGone: (key) => gone.push(key) })
  /** The reports sent so far, adopted by the ledger in order; then what it stopped holding, told to the views. */
  const deliver = async () => {
    for (const report of reports.splice(0)) await report()
    const keys = gone.splice(0)
    const written = rewritten.splice(0)
    for (const [id, forget] of forgets) forget(keys, written.filter(([, writer]) => writer !== id).map(([key]) => key))
  }
  /** While set, purges wait here before the ledger acts (the IPC round trip and the unlinks take time). */
  let purgeGate: { arrived: () => void; release: Promise<void> } | undefined
  const holdPurges = () => {
    const arrived = Promise.withResolvers<void>()
    const release = Promise.withResolvers<void>()
    purgeGate = { arrived: arrived.resolve, release: release.promise }
    return { arrived: arrived.promise, release: release.resolve }
  }
  const link = (id: number): DiskLedgerLink => ({
    held: (key, size, written) =>
      void reports.push(async () => {
        await ledger.adopt(key, size)
        if (written === true) rewritten.push([key, id])
      }),
    dropped: (key) => void reports.push(() => ledger.dropped([key])),
    async purge(target) {
      if (purgeGate !== undefined) {
        purgeGate.arrived()
        await purgeGate.release
      }
      await deliver()
      let count = 1
      if ('prefix' in target) count = await ledger.purge(target.prefix)
      else await ledger.delete(target.exact)
      await ledger.filesDeleted()
      await deliver()
      return count
    },
    live: (budgets) => ledger.setBudgets(budgets),
    totals: () => {
      const { entries, bytes, evictions } = ledger.stats()
      return { entries: entries ?? 0, bytes: bytes ?? 0, evictions, reporter: true }
    },
    onGone: (forget) => void forgets.set(id, forget),
    close: () => {},
  })
  const view = (id: number) => DiskCache.open({ dir, maxBytes: options.viewBytes, maxItemBytes: 1 << 24, staleSeconds: 60, ledger: link(id) })
  return { dir, ledger, a: await view(1), b: await view(2), deliver, holdPurges, options: { dir, maxBytes: options.ledgerBytes, maxItemBytes: 1 << 24, staleSeconds: 60 } }
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
    for (const [i, body] of bodies.entries()) sameBytes(await bodyOf(b, `b/${i}`), body, `b/${i} from b, which never wrote it`)
    sameBytes(await bodyOf(a, 'b/0'), bodies[0]!, 'and from a again')
    assert.equal(b.has('b/2'), true)
    assert.equal(b.has('b/9'), false)
  })

  it('only the ledger evicts: the least recently used file, hits on any worker counting, goes and every worker forgets it', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 1000 * KB, viewBytes: 10_000 * KB })
    const bodies = [randomBytes(400 * KB), randomBytes(400 * KB), randomBytes(400 * KB)]
    await a.set('b/0', entry(bodies[0]!))
    await b.set('b/1', entry(bodies[1]!))
    // b/0 written first, but hit (through b) after b/1 was written.
    sameBytes(await bodyOf(b, 'b/0'), bodies[0]!)
    sameBytes(await bodyOf(a, 'b/1'), bodies[1]!)
    sameBytes(await bodyOf(b, 'b/0'), bodies[0]!)
    await deliver()
    await a.set('b/2', entry(bodies[2]!))
    await deliver()
    await ledger.filesDeleted()
    assert.equal(await exists(fileOf(dir, 'b/1')), false, 'the least recently used file is deleted')
    assert.equal(await exists(fileOf(dir, 'b/0')), true)
    assert.equal(ledger.stats().evictions, 1)
    assert.equal(a.has('b/1') || b.has('b/1'), false, 'both workers forgot it')
    assert.equal(await a.get('b/1'), undefined)
    sameBytes(await bodyOf(b, 'b/2'), bodies[2]!)
    sameBytes(await bodyOf(a, 'b/0'), bodies[0]!)
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

  it('a lookup by name that another worker\'s new copy crosses reads the file again: a hit, not a miss', async () => {
    const { a, b, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    const body = randomBytes(3 * KB)
    await a.set('b/k', entry(body))
    await deliver()
    const looking = b.get('b/k')
    b.forget(['b/k'], 'rewritten')
    const found = await looking
    assert.ok(found !== undefined && found.body instanceof Uint8Array)
    sameBytes(Buffer.from(found.body), body)
    assert.equal(b.stats().hits, 1)
  })

  it('a damaged entry one worker meets is deleted, the ledger stops counting it, and the other workers forget it', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/k', entry(randomBytes(3 * KB)))
    assert.ok((await b.get('b/k')) !== undefined)
    await deliver()
    await flipBodyByte(fileOf(dir, 'b/k'), 99)
    // a reads it again and meets the damage.
    assert.equal(await a.get('b/k'), undefined)
    await a.filesDeleted()
    assert.equal(await exists(fileOf(dir, 'b/k')), false)
    // The drop is reported once the worker's unlink is done.
    await eventually(async () => {
      await deliver()
      return ledger.stats().entries === 0
    }, 'the ledger no longer counting it')
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

  it('a purge sticks in the memory tier above a worker: its own purge on the way to the ledger, no lookup finds the files by name', async () => {
    const { dir, a, b, holdPurges } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    const workerA = new TieredCache([new MemoryCache({ maxBytes: 1e8, maxItemBytes: 1 << 24, staleSeconds: 60 }), a])
    await b.set('b/k', entry(randomBytes(3 * KB)))
    const held = holdPurges()
    const purging = workerA.purge('b/')
    await held.arrived
    // A request on worker A meanwhile: not in memory, and the disk must not hand over b's file.
    assert.equal(await workerA.lookup('b/k'), undefined)
    held.release()
    await purging
    assert.equal(await exists(fileOf(dir, 'b/k')), false)
    assert.equal(await workerA.lookup('b/k'), undefined, 'nothing kept in memory either')
  })

  it('a worker\'s drop does not uncount a newer copy another worker wrote meanwhile', async () => {
    const { dir, a, b, ledger, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/k', entry(randomBytes(3 * KB)))
    assert.ok((await b.get('b/k')) !== undefined)
    await deliver()
    // b meets a damaged copy and drops it; before its report arrives, a writes a new copy.
    await flipBodyByte(fileOf(dir, 'b/k'), 99)
    const damaged = await DiskCache.open({ dir, maxBytes: 1e8, maxItemBytes: 1 << 24, staleSeconds: 60, ledger: noLink })
    assert.equal(await damaged.get('b/k'), undefined)
    await damaged.filesDeleted()
    await a.set('b/k', entry(randomBytes(5 * KB)))
    await deliver()
    // The drop reaches the ledger after the new copy's report.
    await ledger.dropped(['b/k'])
    assert.equal(ledger.stats().entries, 1, 'the new copy still counts')
    await ledger.purge('b/')
    await ledger.filesDeleted()
    assert.equal(await exists(fileOf(dir, 'b/k')), false, 'and a purge finds it')
  })

  it('a worker serves the copy another worker wrote again, not the one it had open', async () => {
    const { dir, a, b, deliver } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    const first = randomBytes(300 * KB)
    const second = randomBytes(300 * KB)
    await a.set('b/k', entry(first))
    sameBytes(await bodyOf(b, 'b/k'), first)
    await deliver()
    // Revalidated and written again by a: same size, new bytes, a new file under the same name.
    await a.set('b/k', entry(second))
    await deliver()
    sameBytes(await bodyOf(b, 'b/k'), second, 'b forgot the old copy and found the new one')
    sameBytes(await bodyOf(a, 'b/k'), second)
    assert.equal(await exists(fileOf(dir, 'b/k')), true)
  })

  it('a worker whose descriptor of an entry closed meanwhile serves the copy another worker wrote again, and deletes neither', async () => {
    const { dir, a, b } = await sharedDirectory({ ledgerBytes: 100_000 * KB, viewBytes: 100_000 * KB })
    const { keys, first, second } = smallAndLargeTwice()
    for (const [i, key] of keys.entries()) await a.set(key, entry(first[i] as Buffer))
    for (const [i, key] of keys.entries()) sameBytes(await bodyOf(b, key), first[i] as Buffer)
    // b keeps 256 descriptors open between hits: 256 more entries read close the ones of both keys.
    const others = Array.from({ length: 256 }, (_, i) => `b/other-${i}`)
    for (const key of others) await a.set(key, entry(randomBytes(100)))
    for (const key of others) assert.ok((await b.get(key)) !== undefined)
    // a writes both again (new files under the same names); b has not heard of it yet.
    for (const [i, key] of keys.entries()) await a.set(key, entry(second[i] as Buffer))
    // A small hit reads its body with the lookup: b finds the file is another and looks it up again.
    sameBytes(await bodyOf(b, 'b/small'), second[0] as Buffer, 'b reads the new copy, not the old header against it')
    // A large hit has answered with the old copy's metadata before its body is read: that read
    // fails its first block (the pipeline then answers from the origin); the next finds the new copy.
    await assert.rejects(bodyOf(b, 'b/large'), { name: 'DamagedEntryError' })
    sameBytes(await bodyOf(b, 'b/large'), second[1] as Buffer)
    for (const [i, key] of keys.entries()) {
      assert.equal(await exists(fileOf(dir, key)), true, `${key}: the new copy is still there`)
      sameBytes(await bodyOf(a, key), second[i] as Buffer)
    }
  })

  it('a worker that never read back what it wrote serves the copy another worker wrote over it, and deletes neither', async () => {
    const { dir, a, b } = await sharedDirectory({ ledgerBytes: 100_000 * KB, viewBytes: 100_000 * KB })
    const { keys, first, second } = smallAndLargeTwice()
    // a writes both (its files never opened since), then b writes both again; a has not heard of it.
    for (const [i, key] of keys.entries()) await a.set(key, entry(first[i] as Buffer))
    for (const [i, key] of keys.entries()) await b.set(key, entry(second[i] as Buffer))
    sameBytes(await bodyOf(a, 'b/small'), second[0] as Buffer, 'a reads the new copy, not its own header against it')
    await assert.rejects(bodyOf(a, 'b/large'), { name: 'DamagedEntryError' })
    sameBytes(await bodyOf(a, 'b/large'), second[1] as Buffer)
    await a.filesDeleted()
    for (const [i, key] of keys.entries()) {
      assert.equal(await exists(fileOf(dir, key)), true, `${key}: the new copy is still there`)
      sameBytes(await bodyOf(b, key), second[i] as Buffer)
    }
  })

  it('the ledger counts the files a worker renamed into place but died before reporting', async () => {
    const { dir, a, ledger } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    await a.set('b/orphan', entry(randomBytes(3 * KB)))
    await a.set('b/orphan2', entry(randomBytes(300 * KB)))
    // Its reports never arrive.
    assert.equal(ledger.stats().entries, 0)
    assert.equal(await ledger.adoptUnknownFiles(), 2)
    assert.equal(await ledger.adoptUnknownFiles(), 0, 'known now')
    assert.equal(ledger.stats().entries, 2)
    await ledger.purge('b/')
    await ledger.filesDeleted()
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith('.entry')), [])
  })

  it('new limits carry the ledger over without reading a file: the oldest entries go, temp files being written stay', async () => {
    const { dir, a, ledger, deliver, options } = await sharedDirectory({ ledgerBytes: 10_000 * KB, viewBytes: 10_000 * KB })
    for (let i = 0; i < 5; i++) await a.set(`b/${i}`, entry(randomBytes(300 * KB)))
    await deliver()
    const writing = join(dir, 'being-written.entry.1234.abc.tmp')
    await writeFile(writing, 'a fill in progress')
    const gone: string[] = []
    const smaller = DiskCache.takeOver(ledger, { ...options, maxBytes: 1000 * KB, onGone: (key) => gone.push(key) })
    await smaller.filesDeleted()
    assert.deepEqual(gone, ['b/0', 'b/1'])
    assert.equal(smaller.stats().entries, 3)
    assert.equal(await exists(fileOf(dir, 'b/0')), false)
    assert.equal(await exists(fileOf(dir, 'b/4')), true)
    assert.equal(await exists(writing), true)
  })
})
