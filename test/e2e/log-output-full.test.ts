// Standard output on a disk that fills up, for real: the proxy runs as its own process with its
// standard output on a file in a 256 KiB tmpfs (mounted by the test, which runs as root in CI) and
// logs a line per request until the disk is full. It keeps serving, says so once on standard
// error, and still exits on SIGTERM. (Before, the write error killed it, and its exit hung forever
// in the log library's synchronous flush: a process that neither served nor exited.)
import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { freePort, send } from '../support/http.ts'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ROOT = join(import.meta.dirname, '../..')
const BYTES = randomBytes(2048)

let s3: TestS3
let dir: string
let logs: string
let mounted = false
let child: ChildProcessWithoutNullStreams | undefined

before(async () => {
  s3 = await startS3()
  await s3.createBucket('logged')
  await s3.put('logged', 'object.bin', BYTES)
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-log-full-'))
  logs = join(dir, 'logs')
  await mkdir(logs)
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', logs], { stdio: 'pipe' })
  } catch (err) {
    throw new Error(`this test mounts a 256 KiB tmpfs as a full disk and needs root (CI runs as root): ${(err as Error).message}`)
  }
  mounted = true
})

after(async () => {
  child?.kill('SIGKILL')
  await s3?.stop()
  if (mounted) execFileSync('umount', [logs])
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('standard output on a full disk', () => {
  it('keeps serving, says so once on standard error, and still exits on SIGTERM', { timeout: 120_000 }, async () => {
    const port = await freePort()
    const config = join(dir, 'config.yaml')
    await writeFile(
      config,
      `
server:
  address: "127.0.0.1:${port}"
logging:
  level: info
buckets:
${bucketYaml({ name: 'logged', prefix: '/l', bucket: 'logged', endpoint: s3.endpoint })}
`
    )
    const out = await open(join(logs, 'proxy.log'), 'w')
    const spawned = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', config], {
      cwd: ROOT,
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', out.fd, 'pipe'],
    }) as unknown as ChildProcessWithoutNullStreams
    child = spawned
    await out.close()
    const exited = new Promise<number | null>((resolve) => spawned.on('exit', resolve))
    let stderr = ''
    const told = new Promise<void>((resolve) =>
      spawned.stderr.on('data', (d: Buffer) => {
        stderr += d.toString()
        if (stderr.includes('log output failed')) resolve()
      })
    )
    let up = false
    for (let i = 0; i < 600 && !up; i++) {
      up = await send(`http://127.0.0.1:${port}`, '/health').then((r) => r.status === 200, () => false)
      if (!up) await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.ok(up, 'the proxy started')

    // A request line each, ~300 bytes: the 256 KiB disk is full after about a thousand.
    let failed = false
    void told.then(() => (failed = true))
    let requests = 0
    while (!failed && requests < 20_000) {
      const res = await send(`http://127.0.0.1:${port}`, '/l/object.bin')
      assert.equal(res.status, 200, `request ${requests} answered`)
      requests++
      // The lines go out every 250 ms, or per 64 KiB: give the writes a turn now and then.
      if (requests % 200 === 0) await new Promise((resolve) => setTimeout(resolve, 300))
    }
    assert.ok(failed, `standard error told of the failure after ${requests} requests: ${stderr}`)
    const report = JSON.parse(stderr.split('\n').find((line) => line.includes('log output failed')) ?? '{}') as { code?: string }
    assert.equal(report.code, 'ENOSPC')

    // Still serving, with every line it logs failing.
    for (let i = 0; i < 50; i++) {
      const res = await send(`http://127.0.0.1:${port}`, '/l/object.bin')
      assert.equal(res.status, 200)
      assert.deepEqual(res.body, BYTES)
    }
    assert.equal(stderr.split('log output failed').length - 1, 1, 'told once')
    assert.equal(spawned.exitCode, null, 'still running')

    spawned.kill('SIGTERM')
    assert.equal(await exited, 0, 'exits on SIGTERM')
  })
})
