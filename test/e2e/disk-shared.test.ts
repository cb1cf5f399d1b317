// The disk tier shared by the workers of one instance (`server.workers: 2`, the disk tier alone,
// s3rver behind SigV4 checks), as a user runs it: a worker serves what another wrote, the
// directory holds `cache.disk.max_size` for all of them (and /metrics says so once, not once per
// worker), a purge through one worker leaves no file another could serve, a restart keeps the
// directory for both, a worker that dies mid-write leaves no temp file behind, one that dies
// before reporting its entry leaves none the ledger does not count, and a reload's smaller
// max_size applies to the directory.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, watch } from 'node:fs'
import { access, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { startCluster, type RunningCluster } from '../support/cluster.ts'
import { eventually } from '../support/eventually.ts'
import { send, type RawResponse } from '../support/http.ts'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'disk-shared-admin-token-0123456789abcdef'
const MAX_SIZE = 3_000_000
const OBJECT_SIZE = 400_000
/** Twelve objects of 400 KB: twice what one worker wrote would fit if each had max_size to itself. */
const OBJECTS = Array.from({ length: 12 }, (_, i) => ({ key: `o${i}.bin`, body: randomBytes(OBJECT_SIZE) }))
const SHARED = { key: 'shared.bin', body: randomBytes(OBJECT_SIZE) }

let s3: TestS3
let cacheDir: string
let c: RunningCluster | undefined

const config = (port: number, metricsPort: number) => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
metrics: { enabled: true, port: ${metricsPort} }
admin: { token: "${ADMIN}" }
cache:
  enabled: true
  layers: [disk]
  ttl_seconds: 300
  max_item_size: 1000000
  disk: { dir: "${cacheDir}", max_size: ${MAX_SIZE} }
buckets:
${bucketYaml({ name: 'files', prefix: '/files', bucket: 'shared-disk', endpoint: s3.endpoint })}
`

const running = () => {
  assert.ok(c !== undefined)
  return c
}
const get = (key: string) => send(`http://127.0.0.1:${running().port}`, `/files/${key}`)
const fileOf = (key: string) => join(cacheDir, `${createHash('sha256').update(`files/${key}`).digest('hex')}.entry`)
const exists = (file: string) => access(file).then(
  () => true,
  () => false
)
const originGets = (key: string) => s3.getsOf('shared-disk', key).length

/** The entry files in the directory and their bytes. */
async function onDisk(): Promise<{ files: number; bytes: number }> {
  let files = 0
  let bytes = 0
  for (const name of await readdir(cacheDir)) {
    if (!name.endsWith('.entry')) continue
    const info = await stat(join(cacheDir, name)).catch(() => undefined)
    if (info === undefined) continue
    files++
    bytes += info.size
  }
  return { files, bytes }
}

/** GETs `key` once (a miss) and waits until its entry is on disk. */
async function fill(key: string, body: Buffer): Promise<void> {
  const res = await get(key)
  assert.equal(res.status, 200)
  assert.ok(res.body.equals(body))
  await eventually(() => exists(fileOf(key)), `the disk entry of ${key}`)
}

/** `count` GETs of `key` over fresh connections: each answer's bytes checked, and which worker and tier answered. */
async function answers(key: string, body: Buffer, count: number): Promise<Array<{ worker: number; cache: string }>> {
  const responses: RawResponse[] = []
  for (let i = 0; i < count; i++) responses.push(await get(key))
  for (const res of responses) {
    assert.equal(res.status, 200)
    assert.ok(res.body.equals(body), `${key}: the object's bytes`)
  }
  const workers = await running().workersOf(responses)
  return responses.map((res, i) => ({ worker: workers[i]!, cache: String(res.headers['x-cache']) }))
}

/**
 * The most recently filled of `objects` still on disk. Which entries the ledger evicts follows
 * the order the workers' reports reach it (each worker reports every 100 ms), not quite the
 * order of the fills on a busy machine.
 */
async function newestKept(objects: typeof OBJECTS): Promise<(typeof OBJECTS)[number]> {
  for (const object of [...objects].reverse()) if (await exists(fileOf(object.key))) return object
  throw new Error('none of them is on disk')
}

const workersIn = (seen: Array<{ worker: number }>) => [...new Set(seen.map((s) => s.worker))].sort()

/** Waits until two workers answer again (after one was killed: its replacement is listening). */
async function twoWorkersServing(): Promise<void> {
  await eventually(
    async () => {
      const seen = new Set<number>()
      for (let i = 0; i < 6; i++) {
        const health = await send(`http://127.0.0.1:${running().port}`, '/health').catch(() => undefined)
        if (health?.status === 200) seen.add(health.json<{ worker: number }>().worker)
      }
      return seen.size === 2
    },
    'two workers serving',
    { withinMs: 60_000 }
  )
}

before(async () => {
  s3 = await startS3()
  await s3.createBucket('shared-disk')
  for (const { key, body } of [SHARED, ...OBJECTS]) await s3.put('shared-disk', key, body)
  cacheDir = await mkdtemp(join(tmpdir(), 'yatagarasu-disk-shared-'))
  c = await startCluster(config)
})

after(async () => {
  await c?.stop()
  await s3?.stop()
  await rm(cacheDir, { recursive: true, force: true })
})

describe('the disk tier shared by two workers', () => {
  it('serves from every worker what one of them wrote, with one origin GET', async () => {
    await fill(SHARED.key, SHARED.body)
    const seen = await answers(SHARED.key, SHARED.body, 8)
    assert.deepEqual(workersIn(seen), [1, 2], 'both workers answered')
    assert.deepEqual(
      seen.map((s) => s.cache),
      Array(8).fill('HIT'),
      'every answer is a disk hit, on the worker that wrote the entry and on the other'
    )
    assert.equal(originGets(SHARED.key), 1, 'S3 was asked once')
  })

  it('keeps the directory within max_size for all the workers, and reports its size once', async () => {
    for (const { key, body } of OBJECTS) await fill(key, body)
    // Each worker wrote about six: 2.4 MB each, under max_size on its own; together, over it.
    await eventually(async () => (await onDisk()).bytes <= MAX_SIZE, 'the directory back within max_size', {
      explain: async () => JSON.stringify(await onDisk()),
    })
    const held = await onDisk()
    assert.ok(held.bytes > MAX_SIZE - 2 * (OBJECT_SIZE + 4096), `the directory is kept nearly full: ${JSON.stringify(held)}`)
    // The newest entries stay, and both workers serve them from disk.
    const newest = await newestKept(OBJECTS)
    assert.ok(OBJECTS.indexOf(newest) >= OBJECTS.length - 3, `one of the last fills is kept: ${newest.key}`)
    const seen = await answers(newest.key, newest.body, 6)
    assert.deepEqual(workersIn(seen), [1, 2])
    assert.deepEqual(
      seen.map((s) => s.cache),
      Array(6).fill('HIT')
    )
    assert.equal(originGets(newest.key), 1)

    // The primary sums the workers' metrics: the shared directory is counted once.
    const metricsUrl = `http://127.0.0.1:${running().metricsPort}`
    await eventually(
      async () => {
        const metrics = (await send(metricsUrl, '/metrics')).text
        const bytes = Number(/^cache_size_bytes\{tier="disk"\} (\d+)$/m.exec(metrics)?.[1])
        const entries = Number(/^cache_entries\{tier="disk"\} (\d+)$/m.exec(metrics)?.[1])
        const now = await onDisk()
        return bytes === now.bytes && entries === now.files
      },
      'cache_size_bytes and cache_entries of the disk tier equal to the directory',
      { explain: async () => `${(await send(metricsUrl, '/metrics')).text.split('\n').filter((l) => l.startsWith('cache_')).join('\n')}\non disk: ${JSON.stringify(await onDisk())}` }
    )
    // /admin/cache/stats, from either worker, says the same.
    const stats = await send(`http://127.0.0.1:${running().port}`, '/admin/cache/stats', { headers: { authorization: `Bearer ${ADMIN}` } })
    const disk = stats.json<{ tiers: { disk: { bytes: number; entries: number; evictions: number } } }>().tiers.disk
    assert.equal(disk.bytes, (await onDisk()).bytes)
    assert.ok(disk.evictions >= 1, `the ledger evicted: ${JSON.stringify(disk)}`)
  })

  it('purges through one worker for all: the file is gone when the purge answers, and every worker fetches the new object', async () => {
    const object = await newestKept(OBJECTS)
    const file = fileOf(object.key)
    const updated = randomBytes(OBJECT_SIZE)
    await s3.put('shared-disk', object.key, updated)
    const purge = await send(`http://127.0.0.1:${running().port}`, `/admin/cache/purge/files/${object.key}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    })
    assert.equal(purge.status, 200)
    assert.equal(await exists(file), false, 'the purge answered once the file was deleted')
    const seen = await answers(object.key, updated, 6)
    assert.deepEqual(workersIn(seen), [1, 2], 'both workers answered, with the new bytes')

    // A prefix purge empties the directory.
    const all = await send(`http://127.0.0.1:${running().port}`, '/admin/cache/purge/files/*', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    })
    assert.equal(all.status, 200)
    assert.deepEqual(await onDisk(), { files: 0, bytes: 0 })
  })

  it('keeps the directory across a restart: both workers serve what was there', async () => {
    const kept = OBJECTS[0]!
    await fill(kept.key, kept.body)
    const before = originGets(kept.key)
    const exited = new Promise((resolve) => running().child.once('exit', resolve))
    running().child.kill('SIGTERM')
    await exited
    await running().stop()
    c = await startCluster(config)
    const seen = await answers(kept.key, kept.body, 6)
    assert.deepEqual(workersIn(seen), [1, 2])
    assert.deepEqual(
      seen.map((s) => s.cache),
      Array(6).fill('HIT')
    )
    assert.equal(originGets(kept.key), before, 'no origin GET after the restart')
  })

  it('deletes the temp file of a worker that dies mid-write', async () => {
    const key = 'dying.bin'
    await s3.put('shared-disk', key, randomBytes(OBJECT_SIZE))
    const hold = s3.holdNextGet(64 * 1024)
    // The connection dies with the worker.
    const request = get(key).catch(() => undefined)
    await hold.held
    const temps = async () => (await readdir(cacheDir)).filter((name) => name.endsWith('.tmp'))
    const [temp] = await eventually(async () => ((await temps()).length > 0 ? temps() : undefined), "the fill's temp file")
    // <sha-256>.entry.<pid>.<random>.tmp
    const pid = Number(temp?.split('.')[2])
    assert.ok(Number.isInteger(pid) && pid !== process.pid, `the writer's pid in ${temp}`)
    process.kill(pid, 'SIGKILL')
    await eventually(async () => (await temps()).length === 0, 'the temp file deleted by the primary', {
      explain: async () => (await temps()).join(', '),
    })
    hold.release()
    await request
    await twoWorkersServing()
  })

  it('counts a file whose writer died before reporting it: a purge deletes it, and the new object is served', async () => {
    const key = 'orphan/x.bin'
    const old = randomBytes(OBJECT_SIZE)
    await s3.put('shared-disk', key, old)
    const hold = s3.holdNextGet(64 * 1024)
    const request = get(key).catch(() => undefined)
    await hold.held
    const temp = await eventually(async () => (await readdir(cacheDir)).find((name) => name.endsWith('.tmp')), "the fill's temp file")
    const pid = Number(temp.split('.')[2])
    const file = fileOf(key)
    // The writer dies as soon as the entry is in place, before its report (every 100 ms) leaves.
    const watcher = watch(cacheDir, () => {
      if (!existsSync(file)) return
      watcher.close()
      process.kill(pid, 'SIGKILL')
    })
    hold.release()
    await request
    // Logged once the primary has handled the death (and queued the count of what it left).
    await running().logged((l) => l.msg === 'worker died; starting a new one' && l.pid === pid)
    assert.ok(existsSync(file), 'the entry was in place before its writer died')
    await twoWorkersServing()

    const updated = randomBytes(OBJECT_SIZE)
    await s3.put('shared-disk', key, updated)
    const purge = await send(`http://127.0.0.1:${running().port}`, '/admin/cache/purge/files/orphan/*', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    })
    assert.equal(purge.status, 200)
    assert.equal(existsSync(file), false, 'the purge deleted it')
    await answers(key, updated, 4)
  })

  it('applies a smaller max_size on reload to the directory, without rebuilding it', async () => {
    for (const { key, body } of OBJECTS.slice(0, 6)) await fill(key, body)
    assert.ok((await onDisk()).bytes > 2_000_000)
    const smaller = 1_000_000
    // A fill another worker is writing: a rebuild of the index would delete it.
    const writing = join(cacheDir, `${'0'.repeat(64)}.entry.${process.pid}.fill.tmp`)
    await writeFile(writing, 'a fill in progress')
    await writeFile(running().configFile, config(running().port, running().metricsPort).replace(`max_size: ${MAX_SIZE}`, `max_size: ${smaller}`))
    running().child.kill('SIGHUP')
    await eventually(async () => (await onDisk()).bytes <= smaller, 'the directory within the new max_size', {
      withinMs: 30_000,
      explain: async () => JSON.stringify(await onDisk()),
    })
    const kept = await newestKept(OBJECTS.slice(0, 6))
    const seen = await answers(kept.key, kept.body, 4)
    assert.equal(workersIn(seen).length, 2)
    assert.deepEqual(
      seen.map((s) => s.cache),
      Array(4).fill('HIT'),
      'what stays is served from disk by every worker'
    )
    assert.equal(existsSync(writing), true, 'the limits changed without a rebuild')
  })
})
