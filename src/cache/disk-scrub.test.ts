// The disk tier's scrub against real entry files: what it finds damaged is deleted and counted,
// intact entries stay and are still served, the read rate holds, and a pass can be stopped.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync, spawn } from 'node:child_process'
import { access, mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { flipBodyByte, openHere } from '../../test/support/disk-entry.ts'
import { eventually } from '../../test/support/eventually.ts'
import { objectMeta } from '../../test/support/meta.ts'
import type { CachedObject, ScrubLimits, ScrubReport } from '../ports.ts'
import { DiskCache } from './disk.ts'
import { BLOCK_SIZE } from './disk-format.ts'
import { sampleOf } from './disk-scrub.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

const ALL: ScrubLimits = { sampleRate: 1, maxEntries: 1000, bytesPerSec: 0 }

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-scrub-'))
  dirs.push(dir)
  return dir
}

async function diskCache(): Promise<{ dir: string; disk: DiskCache }> {
  const dir = await tempDir()
  return { dir, disk: await DiskCache.open({ dir, maxBytes: 1 << 28, maxItemBytes: 1 << 26, staleSeconds: 60 }) }
}

function entry(body: Buffer): CachedObject {
  return { meta: objectMeta({ size: body.length }), storedAt: Date.now(), freshUntil: Date.now() + 60_000, body }
}

const fileOf = (dir: string, key: string) => join(dir, `${createHash('sha256').update(key).digest('hex')}.entry`)
const exists = (file: string) => access(file).then(
  () => true,
  () => false
)


/** The whole body of a hit, however the tier hands it back. */
async function bodyOf(disk: DiskCache, key: string): Promise<Buffer | undefined> {
  const got = await disk.get(key)
  if (got === undefined) return undefined
  return got.body instanceof Uint8Array ? Buffer.from(got.body) : Buffer.from(await got.body.bytes())
}

describe('disk scrub', () => {
  it('deletes the entries it finds damaged (a flipped byte deep in a large body, a truncated file, a damaged header) and keeps the intact ones', async () => {
    const { dir, disk } = await diskCache()
    const small = randomBytes(3000)
    const large = randomBytes(5 * BLOCK_SIZE + 17)
    const bodies: Record<string, Buffer> = { 'b/small': small, 'b/large': large, 'b/rot': randomBytes(4 * BLOCK_SIZE), 'b/short': randomBytes(2 * BLOCK_SIZE), 'b/head': randomBytes(1000) }
    for (const [key, body] of Object.entries(bodies)) await disk.set(key, entry(body))
    // Block 3 of 4: a hit would send blocks 0-2, then cut the answer.
    await flipBodyByte(fileOf(dir, 'b/rot'), 3 * BLOCK_SIZE + 5)
    await truncate(fileOf(dir, 'b/short'), (await readFile(fileOf(dir, 'b/short'))).length - 10)
    const handle = await open(fileOf(dir, 'b/head'), 'r+')
    await handle.write(Buffer.from('X'), 0, 1, 20)
    await handle.close()

    const report = await disk.scrub(ALL)
    assert.ok(report !== undefined)
    assert.equal(report.checked, 5)
    assert.equal(report.intact, 2)
    assert.equal(report.damaged, 3)
    assert.equal(report.stopped, false)
    const reasons = Object.fromEntries(report.damagedEntries.map((d) => [d.key, d.reason]))
    assert.deepEqual(reasons, { 'b/rot': 'block 3 fails its checksum', 'b/short': reasons['b/short'], 'b/head': 'damaged header' })
    assert.match(reasons['b/short'] ?? '', /bytes, the header says/)
    for (const key of ['b/rot', 'b/short', 'b/head']) {
      assert.equal(disk.has(key), false, `${key} left the index`)
      // Unlinked as the entry leaves the index, without the pass waiting for it.
      await eventually(async () => !(await exists(fileOf(dir, key))), `${key}'s file deleted`)
    }
    assert.deepEqual(await bodyOf(disk, 'b/small'), small)
    assert.deepEqual(await bodyOf(disk, 'b/large'), large)
    const stats = disk.stats().scrub
    assert.deepEqual(stats, { passes: 1, checked: 5, damaged: 3, bytes: report.bytes })
    assert.ok(report.bytes >= small.length + large.length, 'every body byte of the intact entries was read')
  })

  it('checks only its sample: sample_rate and max_entries bound a pass', async () => {
    const { disk } = await diskCache()
    for (let i = 0; i < 40; i++) await disk.set(`b/${i}`, entry(randomBytes(100)))
    assert.equal((await disk.scrub({ ...ALL, sampleRate: 0.25 }))?.checked, 10)
    assert.equal((await disk.scrub({ ...ALL, maxEntries: 3 }))?.checked, 3)
  })

  it('reads no faster than bytes_per_sec', async () => {
    const { disk } = await diskCache()
    await disk.set('b/paced', entry(randomBytes(4 * BLOCK_SIZE)))
    const started = performance.now()
    const report = await disk.scrub({ ...ALL, bytesPerSec: 4 * 1024 * 1024 })
    const elapsed = performance.now() - started
    assert.equal(report?.intact, 1)
    // 1 MiB and a header at 4 MiB/s: at least ~250 ms, however fast the disk.
    assert.ok(elapsed >= ((report?.bytes ?? 0) / (4 * 1024 * 1024)) * 1000 - 5, `${elapsed} ms`)
  })

  it('runs one pass at a time, and stops when asked', async () => {
    const { disk } = await diskCache()
    for (let i = 0; i < 8; i++) await disk.set(`b/${i}`, entry(randomBytes(BLOCK_SIZE)))
    const controller = new AbortController()
    // 64 KiB/s: the first entry alone takes seconds.
    const running = disk.scrub({ ...ALL, bytesPerSec: 64 * 1024 }, controller.signal)
    assert.equal(await disk.scrub(ALL), undefined, 'a second pass while one runs')
    controller.abort()
    const report = await running
    assert.equal(report?.stopped, true)
    assert.ok((report?.checked ?? 8) < 8)
    assert.equal(disk.stats().entries, 8, 'a stopped pass deletes nothing it did not find damaged')
    assert.equal((await disk.scrub(ALL))?.intact, 8, 'the next pass runs')
  })

  it('runs on its schedule until the tier closes', async () => {
    const { dir, disk } = await diskCache()
    await disk.set('b/rot', entry(randomBytes(2 * BLOCK_SIZE)))
    await disk.set('b/ok', entry(randomBytes(100)))
    await flipBodyByte(fileOf(dir, 'b/rot'), BLOCK_SIZE + 1)
    const reports: ScrubReport[] = []
    const first = new Promise<ScrubReport>((resolve) =>
      disk.scrubEvery({ everyMs: 5, limits: ALL }, (report) => {
        reports.push(report)
        resolve(report)
      })
    )
    assert.equal((await first).damaged, 1)
    assert.equal(disk.has('b/rot'), false)
    await disk.close()
    const passes = reports.length
    // Forty intervals after the close: a schedule still running would have passed again.
    await delay(200)
    assert.equal(reports.length, passes)
  })

  it('stopScrub ends the running pass and refuses later ones (a shutdown does not wait for them)', async () => {
    const { disk } = await diskCache()
    await disk.set('b/a', entry(randomBytes(BLOCK_SIZE)))
    // 64 KiB/s: the pass would take 4 s.
    const running = disk.scrub({ ...ALL, bytesPerSec: 64 * 1024 })
    disk.stopScrub()
    const report = await running
    assert.equal(report?.stopped, true)
    assert.equal(disk.has('b/a'), true)
    const later = await disk.scrub(ALL)
    assert.deepEqual([later?.stopped, later?.checked], [true, 0])
  })

  it('leaves a copy written while the pass read the old one, which was damaged: only the old one goes', async () => {
    const { dir, disk } = await diskCache()
    await disk.set('b/k', entry(randomBytes(4 * BLOCK_SIZE)))
    const file = fileOf(dir, 'b/k')
    await flipBodyByte(file, 3 * BLOCK_SIZE + 7)
    // 1 MiB at 512 KiB/s: block 3 is read 1.5 s after the file is opened.
    const pass = disk.scrub({ ...ALL, bytesPerSec: 512 * 1024 })
    // The pass holds the old file open: the new copy is renamed over its name after that.
    await eventually(() => openHere(file), 'the pass opened the old file', { withinMs: 30_000 })
    const fresh = randomBytes(4 * BLOCK_SIZE)
    await disk.set('b/k', entry(fresh))
    const report = await pass
    assert.equal(report?.damaged, 1, 'the pass read the old, damaged copy')
    assert.deepEqual(await bodyOf(disk, 'b/k'), fresh)
    assert.equal(await exists(file), true)
  })

  it('deletes nothing when the process is out of file descriptors (the files are not to blame)', async () => {
    // A child fills its cache, then its descriptor limit is lowered under what it holds (prlimit):
    // every open fails with EMFILE until the limit is raised again.
    const script = join(await tempDir(), 'emfile.mts')
    await writeFile(
      script,
      `import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DiskCache } from ${JSON.stringify(join(import.meta.dirname, 'disk.ts'))}
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-emfile-'))
const disk = await DiskCache.open({ dir, maxBytes: 1 << 28, maxItemBytes: 1 << 26, staleSeconds: 60 })
const meta = { etag: '"e"', lastModified: undefined, contentType: undefined, cacheControl: undefined, contentDisposition: undefined, contentEncoding: undefined, contentLanguage: undefined, expires: undefined, userMetadata: {} }
for (let i = 0; i < 10; i++) await disk.set('b/' + i, { meta: { ...meta, size: 1000 }, storedAt: Date.now(), freshUntil: Date.now() + 60_000, body: randomBytes(1000) })
await disk.set('b/large', { meta: { ...meta, size: 300_000 }, storedAt: Date.now(), freshUntil: Date.now() + 60_000, body: randomBytes(300_000) })
// The same files after a restart: their headers are not known yet, so a hit reads one first.
// (Neither tier holds an entry's file open yet: every read below must open one.)
const restarted = await DiskCache.open({ dir, maxBytes: 1 << 28, maxItemBytes: 1 << 26, staleSeconds: 60 })
console.log('ready')
await lines.next()
const report = await disk.scrub({ sampleRate: 1, maxEntries: 100, bytesPerSec: 0 })
const small = await disk.get('b/0')
const large = await disk.get('b/large')
const largeRead = await large?.body.bytes().then(() => 'read', (err) => err.code)
const unknown = await restarted.get('b/1')
console.log(JSON.stringify({ report, small: small !== undefined, largeRead, unknown: unknown !== undefined, entries: [disk.stats().entries, restarted.stats().entries] }))
await lines.next()
const again = [await disk.get('b/0'), await restarted.get('b/1')]
console.log(JSON.stringify({ entries: [disk.stats().entries, restarted.stats().entries], files: (await readdir(dir)).length, again: again.map((hit) => hit !== undefined) }))
process.exit(0)
`
    )
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['pipe', 'pipe', 'inherit'] })
    const out = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
    const line = async () => String((await out.next()).value)
    try {
      assert.equal(await line(), 'ready')
      execFileSync('prlimit', ['--pid', String(child.pid), '--nofile=3:'])
      child.stdin.write('go\n')
      const during = JSON.parse(await line()) as { report: ScrubReport; small: boolean; largeRead: string; unknown: boolean; entries: number[] }
      execFileSync('prlimit', ['--pid', String(child.pid), '--nofile=4096:'])
      child.stdin.write('again\n')
      const afterwards = JSON.parse(await line()) as { entries: number[]; files: number; again: boolean[] }
      assert.deepEqual({ skipped: during.report.skipped, checked: during.report.checked, damaged: during.report.damaged }, { skipped: 11, checked: 0, damaged: 0 })
      assert.equal(during.small, false, 'a small entry misses while no descriptor can be opened')
      assert.equal(during.largeRead, 'EMFILE', "a large entry's body cannot be read then")
      assert.equal(during.unknown, false, 'an entry whose header is not known yet misses too')
      assert.deepEqual(during.entries, [11, 11], 'every entry stays indexed')
      assert.deepEqual(afterwards, { entries: [11, 11], files: 11, again: [true, true] }, 'every file stays, and hits once descriptors can be opened')
    } finally {
      child.kill()
    }
  })
})

describe('sampleOf', () => {
  it('picks `count` distinct items, or all of them when there are fewer', () => {
    const items = Array.from({ length: 100 }, (_, i) => i)
    const picked = sampleOf(items, 10)
    assert.equal(picked.length, 10)
    assert.equal(new Set(picked).size, 10)
    assert.deepEqual(sampleOf(items.slice(0, 3), 10), [0, 1, 2])
    assert.deepEqual(sampleOf(items, 0), [])
  })

  it('reaches every item: over many samples each is picked about equally often', () => {
    const counts = new Array<number>(20).fill(0)
    for (let round = 0; round < 2000; round++) for (const i of sampleOf(counts.keys(), 5)) counts[i] = (counts[i] ?? 0) + 1
    // 500 expected each; a biased sampler (never replacing early picks) gives the first five 2000.
    for (const count of counts) assert.ok(count > 350 && count < 650, `${counts.join(',')}`)
  })
})
