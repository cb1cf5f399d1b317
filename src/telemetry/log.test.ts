import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { accessLogOf, type AccessLogLine } from './access-log.ts'
import { createLogger, LineBatch, lineOutput } from './log.ts'

const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-log-'))
after(() => rm(dir, { recursive: true, force: true }))

/** A LineBatch writing to a real file, and a way to read what reached the file. */
function fileBatch(name: string): { batch: LineBatch; written: () => Promise<string> } {
  const path = join(dir, name)
  const output = lineOutput({ dest: path })
  const batch = new LineBatch(output)
  const written = async () => {
    await new Promise<void>((resolve, reject) => batch.flush((err) => (err ? reject(err) : resolve())))
    return readFile(path, 'utf8')
  }
  after(() => {
    batch.stop()
    output.end()
  })
  return { batch, written }
}

const line = (path: string): AccessLogLine => ({
  request_id: 'r-1',
  client_ip: '192.0.2.1',
  method: 'GET',
  path,
  status: 200,
  bytes: 1,
  complete: true,
  duration_ms: 0.5,
  bucket: 'b',
  replica: undefined,
  error: undefined,
  reason: undefined,
  trace_id: undefined,
})

describe('LineBatch', () => {
  it('writes ASCII and UTF-8 lines byte-exact and in order, across batch boundaries', async () => {
    const { batch, written } = fileBatch('order.log')
    const expected: string[] = []
    // ~200 KiB: several 64 KiB batches, each line landing where the previous one ended.
    for (let i = 0; i < 3000; i++) {
      const text = i % 3 === 0 ? `{"n":${i},"p":"/日本/ü/${i}"}\n` : `{"n":${i},"p":"/plain/${i}"}\n`
      expected.push(text)
      if (i % 3 === 0) batch.write(text)
      else batch.writeAscii(text)
    }
    assert.equal(await written(), expected.join(''))
  })

  it('writes a line larger than a batch whole, after the lines before it', async () => {
    const { batch, written } = fileBatch('large.log')
    const large = `{"big":"${'é'.repeat(40_000)}"}\n`
    batch.writeAscii('{"first":1}\n')
    batch.write(large)
    batch.writeAscii('{"last":1}\n')
    assert.equal(await written(), '{"first":1}\n' + large + '{"last":1}\n')
  })

  it('carries the access log: plain lines and lines that need escaping read back as pino writes them', async () => {
    const { batch, written } = fileBatch('access.log')
    const logger = createLogger({ level: 'info', format: 'json' }, batch)
    const log = accessLogOf(logger)
    assert.ok(log)
    const paths = ['/b/plain.txt', '/b/日本.txt', '/b/"q"\\x', '/b/next.txt']
    for (const path of paths) {
      log(line(path))
      logger.info(line(path), 'request')
    }
    const lines = (await written()).trimEnd().split('\n').map((l) => ({ ...JSON.parse(l), time: 0 }))
    assert.equal(lines.length, paths.length * 2)
    for (let i = 0; i < paths.length; i++) {
      assert.equal(lines[2 * i].path, paths[i])
      assert.deepEqual(lines[2 * i], lines[2 * i + 1])
    }
  })
})
