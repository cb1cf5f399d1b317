// The `yatagarasu` executable: --check like `nginx -t`, refusing to start on a bad config, and
// draining an in-flight download on SIGTERM before exiting 0.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ROOT = join(import.meta.dirname, '../..')
const FIXTURES = join(ROOT, 'test/support/fixtures/config')

function run(args: string[], env: Record<string, string> = {}) {
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

async function finish(args: string[], env: Record<string, string> = {}) {
  const child = run(args, env)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  return { code, stdout, stderr }
}

let s3: TestS3
let dir: string

before(async () => {
  s3 = await startS3()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-cli-'))
})

after(async () => {
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('yatagarasu --check', () => {
  it('exits 0 for a valid config', async () => {
    const { code, stdout } = await finish(['--check', '--config', join(FIXTURES, 'global-jwt.yaml')])
    assert.equal(code, 0)
    assert.match(stdout, /global-jwt\.yaml is valid: 1 bucket\(s\)/)
  })

  it('exits 1 and names file, key and reason for an invalid config', async () => {
    const file = join(FIXTURES, 'unknown-key.yaml')
    const { code, stderr } = await finish(['--check', '--config', file])
    assert.equal(code, 1)
    assert.match(stderr, new RegExp(`invalid configuration in ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`))
    assert.match(stderr, /buckets\[0\]\(media\)\.s3\.regoin: unknown key/)
  })

  it('refuses to start with an invalid config', async () => {
    const { code, stderr } = await finish(['--config', join(FIXTURES, 'duplicate-prefix.yaml')])
    assert.equal(code, 1)
    assert.match(stderr, /already used by buckets\[0\]/)
  })
})

describe('start-up', () => {
  it('exits 1 with one line naming the address when the port is in use, no stack trace', async () => {
    const taken = http.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    const port = (taken.address() as { port: number }).port
    const config = join(dir, 'port-in-use.yaml')
    await writeFile(config, `server:\n  address: "127.0.0.1:${port}"\nbuckets:\n${bucketYaml({ name: 'a', prefix: '/a', bucket: 'a', endpoint: s3.endpoint })}`)
    try {
      const { code, stdout, stderr } = await finish(['--config', config])
      assert.equal(code, 1)
      const output = stdout + stderr
      assert.match(output, new RegExp(`cannot start: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE \\(the port is in use\\)`))
      assert.doesNotMatch(output, /\n\s+at /, 'no stack trace')
    } finally {
      taken.close()
    }
  })
})

describe('signals', () => {
  it('finishes a download in flight on SIGTERM, then exits 0', async () => {
    const payload = randomBytes(20 * 1024 * 1024)
    await s3.createBucket('cli-media')
    await s3.put('cli-media', 'big.bin', payload)
    const config = join(dir, 'config.yaml')
    await writeFile(config, `
server:
  address: "127.0.0.1:0"
logging:
  level: info
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'cli-media', endpoint: s3.endpoint })}
`)
    const child = run(['--config', config])
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    const logged = new Map<string, (entry: { address?: string }) => void>()
    const nextLog = (msg: string) => new Promise<{ address?: string }>((resolve) => logged.set(msg, resolve))
    const listening = nextLog('yatagarasu listening')
    const draining = nextLog('shutting down: draining requests in flight')
    const seen: string[] = []
    const stdoutClosed = new Promise((resolve) => child.stdout.once('close', resolve))
    createInterface({ input: child.stdout }).on('line', (line) => {
      const entry = JSON.parse(line) as { msg: string; address?: string }
      seen.push(entry.msg)
      logged.get(entry.msg)?.(entry)
    })
    const port = Number((await listening).address?.split(':').at(-1))
    assert.ok(port > 0)

    const body = new Promise<Buffer>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/media/big.bin', agent: false }, (res) => {
        res.pause()
        child.kill('SIGTERM')
        const chunks: Buffer[] = []
        // The paused download cannot finish (20 MiB exceed the socket buffers) until the proxy
        // has begun draining.
        void draining.then(() => res.resume())
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => (res.complete ? resolve(Buffer.concat(chunks)) : reject(new Error('truncated'))))
        res.on('error', reject)
      }).on('error', reject)
    })
    const received = await body
    assert.equal(createHash('sha256').update(received).digest('hex'), createHash('sha256').update(payload).digest('hex'))
    assert.equal(await exited, 0)
    // The last lines, written just before the exit, reached stdout: the drained download's access
    // line, then "shutdown complete".
    await stdoutClosed
    assert.ok(seen.includes('request'), `no access line in ${seen.join(', ')}`)
    assert.equal(seen.at(-1), 'shutdown complete')
  })
})
