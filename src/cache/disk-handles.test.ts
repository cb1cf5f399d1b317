// Shared descriptors of disk entries: small reads made on the event loop once a file is open, and
// turned off for a while after a slow one (the page cache did not have the bytes).
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import type { CachedObject } from '../ports.ts'
import { DiskCache } from './disk.ts'
import { INLINE_PAUSE_MS, MAX_INLINE_BYTES, OpenFiles, SLOW_BUDGET_MS, SLOW_INLINE_MS, SLOW_WINDOW_MS } from './disk-handles.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

async function fileWith(bytes: Buffer): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-handles-'))
  dirs.push(dir)
  const file = join(dir, 'entry')
  await writeFile(file, bytes)
  return file
}

function entry(text: string): CachedObject {
  const body = Buffer.from(text)
  const now = Date.now()
  const meta = { size: body.length, etag: '"e"', lastModified: undefined, contentType: 'text/plain', cacheControl: undefined, contentDisposition: undefined, contentEncoding: undefined, contentLanguage: undefined, expires: undefined, userMetadata: {} }
  return { meta, body, storedAt: now, freshUntil: now + 60_000 }
}

describe('disk entry descriptors', () => {
  it('reads on the event loop only once the file is open, and only small reads', async () => {
    const bytes = Buffer.from(Array.from({ length: MAX_INLINE_BYTES + 10 }, (_, i) => i % 253))
    const files = new OpenFiles(4)
    const handle = files.handleOf(await fileWith(bytes))
    const buffer = Buffer.alloc(100)
    assert.equal(handle.readNow(buffer, 100, 5), undefined, 'not open yet')
    assert.equal(await handle.readOnce(buffer, 100, 5), 100)
    assert.equal(handle.readNow(buffer.fill(0), 100, 7), 100)
    assert.deepEqual(buffer, bytes.subarray(7, 107))
    assert.equal(handle.readNow(Buffer.alloc(MAX_INLINE_BYTES + 1), MAX_INLINE_BYTES + 1, 0), undefined, 'too large to read inline')
    handle.retire()
    assert.equal(handle.readNow(buffer, 100, 5), undefined, 'closed with its entry')
  })

  it('stops reading inline for a while once slow reads have held the loop too long', async () => {
    let now = 1000
    // Clock readings to hand out before `now` (a read is timed by one reading before and one after).
    const readings: number[] = []
    const files = new OpenFiles(4, { now: () => readings.shift() ?? now })
    const handle = files.handleOf(await fileWith(Buffer.alloc(64, 1)))
    const buffer = Buffer.alloc(64)
    const read = (takes: number) => {
      readings.push(now, now + takes)
      const got = handle.readNow(buffer, 64, 0)
      if (got !== undefined) now += takes
      return got
    }
    await handle.readOnce(buffer, 64, 0)
    // Fast reads count for nothing, however many.
    for (let i = 0; i < 10_000; i++) assert.equal(read(SLOW_INLINE_MS / 2), 64)
    // Slow ones spread out (the process losing its core now and then) stay under the budget.
    for (let i = 0; i < 10; i++) {
      assert.equal(read(SLOW_BUDGET_MS / 2), 64)
      now += SLOW_WINDOW_MS
    }
    // Reads from the disk, one after the other: each completes, until they have held the loop
    // longer than the budget.
    const slow = SLOW_BUDGET_MS / 10
    for (let i = 0; i < 10; i++) assert.equal(read(slow), 64)
    assert.equal(read(slow), 64, 'the read that goes over the budget completes')
    assert.equal(handle.readNow(buffer, 64, 0), undefined, 'then reads are made in the pool')
    now += INLINE_PAUSE_MS - 10
    assert.equal(handle.readNow(buffer, 64, 0), undefined, 'for the whole pause')
    now += 10
    assert.equal(read(0), 64, 'then inline again')
    handle.retire()
  })

  it('keeps open the idle descriptors read most recently, inline reads included', async () => {
    const files = new OpenFiles(2)
    const [a, b, c] = await Promise.all([1, 2, 3].map(async (n) => files.handleOf(await fileWith(Buffer.alloc(16, n)))))
    const buffer = Buffer.alloc(16)
    await a!.readOnce(buffer, 16, 0)
    await b!.readOnce(buffer, 16, 0)
    assert.equal(a!.readNow(buffer, 16, 0), 16)
    // A third idle descriptor: the least recently used one (b) is closed, not a.
    await c!.readOnce(buffer, 16, 0)
    assert.equal(b!.readNow(buffer, 16, 0), undefined)
    assert.equal(a!.readNow(buffer, 16, 0), 16)
    assert.equal(c!.readNow(buffer, 16, 0), 16)
    files.closeIdle()
  })

  it('never serves a small body damaged after its file was opened by a hit, and deletes the entry', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-handles-'))
    dirs.push(dir)
    const store = await DiskCache.open({ dir, maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: 60 })
    await store.set('b/small.txt', entry('a small body read inline'))
    // The first hit opens the file; the next ones read it on the event loop.
    assert.equal((await store.get('b/small.txt'))?.body.toString(), 'a small body read inline')
    assert.equal((await store.get('b/small.txt'))?.body.toString(), 'a small body read inline')
    const [name] = await readdir(dir)
    const file = join(dir, name as string)
    const bytes = await readFile(file)
    bytes.writeUInt8((bytes.at(-3) ?? 0) ^ 0x20, bytes.length - 3)
    // Rewritten in place: the open descriptor sees the new bytes.
    await writeFile(file, bytes)
    assert.equal(await store.get('b/small.txt'), undefined)
    assert.equal(store.has('b/small.txt'), false)
    await store.close()
  })
})
