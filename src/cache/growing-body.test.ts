// A disk fill's body read while it is written (growing-body.ts), over a real EntryFileWriter on a
// real file: streams get what is on the file as it grows and wait at its end, a stream whose bytes
// the writer stopped short of goes on from `rest`, and on a hung disk (every thread-pool thread
// blocked, test/support/hung-disk.ts) the streams go on from `rest` instead of waiting forever.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { blockThreadPool } from '../../test/support/hung-disk.ts'
import { collect } from '../http/growing-bytes.ts'
import type { BodyRest } from '../ports.ts'
import type { ByteRange } from '../types.ts'
import { EntryFileWriter, WRITE_STALL_MS } from './disk-writer.ts'
import { GrowingFileBody } from './growing-body.ts'

const KiB = 1024
const HEAD = 100
const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

async function tempFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-growing-'))
  dirs.push(dir)
  return join(dir, 'entry.tmp')
}

/** A `rest` that serves `bytes` and records what it was asked for. */
function restOf(bytes: Buffer): { rest: BodyRest; asked: ByteRange[] } {
  const asked: ByteRange[] = []
  const rest: BodyRest = async (range) => {
    asked.push(range)
    return new Blob([new Uint8Array(bytes.subarray(range.start, range.end + 1))]).stream()
  }
  return { rest, asked }
}

/** Resolves once `writer` has `bytes` body bytes on its file. */
async function onFile(writer: EntryFileWriter, bytes: number): Promise<void> {
  while (writer.onFile < bytes) await writer.progress()
}

describe('a growing body', () => {
  it('streams what is on the file as it grows, waiting at its end, to readers that start at any time', async () => {
    const bytes = randomBytes(1536 * KiB)
    const writer = new EntryFileWriter(await tempFile(), HEAD, bytes.length)
    const { rest, asked } = restOf(bytes)
    const body = new GrowingFileBody(writer, HEAD, bytes.length, rest)
    // One reader from the start, before anything is written; one with a range; one reusing its buffer.
    const early = collect(body.stream())
    const ranged = collect(body.stream({ start: 700 * KiB, end: 900 * KiB - 1 }))
    await writer.write(bytes.subarray(0, 512 * KiB))
    await onFile(writer, 512 * KiB)
    const late = collect(body.stream(undefined, { reuseChunks: false }))
    await writer.write(bytes.subarray(512 * KiB, 1024 * KiB))
    await writer.write(bytes.subarray(1024 * KiB))
    assert.ok((await early).equals(bytes))
    assert.ok((await ranged).equals(bytes.subarray(700 * KiB, 900 * KiB)))
    assert.ok((await late).equals(bytes))
    assert.deepEqual(asked, [], 'nothing from the origin')
    await writer.finish(() => Buffer.alloc(HEAD))
    body.release()
  })

  it('sends its first bytes at once, then, caught up with the writing, waits for a whole read (512 KiB) or 20 ms instead of reading each write', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] })
    const bytes = randomBytes(1024 * KiB)
    const writer = new EntryFileWriter(await tempFile(), HEAD, bytes.length)
    const body = new GrowingFileBody(writer, HEAD, bytes.length, restOf(bytes).rest)
    const reader = body.stream().getReader()
    const writeUpTo = async (from: number, to: number) => {
      for (let at = from; at < to; at += 64 * KiB) {
        await writer.write(bytes.subarray(at, at + 64 * KiB))
        await onFile(writer, at + 64 * KiB)
      }
      // The reader, woken by the last write, looks again.
      await new Promise((resolve) => setImmediate(resolve))
    }
    await writeUpTo(0, 64 * KiB)
    assert.equal((await reader.read()).value?.length, 64 * KiB, 'the first read waits for nothing more')
    let second: number | undefined
    const reading = reader.read().then((chunk) => (second = chunk.value?.length))
    await writeUpTo(64 * KiB, 512 * KiB)
    assert.equal(second, undefined, 'seven 64 KiB writes later, still gathering')
    await writeUpTo(512 * KiB, 576 * KiB)
    await reading
    assert.equal(second, 512 * KiB, 'one read of 512 KiB, not eight of 64 KiB')
    let third: number | undefined
    const gathering = reader.read().then((chunk) => (third = chunk.value?.length))
    await writeUpTo(576 * KiB, 640 * KiB)
    t.mock.timers.tick(19)
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(third, undefined, 'still gathering after 19 ms')
    t.mock.timers.tick(1)
    await gathering
    assert.equal(third, 64 * KiB, 'after 20 ms, what there is')
    await reader.cancel()
    await writer.abort()
    body.release()
  })

  it('goes on from `rest` for the bytes the writer stopped short of, and only those', async () => {
    const bytes = randomBytes(1024 * KiB)
    const writer = new EntryFileWriter(await tempFile(), HEAD, bytes.length)
    const { rest, asked } = restOf(bytes)
    const body = new GrowingFileBody(writer, HEAD, bytes.length, rest)
    await writer.write(bytes.subarray(0, 300 * KiB))
    await onFile(writer, 300 * KiB)
    const reading = collect(body.stream({ start: 100, end: bytes.length - 1 }))
    // The origin's body broke, or the disk failed: the writer gives up.
    await writer.abort()
    assert.ok((await reading).equals(bytes.subarray(100)), 'every byte once, in order')
    assert.deepEqual(asked, [{ start: 300 * KiB, end: bytes.length - 1 }])
    body.release()
  })

  it(`goes on from \`rest\` on a hung disk once a write took ${WRITE_STALL_MS} ms, instead of waiting for it forever`, { timeout: 30_000 }, async () => {
    const file = await tempFile()
    const bytes = randomBytes(512 * KiB)
    const writer = new EntryFileWriter(file, HEAD, bytes.length)
    const { rest, asked } = restOf(bytes)
    const body = new GrowingFileBody(writer, HEAD, bytes.length, rest)
    await writer.write(bytes.subarray(0, 128 * KiB))
    await onFile(writer, 128 * KiB)
    const reader = body.stream().getReader()
    const first = await reader.read()
    assert.equal(first.value?.length, 128 * KiB)
    const unblock = await blockThreadPool(join(file, '..'))
    try {
      // Well under what the writer holds before its caller waits on the disk: nobody would wait
      // on this write but the reader.
      assert.equal(writer.write(bytes.subarray(128 * KiB)), true)
      const chunks = [Buffer.from(first.value ?? [])]
      for (let next = await reader.read(); !next.done; next = await reader.read()) chunks.push(Buffer.from(next.value))
      assert.ok(Buffer.concat(chunks).equals(bytes))
      assert.deepEqual(asked, [{ start: 128 * KiB, end: bytes.length - 1 }])
      assert.equal(writer.failed, true)
    } finally {
      unblock()
    }
    body.release()
  })
})
