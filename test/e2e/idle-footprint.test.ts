// The idle proxy's footprint: a bucket on an S3-compatible endpoint with static keys serves objects
// without loading the AWS SDK, and the optional parts (tracing, Redis, OPA) stay unloaded when not
// configured. Each is tens of MB of memory once loaded, whether used or not.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, it } from 'node:test'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ROOT = join(import.meta.dirname, '../..')
const STARTUP_DEADLINE_MS = 60_000

let s3: TestS3
let dir: string

before(async () => {
  s3 = await startS3()
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-footprint-'))
  await s3.createBucket('footprint')
  await s3.put('footprint', 'hello.txt', 'hello, world')
})

after(async () => {
  await s3?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('idle footprint', () => {
  it('serves a path-style bucket with static keys without loading the AWS SDK or unconfigured parts', async (t) => {
    const config = join(dir, 'config.yaml')
    const loaded = join(dir, 'loaded.txt')
    await writeFile(
      config,
      `
server:
  address: "127.0.0.1:0"
  workers: 1
logging:
  level: info
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'footprint', endpoint: s3.endpoint })}
`
    )
    await writeFile(loaded, '')
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--import', join(ROOT, 'test/support/record-imports.ts'), join(ROOT, 'src/main.ts'), '--config', config],
      { cwd: ROOT, env: { ...process.env, RECORD_IMPORTS_TO: loaded }, stdio: ['ignore', 'pipe', 'inherit'] }
    )
    const exited = new Promise((resolve) => child.once('exit', resolve))
    t.after(async () => {
      child.kill('SIGTERM')
      await exited
    })
    const listening = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the proxy did not start')), STARTUP_DEADLINE_MS)
      createInterface({ input: child.stdout }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg: string; address?: string }
        if (entry.msg === 'yatagarasu listening' && entry.address !== undefined) {
          clearTimeout(timer)
          resolve(entry.address)
        }
      })
    })
    const port = Number((await listening).split(':').at(-1))

    const res = await fetch(`http://127.0.0.1:${port}/media/hello.txt`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'hello, world')
    // The object was signed and fetched by the proxy itself (not a cached answer).
    assert.equal(s3.getsOf('footprint', 'hello.txt').length, 1)

    const packages = (await readFile(loaded, 'utf8')).split('\n')
    // The recording works: the router of the proxy's own endpoints, loaded at start, is listed.
    assert.ok(packages.includes('hono'), packages.join(', '))
    for (const heavy of ['@aws-sdk/client-s3', '@opentelemetry/sdk-node', 'ioredis', '@open-policy-agent/opa-wasm']) {
      assert.ok(!packages.includes(heavy), `${heavy} was loaded`)
    }
  })
})
