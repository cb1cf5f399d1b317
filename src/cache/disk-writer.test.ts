// The disk writer against a disk that takes no write: a FIFO with no reader stands where the
// temp file would be, so opening it blocks a thread-pool thread as a hung device does. The body's
// reader (and so a client) must not wait on it for more than WRITE_STALL_MS.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync } from 'node:fs'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { eventually } from '../../test/support/eventually.ts'
import { EntryFileWriter, entryWriterOf, WRITE_STALL_MS } from './disk-writer.ts'

const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

describe('EntryFileWriter on a healthy disk', () => {
  it('makes its caller wait only for the disk: a pause longer than the deadline after a wait is no stall, and the entry commits', { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-writer-'))
    dirs.push(dir)
    const chunk = Buffer.alloc(64 * 1024, 7)
    const out = new EntryFileWriter(join(dir, 'entry.tmp'), 100, 48 * chunk.length)
    let waits = 0
    for (let i = 0; i < 48; i++) {
      const taken = out.write(chunk)
      if (taken === true) continue
      assert.notEqual(taken, false, `chunk ${i} was refused`)
      waits++
      assert.equal(await taken, true, `wait ${waits} failed`)
      // The body's next bytes come late (a slow origin or client): the disk is not waited on then.
      if (waits === 1) await delay(WRITE_STALL_MS + 300)
    }
    // Written in one synchronous loop, the first MiB is queued before any write ends.
    assert.ok(waits > 0, 'the writer never made its caller wait')
    const head = Buffer.alloc(100, 1)
    assert.equal(await out.finish(() => head), head)
    assert.equal((await stat(join(dir, 'entry.tmp'))).size, 100 + 48 * chunk.length)
  })
  it('writes the bytes lent pieces had when they were handed over, while two writers share the reused copies', { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-writer-'))
    dirs.push(dir)
    const PIECES = 120
    // Each writer's body comes through one buffer its source reuses for every piece (an origin's
    // read buffer): piece i of writer w is filled with byte (w * 100 + i) % 256. Writer 0's pieces
    // are 64 KiB (a plain origin's reads), writer 1's TLS-sized (packed several to a copy).
    const sizes = [[64 * 1024], [16 * 1024, 1448, 9000, 16 * 1024, 300]]
    const writers = sizes.map((cycle, w) => {
      const pieces = Array.from({ length: PIECES }, (_, i) => cycle[i % cycle.length] as number)
      const total = pieces.reduce((a, b) => a + b, 0)
      return { w, pieces, out: new EntryFileWriter(join(dir, `entry-${w}.tmp`), 10, total), lent: Buffer.alloc(64 * 1024) }
    })
    for (let i = 0; i < PIECES; i++) {
      for (const { w, pieces, out, lent } of writers) {
        const piece = lent.subarray(0, pieces[i])
        piece.fill((w * 100 + i) % 256)
        const taken = out.writeCopy(piece)
        lent.fill(0xee) // reused at once, as the origin's next read would
        if (taken !== true) assert.equal(await taken, true)
      }
    }
    for (const { w, pieces, out } of writers) {
      await out.finish(() => Buffer.alloc(10))
      const file = await readFile(join(dir, `entry-${w}.tmp`))
      let at = 10
      for (let i = 0; i < PIECES; i++) {
        const piece = file.subarray(at, at + (pieces[i] as number))
        at += pieces[i] as number
        assert.ok(piece.every((byte) => byte === (w * 100 + i) % 256), `writer ${w}, piece ${i}: the bytes it had when handed over`)
      }
      assert.equal(at, file.length)
    }
  })
})

describe('EntryFileWriter on a hung disk', () => {
  it(`gives up after ${WRITE_STALL_MS} ms instead of holding the body's reader, and takes nothing more`, { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-writer-'))
    dirs.push(dir)
    const fifo = join(dir, 'entry.tmp')
    execFileSync('mkfifo', [fifo])
    const chunk = Buffer.alloc(64 * 1024, 1)
    const out = new EntryFileWriter(fifo, 100, 64 * chunk.length)
    try {
      // The writer takes bytes without waiting until it holds 1 MiB, then asks its caller to wait.
      let taken: boolean | Promise<boolean> = true
      let chunks = 0
      while (taken === true && chunks < 64) {
        taken = out.write(chunk)
        chunks++
      }
      assert.ok(taken instanceof Promise, `still taking bytes after ${chunks} chunks`)
      assert.ok(chunks > 16, `it waited after only ${chunks} chunks`)
      const started = performance.now()
      assert.equal(await taken, false)
      const waited = performance.now() - started
      assert.ok(waited >= WRITE_STALL_MS - 50, `gave up after ${waited} ms`)
      // Bounded: the caller is released at the deadline, not when the disk comes back (never, here).
      assert.ok(waited < WRITE_STALL_MS + 5000, `held the caller ${waited} ms`)
      assert.equal(out.write(chunk), false, 'a stalled writer takes nothing more')
    } finally {
      // Lets the blocked open go (its writes then fail on the pipe), so no thread stays stuck.
      closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK))
    }
    // Once the disk answers again, the entry is still not committed, and its temp file goes.
    await assert.rejects(out.finish(() => Buffer.alloc(100)), /the disk took no write in 2000 ms/)
    await assert.rejects(stat(fifo), { code: 'ENOENT' })
  })

  it('gives a commit up after its deadline: a HEAD or Range miss (writeAll) is answered, nothing is stored', { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-writer-'))
    dirs.push(dir)
    const fifo = join(dir, 'entry.tmp')
    execFileSync('mkfifo', [fifo])
    // 512 KiB: under the writer's 1 MiB, so only the commit ever waits on the disk.
    const body = Buffer.alloc(512 * 1024, 3)
    let installed = false
    const writer = entryWriterOf(new EntryFileWriter(fifo, 100, body.length), () => Buffer.alloc(100), async () => {
      installed = true
      return undefined
    }, 300)
    try {
      const started = performance.now()
      assert.equal(await writer.writeAll(new Blob([body]).stream()), undefined)
      const waited = performance.now() - started
      assert.ok(waited >= 250 && waited < 5300, `answered after ${waited} ms`)
    } finally {
      closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK))
    }
    // The disk answers again (here: its writes fail on the pipe): the file goes, nothing installed.
    await eventually(async () => stat(fifo).then(() => false, () => true), 'the temp file removed')
    assert.equal(installed, false)
  })
})

