// Another worker's fill read from its file as it grows (other-workers-file.ts), with only the file
// and the fill's end to go by: a real EntryFileWriter writes a real file, and the reader looks at
// the file's size on its own descriptor. Streams get every byte as it lands; when the fill ends
// short, or the file stands still past the stall limit with no end, they go on from `rest` for
// exactly the missing bytes. (Across processes: test/e2e/cluster-fills.test.ts.)
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { collect } from '../http/growing-bytes.ts'
import type { BodyRest } from '../ports.ts'
import type { ByteRange } from '../types.ts'
import { EntryFileWriter } from './disk-writer.ts'
import { GrowingFileBody } from './growing-body.ts'
import { OtherWorkersFile } from './other-workers-file.ts'

const KiB = 1024
const HEAD = 100
const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

/** A writer of a new temp file, and a body reading that file as another worker would. */
async function fill(bytes: Buffer, stallMs = 30_000) {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-other-file-'))
  dirs.push(dir)
  const path = join(dir, 'entry.tmp')
  const writer = new EntryFileWriter(path, HEAD, bytes.length)
  await writer.whereGrowing()
  const ended = Promise.withResolvers<boolean>()
  const asked: ByteRange[] = []
  const rest: BodyRest = async (range) => {
    asked.push(range)
    return new Blob([new Uint8Array(bytes.subarray(range.start, range.end + 1))]).stream()
  }
  const file = new OtherWorkersFile(await open(path, 'r'), HEAD, bytes.length, ended.promise, stallMs)
  return { writer, end: ended.resolve, asked, body: new GrowingFileBody(file, HEAD, bytes.length, rest) }
}


/** Resolves once `writer` has `bytes` body bytes on its file. */
async function onFile(writer: EntryFileWriter, bytes: number): Promise<void> {
  while (writer.onFile < bytes) await writer.progress()
}

describe('another worker’s growing file', () => {
  it('streams each byte once it is on the file, to readers that start before, during and after the writing', async () => {
    const bytes = randomBytes(1536 * KiB)
    const { writer, end, asked, body } = await fill(bytes)
    const early = collect(body.stream())
    const ranged = collect(body.stream({ start: 700 * KiB, end: 900 * KiB - 1 }))
    let firstChunk = 0
    const reader = body.stream().getReader()
    const first = reader.read().then((chunk) => (firstChunk = chunk.value?.length ?? 0))
    await writer.write(bytes.subarray(0, 300 * KiB))
    await onFile(writer, 300 * KiB)
    await first
    assert.ok(firstChunk > 0 && firstChunk <= 300 * KiB, `a reader gets what is on the file before the rest is written: ${firstChunk}`)
    await reader.cancel()
    const middle = collect(body.stream({ start: 200 * KiB, end: 1200 * KiB - 1 }))
    await writer.write(bytes.subarray(300 * KiB))
    await writer.finish(() => Buffer.alloc(HEAD))
    end(true)
    const late = collect(body.stream())
    assert.ok((await early).equals(bytes))
    assert.ok((await ranged).equals(bytes.subarray(700 * KiB, 900 * KiB)))
    assert.ok((await middle).equals(bytes.subarray(200 * KiB, 1200 * KiB)))
    assert.ok((await late).equals(bytes))
    assert.deepEqual(asked, [], 'nothing from the origin')
    body.release()
  })

  it('goes on from `rest` for exactly the bytes the fill did not write when it ends short', async () => {
    const bytes = randomBytes(1024 * KiB)
    const { writer, end, asked, body } = await fill(bytes)
    const whole = collect(body.stream())
    const tail = collect(body.stream({ start: 900 * KiB, end: 1024 * KiB - 1 }))
    await writer.write(bytes.subarray(0, 400 * KiB))
    await onFile(writer, 400 * KiB)
    await writer.abort()
    end(false)
    assert.ok((await whole).equals(bytes))
    assert.ok((await tail).equals(bytes.subarray(900 * KiB)))
    assert.deepEqual(
      asked.sort((a, b) => a.start - b.start),
      [
        { start: 400 * KiB, end: 1024 * KiB - 1 },
        { start: 900 * KiB, end: 1024 * KiB - 1 },
      ]
    )
    body.release()
  })

  it('goes on from `rest` when the file stands still past the stall limit and no end came', async () => {
    const bytes = randomBytes(512 * KiB)
    const { writer, asked, body } = await fill(bytes, 300)
    await writer.write(bytes.subarray(0, 128 * KiB))
    await onFile(writer, 128 * KiB)
    // The fill's end never comes (its primary is gone, say): the reader does not wait for ever.
    assert.ok((await collect(body.stream())).equals(bytes))
    assert.deepEqual(asked, [{ start: 128 * KiB, end: 512 * KiB - 1 }])
    await writer.abort()
    body.release()
  })
})
