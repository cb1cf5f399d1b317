import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, open, openSync, readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { accessLogOf, type AccessLogLine } from './access-log.ts'
import { createLogger, LineBatch, lineOutput } from './log.ts'

const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-log-'))
after(() => rm(dir, { recursive: true, force: true }))

/** A LineBatch writing to a real file, and a way to read what reached the file. */
function fileBatch(name: string, maxLength?: number): { batch: LineBatch; written: () => Promise<string>; path: string; output: ReturnType<typeof lineOutput> } {
  const path = join(dir, name)
  const output = lineOutput({ dest: path, maxLength })
  const batch = new LineBatch(output)
  const written = async () => {
    await new Promise<void>((resolve, reject) => batch.flush((err) => (err ? reject(err) : resolve())))
    return readFile(path, 'utf8')
  }
  after(() => {
    batch.stop()
    output.end()
  })
  return { batch, written, path, output }
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

  it('calls flush back even when the output drops a line over its maxLength', async () => {
    const { batch, written, output } = fileBatch('drop.log', 4096)
    let dropped = 0
    output.on('drop', () => dropped++)
    batch.writeAscii('{"before":1}\n')
    assert.equal(await written(), '{"before":1}\n')
    // A batch larger than maxLength is dropped whole by sonic-boom: the flush still answers.
    batch.writeAscii(`{"big":"${'x'.repeat(5000)}"}\n`)
    assert.equal(await written(), '{"before":1}\n')
    assert.equal(dropped, 1)
    batch.writeAscii('{"after":1}\n')
    assert.equal(await written(), '{"before":1}\n{"after":1}\n')
  })

  it('writes the gathered lines at exit even when the thread pool is busy', async () => {
    const { batch, path, output } = fileBatch('exit.log')
    await new Promise((resolve) => output.once('ready', resolve))
    // Every libuv pool thread blocked (opening FIFOs nobody writes to), as a busy disk tier would.
    const fifos = [0, 1, 2, 3].map((i) => join(dir, `busy-${i}.fifo`))
    const opened = fifos.map((fifo) => {
      execFileSync('mkfifo', [fifo])
      return new Promise<number>((resolve, reject) => open(fifo, 'r', (err, fd) => (err ? reject(err) : resolve(fd))))
    })
    try {
      batch.writeAscii('{"msg":"shutdown complete"}\n')
      batch.flushSync()
      // What process.exit() would leave behind: only what was written synchronously.
      assert.equal(readFileSync(path, 'utf8'), '{"msg":"shutdown complete"}\n')
    } finally {
      // O_RDWR never blocks on Linux and gives each FIFO a writer, so a reader's open() returns
      // whether its pool thread got there already or only gets there later (a write-only
      // O_NONBLOCK open fails with ENXIO when it has not, and leaves that thread blocked forever).
      const writers = fifos.map((fifo) => openSync(fifo, constants.O_RDWR))
      for (const fd of await Promise.all(opened)) closeSync(fd)
      for (const fd of writers) closeSync(fd)
    }
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

describe('logging.format: text', () => {
  it('writes human-readable lines to stdout', () => {
    const script = `import { createLogger } from ${JSON.stringify(join(import.meta.dirname, 'log.ts'))}
createLogger({ level: 'info', format: 'text' }).info({ bucket: 'media' }, 'ready to serve')`
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' })
    assert.match(out, /INFO: ready to serve\n/)
    assert.match(out, /bucket: "media"/)
  })
})
