// Writes paused after the disk failed one: the pause's own rules, then a real DiskCache on a hung
// disk (every thread-pool thread blocked opening a FIFO nobody writes, as threads stuck on a hung
// device are): the first fill stalls and pauses writes, the next ones are refused at once instead
// of stalling their clients too, and writes come back once the pause is over and the disk answers.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { blockThreadPool } from '../../test/support/hung-disk.ts'
import { objectMeta } from '../../test/support/meta.ts'
import { DiskCache } from './disk.ts'
import { WRITE_STALL_MS } from './disk-writer.ts'
import { WritePause, type WritesEvent } from './disk-write-pause.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

describe('WritePause', () => {
  it('pauses on a failure, doubles while the disk keeps failing, and starts over once a write is committed', async () => {
    const events: WritesEvent[] = []
    const pause = new WritePause((event) => events.push(event), 400)
    assert.equal(pause.mayWrite(), true)
    pause.failed('a write failed: ENOSPC')
    assert.deepEqual([pause.paused, pause.mayWrite()], [true, false])
    pause.failed('a write failed: ENOSPC')
    pause.worked()
    assert.deepEqual(events, [{ paused: true, reason: 'a write failed: ENOSPC', seconds: 0.4 }], 'one pause; a write committed during it does not end it')
    await delay(500)
    // Over: one write goes through to probe the disk, and it fails too: twice as long.
    assert.equal(pause.mayWrite(), true)
    pause.failed('the disk took no write in 2000 ms')
    assert.deepEqual(events.at(-1), { paused: true, reason: 'the disk took no write in 2000 ms', seconds: 0.8 })
    assert.equal(pause.mayWrite(), false)
    await delay(900)
    assert.equal(pause.mayWrite(), true)
    pause.worked()
    assert.deepEqual(events.at(-1), { paused: false })
    assert.deepEqual([pause.paused, pause.mayWrite(), pause.mayWrite()], [false, true, true], 'every write goes through again')
    pause.failed('a write failed: EIO')
    assert.deepEqual(events.at(-1), { paused: true, reason: 'a write failed: EIO', seconds: 0.4 }, 'back to the first pause')
  })

  it('after a pause lets one write through at a time, not every fill that comes', async () => {
    const pause = new WritePause(undefined, 100)
    pause.failed('a write failed: EIO')
    await delay(200)
    assert.deepEqual(
      Array.from({ length: 5 }, () => pause.mayWrite()),
      [true, false, false, false, false],
      'the probe, then nothing until it says how the disk is'
    )
    assert.equal(pause.paused, true)
  })
})

describe('a disk tier on a hung disk', () => {
  it(`pauses writes after a fill stalls for ${WRITE_STALL_MS} ms: later fills are refused at once, and writes resume after the pause`, { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-write-pause-'))
    dirs.push(dir)
    const events: WritesEvent[] = []
    const disk = await DiskCache.open({ dir, maxBytes: 1 << 28, maxItemBytes: 1 << 26, staleSeconds: 60, onWrites: (e) => events.push(e), writesPauseMs: 2000 })
    const head = (size: number) => ({ meta: objectMeta({ size }), storedAt: Date.now(), freshUntil: Date.now() + 60_000 })
    const chunk = Buffer.alloc(64 * 1024, 5)
    const size = 32 * chunk.length

    const unblock = await blockThreadPool(dir)
    let stalled: boolean
    try {
      const writer = disk.writer('b/first', head(size), size)
      assert.ok(writer !== undefined)
      // It takes 1 MiB without waiting, then makes its caller wait on the disk until the deadline.
      let taken: boolean | Promise<boolean> = true
      for (let i = 0; i < 32 && taken === true; i++) taken = writer.write(chunk)
      assert.ok(taken instanceof Promise)
      stalled = !(await taken)
      writer.abort()
      assert.equal(disk.writer('b/second', head(size), size), undefined, 'the next fill gets no writer: it streams through without waiting on the disk')
      await disk.set('b/small', { ...head(3), body: Buffer.from('abc') })
      assert.equal(disk.stats().writesPaused, true)
    } finally {
      unblock()
    }
    assert.equal(stalled, true, 'the first fill gave up')
    assert.deepEqual(events, [{ paused: true, reason: `the disk took no write in ${WRITE_STALL_MS} ms`, seconds: 2 }])
    assert.equal(await disk.get('b/small'), undefined, 'the paused set wrote nothing')

    // After the pause, the disk answers again: a fill is written and installed, and writes resume.
    await delay(2100)
    const body = randomBytes(size)
    const writer = disk.writer('b/third', head(size), size)
    assert.ok(writer !== undefined, 'writers again after the pause')
    await writer.writeAll(new Blob([body]).stream())
    const hit = await disk.get('b/third')
    assert.ok(hit !== undefined && !(hit.body instanceof Uint8Array))
    assert.ok(Buffer.from(await hit.body.bytes()).equals(body))
    assert.deepEqual(events.at(-1), { paused: false })
    assert.equal(disk.stats().writesPaused, false)
    await disk.close()
  })
})
