// Cold fetches with `server.workers: 2` (the shared disk tier, s3rver behind SigV4 checks), as the
// shipped config runs it: the workers fetch a cold whole object, or a cold slice, once between
// them, whichever worker each client reached; and what the disk will not keep is fetched by each
// worker without waiting for another's. (How a failed or dead worker's fetch lets the others fetch:
// fill-claims.test.ts.)
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { startCluster, type RunningCluster } from '../support/cluster.ts'
import { eventually } from '../support/eventually.ts'
import { send, type RawResponse } from '../support/http.ts'
import { bucketYaml } from '../support/proxy.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const MiB = 1024 * 1024
const CLIENTS = 100
const ADMIN_TOKEN = 'cluster-fills-admin-token-0123456789abcdef'

let s3: TestS3
let cacheDir: string
let c: RunningCluster | undefined

const config = (port: number, metricsPort: number) => `
server:
  address: "127.0.0.1:${port}"
  workers: 2
metrics: { enabled: true, port: ${metricsPort} }
admin: { token: "${ADMIN_TOKEN}" }
cache:
  enabled: true
  layers: [memory, disk]
  ttl_seconds: 300
  max_item_size: 1MB
  slice: { enabled: true, slice_size: 1MB }
  memory: { max_size: 16MB }
  disk: { dir: "${cacheDir}", max_size: 1GB }
buckets:
${bucketYaml({ name: 'media', prefix: '/media', bucket: 'media', endpoint: s3.endpoint, timeout: 30 })}
${bucketYaml({ name: 'tight', prefix: '/tight', bucket: 'media', endpoint: s3.endpoint, timeout: 30, extra: '    cache: { max_size: 512KB }\n' })}
${bucketYaml({ name: 'quick', prefix: '/quick', bucket: 'media', endpoint: s3.endpoint, timeout: 2 })}
`

const running = () => {
  assert.ok(c !== undefined)
  return c
}

/** Requests both workers are answering now (the primary sums the workers' gauges). */
async function inFlight(): Promise<number> {
  const text = (await send(`http://127.0.0.1:${running().metricsPort}`, '/metrics')).text
  const line = text.split('\n').find((l) => l.startsWith('http_requests_in_flight '))
  return Number(line?.split(' ')[1] ?? Number.NaN)
}

/** A GET of `path` on a connection of its own, and how many body bytes it received so far. */
function watchedGet(path: string): { received: () => number; answer: Promise<RawResponse> } {
  const chunks: Buffer[] = []
  let received = 0
  const answer = new Promise<RawResponse>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: running().port, path, agent: false }, (res) => {
        res.on('data', (chunk: Buffer) => {
          chunks.push(chunk)
          received += chunk.length
        })
        res.on('error', reject)
        res.on('end', () => {
          const body = Buffer.concat(chunks)
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: '', json: () => JSON.parse(body.toString()) })
        })
      })
      .on('error', reject)
  })
  // Awaited once the test's checks before it passed.
  answer.catch(() => {})
  return { received: () => received, answer }
}

const rangedGets = (key: string) => s3.getsOf('media', key).filter((r) => r.headers.range !== undefined)

before(async () => {
  s3 = await startS3()
  await s3.createBucket('media')
  cacheDir = await mkdtemp(join(tmpdir(), 'yatagarasu-cluster-fills-'))
  c = await startCluster(config)
})

after(async () => {
  await c?.stop()
  await s3?.stop()
  await rm(cacheDir, { recursive: true, force: true })
})

/**
 * `clients` GETs of `path`, each over its own connection (the primary deals connections to the
 * workers in turn), while the first origin GET is held (`hold`, armed before), until all of them
 * are being answered.
 */
async function herd(path: string, clients: number, hold: { held: Promise<void>; release: () => void }, headers: Record<string, string> = {}) {
  const pending = Promise.all(Array.from({ length: clients }, () => send(`http://127.0.0.1:${running().port}`, path, { headers })))
  await hold.held
  // The worker that did not make the first GET has its clients' requests waiting, not answered
  // from a copy on disk. Two workers and s3rver on a busy 2-core machine: a long deadline
  // (eventually.ts; the origin timeout is 30 s here, so the hold is not taken for a dead origin).
  await eventually(async () => (await inFlight()) === clients, `${clients} requests in flight`, {
    withinMs: 30_000,
    explain: async () => `in flight: ${await inFlight()}, origin GETs: ${s3.requests.filter((r) => r.method === 'GET').length}`,
  })
  hold.release()
  const answers = await pending
  assert.deepEqual([...new Set(await running().workersOf(answers))].sort(), [1, 2], 'both workers answered')
  return answers
}

describe('whole objects with two workers sharing the disk tier', () => {
  for (const [name, size, how, cacheControl] of [
    ['large.bin', 512 * 1024, 'written to disk as it arrives', undefined],
    ['small.bin', 2048, 'held whole, then stored', undefined],
    ['no-cache.bin', 2048, 'stored already stale: no-cache', 'no-cache'],
  ] as const) {
    it(`makes one origin GET for a cold object (${how}) read by ${CLIENTS} clients over both workers`, async () => {
      const body = randomBytes(size)
      await s3.put('media', name, body, cacheControl === undefined ? {} : { CacheControl: cacheControl })
      const answers = await herd(`/media/${name}`, CLIENTS, s3.holdNextGet(0))
      for (const res of answers) {
        assert.equal(res.status, 200)
        assert.ok(res.body.equals(body), 'the object’s bytes')
      }
      assert.equal(s3.getsOf('media', name).length, 1, 'one GET, from one worker')
      assert.equal(answers.filter((res) => res.headers['x-cache'] === 'MISS').length, 1, 'one MISS; the others were answered from its fetch')
      assert.equal(answers.filter((res) => res.headers['cache-status'] === 'yatagarasu; hit; detail=coalesced').length, CLIENTS - 1)
    })
  }

  it('makes one whole GET for a cold object over max_item_size (served by slices) read by 20 clients over both workers', async () => {
    const body = randomBytes(3 * MiB)
    await s3.put('media', 'sliced-herd.bin', body)
    // The first GET's headers (which say the object is over max_item_size) wait until every
    // client's request is being answered.
    const answers = await herd('/media/sliced-herd.bin', 20, s3.holdNextHeaders())
    for (const res of answers) {
      assert.equal(res.status, 200)
      assert.ok(res.body.equals(body), 'the object’s bytes')
    }
    const gets = s3.getsOf('media', 'sliced-herd.bin')
    assert.equal(gets.filter((r) => r.headers.range === undefined).length, 1, 'one whole GET (cancelled once its headers came), from one worker')
    assert.equal(gets.filter((r) => r.headers.range !== undefined).length, 3, 'each 1 MiB slice fetched once')
  })

  /**
   * GETs of `path` over both workers while the first origin GET is held, until clients of
   * `workers` workers were answered meanwhile (the other worker's from a GET of its own). Then the
   * hold ends.
   */
  async function answeredWhileHeld(path: string, key: string, clients: number, workers: 1 | 2) {
    const hold = s3.holdNextGet(64 * 1024)
    const answered: RawResponse[] = []
    const pending = Promise.all(
      Array.from({ length: clients }, () =>
        send(`http://127.0.0.1:${running().port}`, path).then((res) => {
          answered.push(res)
          return res
        })
      )
    )
    await hold.held
    const workersAnswered = async () => new Set(await running().workersOf([...answered])).size
    await eventually(async () => (await workersAnswered()) === workers, `answers from ${workers} worker(s) while the first GET is held`, {
      withinMs: 20_000,
      explain: async () => `answered: ${answered.length} by ${await workersAnswered()} worker(s), GETs: ${s3.getsOf('media', key).length}`,
    })
    hold.release()
    return pending
  }

  it('lets the other worker answer at once an object the disk will not keep (over its bucket’s budget)', async () => {
    const body = randomBytes(600 * 1024)
    await s3.put('media', 'unkept-whole.bin', body)
    // A 600 KB object is over the bucket's 512 KB: the first worker's fetch will not leave it on
    // disk, and lets the other worker fetch as soon as S3's headers say so.
    for (const res of await answeredWhileHeld('/tight/unkept-whole.bin', 'unkept-whole.bin', 20, 2)) {
      assert.equal(res.status, 200)
      assert.ok(res.body.equals(body), 'the object’s bytes')
    }
  })

  it('lets the other worker’s clients read the first worker’s fetch as it grows, before it ends', async () => {
    const body = randomBytes(900 * 1024)
    await s3.put('media', 'growing.bin', body)
    // The fetch sends 128 KiB and holds the rest (a slow S3): it is being written to the shared
    // directory, and both workers' clients read it meanwhile. Before, the other worker's clients
    // waited 2 s for it to be stored, then fetched the object again.
    const hold = s3.holdNextGet(128 * 1024)
    const gets = Array.from({ length: 10 }, () => watchedGet('/media/growing.bin'))
    await hold.held
    try {
      await eventually(async () => gets.every((get) => get.received() > 0), 'every client reading while the GET is held', {
        withinMs: 30_000,
        explain: async () => `received: ${gets.map((get) => get.received()).join(', ')}; GETs: ${s3.getsOf('media', 'growing.bin').length}`,
      })
      assert.equal(s3.getsOf('media', 'growing.bin').length, 1, 'one GET while every client reads')
    } finally {
      hold.release()
    }
    const answers = await Promise.all(gets.map((get) => get.answer))
    for (const res of answers) {
      assert.equal(res.status, 200)
      assert.ok(res.body.equals(body), 'the object’s bytes')
    }
    assert.deepEqual([...new Set(await running().workersOf(answers))].sort(), [1, 2], 'both workers answered')
    assert.equal(s3.getsOf('media', 'growing.bin').length, 1, 'one GET, from one worker')
    assert.equal(answers.filter((res) => res.headers['cache-status'] === 'yatagarasu; hit; detail=coalesced').length, 9)
  })

  it('answers the requests made after a purge with the new version, not the purged growing fill', async () => {
    const [v1, v2] = [randomBytes(300 * 1024), randomBytes(300 * 1024)]
    await s3.put('media', 'purged.bin', v1)
    const hold = s3.holdNextGet(64 * 1024)
    const first = watchedGet('/media/purged.bin')
    await hold.held
    // The object changes and is purged while the first worker's fill of the old version grows.
    await s3.put('media', 'purged.bin', v2)
    const purge = await send(`http://127.0.0.1:${running().port}`, '/admin/cache/purge/media/purged.bin', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    })
    assert.equal(purge.status, 200, purge.text)
    const later = Array.from({ length: 6 }, () => watchedGet('/media/purged.bin'))
    const answered: RawResponse[] = []
    for (const get of later)
      get.answer.then(
        (res) => answered.push(res),
        () => {}
      )
    try {
      // Before, they read the purged fill (held: never answered while it is held).
      await eventually(async () => answered.length === later.length, 'the later requests answered while the old fill is held', {
        withinMs: 30_000,
        explain: async () => `answered: ${answered.length}, whole GETs: ${s3.getsOf('media', 'purged.bin').length}`,
      })
    } finally {
      hold.release()
    }
    for (const res of answered) assert.ok(res.body.equals(v2), `the new version: ${res.headers['cache-status']}`)
    assert.deepEqual([...new Set(await running().workersOf(answered))].sort(), [1, 2], 'both workers answered')
    assert.ok((await first.answer).body.equals(v1), 'the request before the purge gets the version it started with')
  })

  it('lets the other worker’s readers go on with ranged GETs of the same version when the first worker’s fetch stalls', async () => {
    const body = randomBytes(900 * 1024)
    await s3.put('media', 'stalls.bin', body)
    // The first GET sends 256 KiB and stalls: its worker gives up after the bucket's 2 s timeout.
    s3.stallNextGet(256 * 1024)
    const answers = await Promise.all(Array.from({ length: 10 }, () => send(`http://127.0.0.1:${running().port}`, '/quick/stalls.bin')))
    for (const res of answers) {
      assert.equal(res.status, 200)
      assert.ok(res.body.equals(body), 'the object’s bytes')
    }
    assert.deepEqual([...new Set(await running().workersOf(answers))].sort(), [1, 2], 'both workers answered')
    const gets = s3.getsOf('media', 'stalls.bin')
    assert.equal(gets.filter((r) => r.headers.range === undefined).length, 1, 'one whole GET: nobody fetched the object again')
    const etag = answers[0]?.headers.etag
    for (const get of gets.filter((r) => r.headers.range !== undefined)) {
      assert.equal(get.headers['if-match'], etag, 'the rest of the same version')
      const start = Number(/^bytes=(\d+)-/.exec(String(get.headers.range))?.[1])
      assert.ok(start <= 256 * 1024, `the rest from what the file held: ${get.headers.range}`)
    }
  })
})

describe('slices with two workers sharing the disk tier', () => {
  it('makes one origin request for a cold slice read by 100 clients over both workers', async () => {
    const body = randomBytes(8 * MiB)
    await s3.put('media', 'herd.bin', body)
    const range = `bytes=${3 * MiB + 5}-${3 * MiB + 70_000}`
    const wanted = body.subarray(3 * MiB + 5, 3 * MiB + 70_001)
    const answers = await herd('/media/herd.bin', CLIENTS, s3.holdNextGet(64 * 1024), { range })
    for (const res of answers) {
      assert.equal(res.status, 206)
      assert.ok(res.body.equals(wanted), 'the range’s bytes')
    }
    assert.equal(rangedGets('herd.bin').length, 1, 'one ranged GET for the slice, from one worker')
  })

  it('lets the other worker fetch at once a slice the disk will not keep (over its bucket’s budget)', async () => {
    const body = randomBytes(8 * MiB)
    await s3.put('media', 'unkept.bin', body)
    const range = `bytes=${5 * MiB}-${5 * MiB + 999}`
    // The first worker's fetch stalls; the other's clients must not wait for it: a 1 MiB slice is
    // over the bucket's 512 KB, so the first worker's fetch will not leave it on disk.
    const hold = s3.holdNextGet(64 * 1024)
    const pending = Promise.all(Array.from({ length: 20 }, () => send(`http://127.0.0.1:${running().port}`, '/tight/unkept.bin', { headers: { range } })))
    await hold.held
    await eventually(async () => rangedGets('unkept.bin').length === 2, 'the other worker’s own GET while the first is stalled', {
      withinMs: 30_000,
      explain: async () => `ranged GETs: ${rangedGets('unkept.bin').length}, in flight: ${await inFlight()}`,
    })
    hold.release()
    const answers = await pending
    for (const res of answers) {
      assert.equal(res.status, 206)
      assert.ok(res.body.equals(body.subarray(5 * MiB, 5 * MiB + 1000)), 'the range’s bytes')
    }
    assert.deepEqual([...new Set(await running().workersOf(answers))].sort(), [1, 2], 'both workers answered')
  })
})
