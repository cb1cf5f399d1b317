// Cluster mode, as a user runs it: `yatagarasu` with server.workers: 2. Both workers serve, /metrics
// on the primary is the sum over them, SIGHUP (or POST /admin/reload to either worker) reloads both,
// a killed worker is replaced without the service dropping, and SIGTERM drains and exits 0.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, it } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { freePort, send } from '../support/http.ts'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ROOT = join(import.meta.dirname, '../..')
const ADMIN = 'cluster-admin-token-0123456789abcdef'
let s3: TestS3
let dir: string
let configFile: string
let child: ChildProcess
let port: number
let metricsPort: number
const lines: Array<Record<string, unknown>> = []


const config = (extraBuckets = '') => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
metrics: { enabled: true, port: ${metricsPort} }
admin: { token: "${ADMIN}" }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'cluster', endpoint: s3.endpoint })}
${extraBuckets}`

const url = (path: string) => `http://127.0.0.1:${port}${path}`
const health = async () => (await send(`http://127.0.0.1:${port}`, '/health')).json<{ worker: number; config_generation: number }>()
const logged = (match: (line: Record<string, unknown>) => boolean) => eventually(async () => lines.find(match), 'a log line')

/** Worker ids seen answering /health over fresh connections (the primary deals them round robin). */
async function workersSeen(tries = 20): Promise<Map<number, number>> {
  const seen = new Map<number, number>()
  for (let i = 0; i < tries; i++) {
    const h = await health()
    seen.set(h.worker, h.config_generation)
  }
  return seen
}

before(async () => {
  s3 = await startS3()
  await s3.createBucket('cluster')
  await s3.put('cluster', 'a.txt', 'from a worker')
  ;[port, metricsPort] = [await freePort(), await freePort()]
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-cluster-'))
  configFile = join(dir, 'config.yaml')
  await writeFile(configFile, config())
  child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', configFile], {
    cwd: ROOT,
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      // Not a log line.
    }
  })
  await eventually(async () => lines.filter((l) => l.msg === 'yatagarasu listening').length === 2, 'two workers listening')
})

after(async () => {
  if (child.exitCode === null) child.kill('SIGKILL')
  await s3?.stop()
  await rm(dir, { recursive: true, force: true })
})

it('serves from both workers and reports metrics summed over them', async () => {
  assert.deepEqual([...(await workersSeen()).keys()].sort(), [1, 2])
  for (let i = 0; i < 10; i++) assert.equal((await send(url(''), '/files/a.txt')).text, 'from a worker')
  const metrics = (await send(`http://127.0.0.1:${metricsPort}`, '/metrics')).text
  const total = /^http_requests_total\{bucket="files",method="GET",status="200"\} (\d+)$/m.exec(metrics)
  assert.equal(total?.[1], '10', 'the ten object requests, whichever worker answered them')
  assert.match(metrics, /^config_generation 1$/m)
})

it('reloads every worker on SIGHUP', async () => {
  await s3.createBucket('cluster-new')
  await s3.put('cluster-new', 'b.txt', 'new bucket')
  await writeFile(configFile, config(bucketYaml({ name: 'added', prefix: '/added', bucket: 'cluster-new', endpoint: s3.endpoint })))
  child.kill('SIGHUP')
  await eventually(async () => {
    const seen = await workersSeen(6)
    return seen.size === 2 && [...seen.values()].every((generation) => generation === 2)
  }, 'both workers on generation 2')
  for (let i = 0; i < 4; i++) assert.equal((await send(url(''), '/added/b.txt')).text, 'new bucket')
})

it('reloads every worker when one of them is asked through POST /admin/reload', async () => {
  const res = await send(url(''), '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })
  assert.equal(res.status, 200)
  assert.equal(res.json<{ generation: number }>().generation, 3)
  await eventually(async () => {
    const seen = await workersSeen(6)
    return seen.size === 2 && [...seen.values()].every((generation) => generation === 3)
  }, 'both workers on generation 3')
})

it('replaces a killed worker while the other keeps serving', async () => {
  const started = lines.filter((l) => l.msg === 'worker started')
  const victim = started.find((l) => l.worker === 1)
  assert.ok(victim !== undefined)
  process.kill(Number(victim.pid), 'SIGKILL')
  await logged((l) => l.msg === 'worker died; starting a new one' && l.worker === 1)
  for (let i = 0; i < 10; i++) assert.equal((await send(url(''), '/files/a.txt')).status, 200)
  await logged((l) => l.msg === 'worker started' && l.worker === 3)
  // The new worker reads the file as it is now: generation 1 of its own, with the added bucket.
  await eventually(async () => (await workersSeen(6)).has(3), 'the new worker answering')
  for (let i = 0; i < 4; i++) assert.equal((await send(url(''), '/added/b.txt')).status, 200)
})

it('drains and exits 0 on SIGTERM', async () => {
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  assert.equal(await exited, 0)
  assert.ok(lines.some((l) => l.msg === 'shutdown complete'))
})
