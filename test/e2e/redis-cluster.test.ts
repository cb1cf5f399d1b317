// The Redis tier on a real Redis Cluster (3 masters, 3 replicas; test/support/redis-cluster.ts),
// through the running proxy and s3rver: hits served from the cluster, TTLs, keys over every
// master, purges broadcast between two instances, rate-limit counters shared by two instances,
// and failures under open-loop load: a master killed, a master that hangs (SIGSTOP), and the
// cluster losing its quorum. Every answer must stay a 200 with the right bytes, latency bounded
// (a dead or hung node costs a few requests one command timeout, not every request), and hits
// must come back once a replica has taken over. Latency is compared with a proxy without cache
// sent the same requests at the same moments, so that a machine busy with other work (which
// slows the origin as much) is not mistaken for a slow Redis tier. The figures go to the test
// diagnostics.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { after, before, describe, it, type TestContext } from 'node:test'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { percentile, startOpenLoop, type Sample } from '../support/open-loop.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { startRedisCluster, type ClusterNode, type TestRedisCluster } from '../support/redis-cluster.ts'
import { startS3, type TestS3 } from '../support/s3.ts'

const ADMIN = 'admin-token-that-is-long-enough-0123456789'
/** cache.redis.timeout_ms: what a request pays when it waits on a node that does not answer. */
const TIMEOUT_MS = 100
/**
 * The p99 bound outside the seconds the cluster reports `fail` (and during a lost quorum), unless
 * the origin alone (a proxy without cache, sent the same requests) is slower on this machine at
 * that moment: then one Redis timeout above the origin's p99 (boundOver).
 */
const P99_BOUND_MS = 250
const OBJECTS = 60
const BUCKET = 'redis-cluster'

let s3: TestS3
const bodies = new Map<string, Buffer>()
const proxies: TestProxy[] = []
const clusters: TestRedisCluster[] = []

async function cluster(): Promise<TestRedisCluster> {
  const started = await startRedisCluster()
  clusters.push(started)
  return started
}

/** A proxy whose cache is the cluster, once its client is connected (see redisReady). */
async function proxy(c: TestRedisCluster, keyPrefix: string, layers = '[redis]', redis = ''): Promise<TestProxy> {
  const started = await startTestProxy(`
server:
  address: "127.0.0.1:0"
admin:
  token: "${ADMIN}"
cache:
  enabled: true
  layers: ${layers}
  ttl_seconds: 300
  max_item_size: 8KB
  memory: { max_size: 1MB }
  redis: { cluster_nodes: ${JSON.stringify(c.seeds)}, key_prefix: "${keyPrefix}", timeout_ms: ${TIMEOUT_MS}${redis} }
buckets:
${bucketYaml({ name: 'rc', prefix: '/rc', bucket: BUCKET, endpoint: s3.endpoint })}`)
  proxies.push(started)
  await redisReady(c, started, keyPrefix)
  return started
}

const path = (name: string) => `/rc/${name}`
const stored = async (c: TestRedisCluster, id: string) => (await c.command(await c.masterOf(id), 'EXISTS', id)) === 1

let probes = 0

/**
 * Waits until the proxy's cluster client is connected (until then every lookup is a miss and
 * nothing is stored): it fetches fresh objects until one of them shows up in the cluster.
 */
async function redisReady(c: TestRedisCluster, p: TestProxy, keyPrefix: string): Promise<void> {
  const sent: string[] = []
  await eventually(async () => {
    const name = `probe-${probes++}.bin`
    await s3.put(BUCKET, name, 'probe', { CacheControl: 'public, max-age=600' })
    await send(p.url, path(name))
    sent.push(name)
    for (const n of sent) if (await stored(c, `${keyPrefix}rc/${n}`)) return true
    return false
  }, 'the proxy to store an object in the cluster')
}

/**
 * Objects whose cache keys (`<prefix>rc/<name>`) live on the masters: `counts[i]` of them on the
 * i-th master of `masters`.
 */
async function objectsOn(c: TestRedisCluster, keyPrefix: string, masters: ClusterNode[], counts: number[]): Promise<Map<string, ClusterNode>> {
  const chosen = new Map<string, ClusterNode>()
  const wanted = new Map(masters.map((m, i) => [m, counts[i] ?? 0]))
  for (const name of bodies.keys()) {
    const master = await c.masterOf(`${keyPrefix}rc/${name}`)
    if ((wanted.get(master) ?? 0) === 0) continue
    wanted.set(master, (wanted.get(master) ?? 0) - 1)
    chosen.set(name, master)
  }
  assert.ok([...wanted.values()].every((n) => n === 0), 'enough objects on every master')
  return chosen
}

/** Fetches the objects through the proxy and waits until the cluster has every one. */
async function warm(c: TestRedisCluster, p: TestProxy, keyPrefix: string, names: Iterable<string>): Promise<void> {
  for (const name of names) {
    await send(p.url, path(name))
    await eventually(() => stored(c, `${keyPrefix}rc/${name}`), `${name} to be stored in the cluster`)
  }
}

before(async () => {
  s3 = await startS3()
  await s3.createBucket(BUCKET)
  for (let i = 0; i < OBJECTS; i++) {
    const body = randomBytes(2048)
    bodies.set(`obj-${i}.bin`, body)
    await s3.put(BUCKET, `obj-${i}.bin`, body, { CacheControl: 'public, max-age=600' })
  }
})

/**
 * A proxy without any cache, sent the same requests as the proxy under test (interleaved): what
 * the origin alone costs on this machine at that moment, for the latency checks to compare with.
 */
async function originOnly(): Promise<TestProxy> {
  const started = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({ name: 'rc', prefix: '/rc', bucket: BUCKET, endpoint: s3.endpoint })}`)
  proxies.push(started)
  return started
}

/** The p99 a proxy must stay under: P99_BOUND_MS, or one timeout above the origin when it is slower. */
const boundOver = (originP99: number) => Math.max(P99_BOUND_MS, originP99 + TIMEOUT_MS)

/** Stops every proxy and cluster started so far. */
async function stopAll(): Promise<void> {
  await Promise.all(proxies.splice(0).map((p) => p.stop()))
  await Promise.all(clusters.splice(0).map((c) => c.stop()))
}

after(async () => {
  await stopAll()
  await s3?.stop()
})

describe('the Redis tier on a cluster', () => {
  let c: TestRedisCluster
  before(async () => {
    c = await cluster()
  })
  // Each scenario leaves nothing running behind it: idle proxies and clusters still cost this
  // process CPU (slot-table refreshes), which the latency checks below would pay for.
  after(stopAll)

  it('misses, then answers hits from the master that owns the key, with the same bytes', async () => {
    const p = await proxy(c, 'hits:')
    const miss = await send(p.url, path('obj-1.bin'))
    assert.equal(miss.headers['x-cache'], 'MISS')
    assert.deepEqual(miss.body, bodies.get('obj-1.bin'))
    const gets = () => s3.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/${BUCKET}/obj-1.bin?`)).length
    const fetched = gets()
    await eventually(() => stored(c, 'hits:rc/obj-1.bin'), 'the entry on the master that owns its slot')
    const hit = await send(p.url, path('obj-1.bin'))
    assert.equal(hit.headers['x-cache'], 'HIT')
    assert.equal(hit.headers['cache-status'], 'yatagarasu; hit; detail=redis')
    assert.deepEqual(hit.body, bodies.get('obj-1.bin'))
    assert.equal(gets(), fetched, 'a hit never reaches the backend')
  })

  it('keeps an entry no longer than cache.redis.ttl_seconds', async () => {
    const p = await proxy(c, 'ttl:', '[redis]', ', ttl_seconds: 1')
    await warm(c, p, 'ttl:', ['obj-2.bin'])
    const id = 'ttl:rc/obj-2.bin'
    const ttl = Number(await c.command(await c.masterOf(id), 'PTTL', id))
    assert.ok(ttl > 0 && ttl <= 1000, `PTTL ${ttl} ms`)
    await eventually(async () => !(await stored(c, id)), 'the entry to expire')
    assert.equal((await send(p.url, path('obj-2.bin'))).headers['x-cache'], 'MISS')
  })

  it('spreads entries over every master', async () => {
    const p = await proxy(c, 'spread:')
    await warm(c, p, 'spread:', [...bodies.keys()].slice(0, 12))
    const masters = await c.masters()
    assert.equal(masters.length, 3)
    for (const master of masters) {
      const keys = (await c.command(master, 'KEYS', 'spread:rc/*')) as string[]
      assert.ok(keys.length >= 1, `${master.address} holds some of the entries`)
    }
  })

  it('purges on every master and tells the other instance to drop its own copy', async () => {
    const a = await proxy(c, 'purge:', '[memory, redis]')
    const b = await proxy(c, 'purge:', '[memory, redis]')
    const names = [...(await objectsOn(c, 'purge:', await c.masters(), [1, 1, 1])).keys()]
    await warm(c, a, 'purge:', names)
    for (const name of names) {
      assert.equal((await send(b.url, path(name))).headers['cache-status'], 'yatagarasu; hit; detail=redis')
      assert.equal((await send(b.url, path(name))).headers['cache-status'], 'yatagarasu; hit; detail=memory')
    }
    const purged = await send(a.url, '/admin/cache/purge/rc', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })
    assert.equal(purged.status, 200)
    await b.logged((l) => l.msg === 'cache purge received from another instance')
    for (const master of await c.masters()) {
      assert.deepEqual(await c.command(master, 'KEYS', 'purge:rc/*'), [], `${master.address} has no entry left`)
    }
    for (const name of names) {
      const res = await send(b.url, path(name))
      assert.equal(res.headers['x-cache'], 'MISS', `${name} is fetched again`)
      assert.deepEqual(res.body, bodies.get(name))
    }
  })

  it('shares rate-limit counters between two instances', async () => {
    const yaml = `
server:
  address: "127.0.0.1:0"
  trusted_proxies: [127.0.0.1]
  rate_limit:
    per_ip: { requests_per_second: 0.1, burst: 2 }
cache:
  redis: { cluster_nodes: ${JSON.stringify(c.seeds)}, key_prefix: "limits:", timeout_ms: ${TIMEOUT_MS} }
buckets:
${bucketYaml({ name: 'rc', prefix: '/rc', bucket: BUCKET, endpoint: s3.endpoint })}`
    const a = await startTestProxy(yaml)
    const b = await startTestProxy(yaml)
    proxies.push(a, b)
    // Each instance counts in the cluster once its client is connected (before that, in-process).
    const counted = async (p: TestProxy, ip: string) => {
      await send(p.url, path('obj-0.bin'), { headers: { 'x-forwarded-for': ip } })
      for (const master of await c.masters()) {
        if (((await c.command(master, 'KEYS', `limits:*${ip}`)) as string[]).length > 0) return true
      }
      return false
    }
    let probe = 0
    for (const p of [a, b]) await eventually(() => counted(p, `192.0.2.${++probe}`), 'the instance to count in the cluster')
    const alice = { 'x-forwarded-for': '203.0.113.7' }
    assert.equal((await send(a.url, path('obj-0.bin'), { headers: alice })).status, 200)
    assert.equal((await send(b.url, path('obj-0.bin'), { headers: alice })).status, 200)
    const third = await send(a.url, path('obj-0.bin'), { headers: alice })
    assert.equal(third.status, 429, 'the third request within the window is refused, whichever instance counted the first two')
    assert.equal(third.headers['ratelimit-limit'], '2')
  })
})

interface Answer {
  name: string
  /** Which of the targets answered. */
  via: number
  status: number
  right: boolean
  /** Answered from Redis (not a coalesced origin fetch, which also says X-Cache: HIT). */
  fromRedis: boolean
}

/** Polls `cluster_state` as `observer` sees it; the periods it reported `fail`. */
function watchState(c: TestRedisCluster, observer: ClusterNode) {
  const periods: Array<{ from: number; to: number }> = []
  let stopped = false
  const done = (async () => {
    while (!stopped) {
      const asked = performance.now()
      const state = await c.state(observer)
      const last = periods.at(-1)
      const open = last !== undefined && last.to === Infinity
      if (state === 'fail' && !open) {
        periods.push({ from: asked, to: Infinity })
      } else if (state === 'ok' && open) {
        last.to = performance.now()
      }
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  })()
  return {
    periods,
    /** Whether a request scheduled at `at` that took `ms` overlapped a `fail` period. */
    during: (at: number, ms: number) => periods.some((p) => at <= p.to && at + ms >= p.from),
    async stop() {
      stopped = true
      await done
    },
  }
}

/**
 * Starts 4 open-loop clients reading `names` round robin, `rate` requests per second each (spread
 * over `targets` in turn): while the cluster refuses commands every request is an origin fetch,
 * which costs this process (proxy, s3rver and its signature check) ~10 ms of CPU; a busy 2-core
 * machine must keep up.
 */
function load(targets: TestProxy[], names: string[], rate = 3) {
  return startOpenLoop<Answer>({
    clients: 4,
    rate,
    maxMs: 40_000,
    async request(_client, seq) {
      const via = seq % targets.length
      const name = names[Math.floor(seq / targets.length) % names.length] as string
      const res = await send((targets[via] as TestProxy).url, path(name))
      return {
        name,
        via,
        status: res.status,
        right: res.body.equals(bodies.get(name) as Buffer),
        fromRedis: res.headers['cache-status'] === 'yatagarasu; hit; detail=redis',
      }
    },
  })
}

async function samplesReach(samples: Sample<Answer>[], count: number): Promise<void> {
  const deadline = Date.now() + 30_000
  while (samples.length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.ok(samples.length >= count, `${count} answers within 30 s`)
}

function assertAllServed(samples: Sample<Answer>[]): void {
  const failed = samples.filter((s) => s.error !== undefined || s.value?.status !== 200 || !s.value.right)
  assert.deepEqual(
    failed.slice(0, 5).map((s) => s.error ?? s.value),
    [],
    `${failed.length} of ${samples.length} requests failed or had the wrong bytes`
  )
}

const ms = (n: number) => `${Math.round(n)} ms`

/**
 * How starved of CPU the machine was over the last 10 s (Linux PSI), and the longest stall of this
 * process's event loop: told with every latency failure, to tell a slow proxy from a busy machine.
 */
function busy(loop: { maxEventLoopDelayMs(): number }): string {
  let pressure = 'unknown'
  try {
    pressure = `${readFileSync('/proc/pressure/cpu', 'utf8').match(/some avg10=([\d.]+)/)?.[1] ?? '?'}%`
  } catch {
    // not Linux, or a kernel without pressure stall information
  }
  return `longest event-loop stall ${ms(loop.maxEventLoopDelayMs())}, CPU pressure ${pressure}`
}

describe('failover under open-loop load', { concurrency: false }, () => {
  for (const how of ['killed', 'hung'] as const) {
    it(`keeps serving while a master is ${how}, and serves hits again once its replica took over`, async (t: TestContext) => {
      const c = await cluster()
      const prefix = `${how}:`
      const p = await proxy(c, prefix)
      const masters = await c.masters()
      const victim = masters[0] as ClusterNode
      // Half the requests go to the victim's keys, the rest to the other two masters.
      const owners = await objectsOn(c, prefix, masters, [6, 3, 3])
      await warm(c, p, prefix, owners.keys())
      const victimNames = new Set([...owners].filter(([, m]) => m === victim).map(([name]) => name))
      const observer = (await c.masters()).find((m) => m !== victim) as ClusterNode
      const state = watchState(c, observer)
      const loop = load([p, await originOnly()], [...owners.keys()], 6)
      try {
        await samplesReach(loop.samples, 48)
        if (how === 'killed') await c.kill(victim)
        else await c.pause(victim)
        const brokeAt = performance.now()
        await c.waitForFailover(victim)
        // The replica took over when the cluster reported ok again (failover() also waits for
        // every node to agree, which takes a while longer).
        const promotedAt = Math.min(performance.now(), state.periods.at(-1)?.to ?? Infinity)
        const resumed = () => loop.samples.find((s) => s.scheduledAt > brokeAt && s.value?.via === 0 && victimNames.has(s.value.name) && s.value.fromRedis)
        await eventually(async () => resumed(), "hits on the failed master's keys to resume")
        const count = loop.samples.length
        await samplesReach(loop.samples, count + 48)
        const all = await loop.stop()
        await state.stop()

        assertAllServed(all)
        const samples = all.filter((s) => s.value?.via === 0)
        const direct = all.filter((s) => s.value?.via === 1)
        const outside = (of: Sample<Answer>[]) => of.filter((s) => !state.during(s.scheduledAt, s.latencyMs)).map((s) => s.latencyMs)
        const p99 = percentile(outside(samples), 99)
        const originP99 = percentile(outside(direct), 99)
        const meanwhile = (s: Sample<Answer>) => s.scheduledAt >= brokeAt && s.scheduledAt < promotedAt
        const orphaned = samples.filter((s) => meanwhile(s) && victimNames.has(s.value?.name ?? ''))
        const paidTimeout = orphaned.filter((s) => s.latencyMs >= TIMEOUT_MS)
        const median = percentile(orphaned.map((s) => s.latencyMs), 50)
        const originMedian = percentile(direct.filter(meanwhile).map((s) => s.latencyMs), 50)
        const firstHit = resumed() as Sample<Answer>
        const failFor = state.periods.reduce((sum, p) => sum + (Math.min(p.to, performance.now()) - p.from), 0)
        t.diagnostic(
          `${how}: ${samples.length} requests, 0 errors; cluster_state:fail for ${ms(failFor)}; p99 outside it ${ms(p99)} ` +
            `(straight to the origin: ${ms(originP99)}) ` +
            `(all: ${ms(percentile(samples.map((s) => s.latencyMs), 99))}, max ${ms(Math.max(...samples.map((s) => s.latencyMs)))}); ` +
            `cluster ok again ${ms(promotedAt - brokeAt)} after; ${paidTimeout.length} of ${orphaned.length} requests for its keys ` +
            `meanwhile waited >= ${TIMEOUT_MS} ms (median ${ms(median)}, straight to the origin ${ms(originMedian)}); hits resumed ${ms(firstHit.scheduledAt - brokeAt)} after (${ms(firstHit.scheduledAt - promotedAt)} after the cluster was ok again); ${busy(loop)}`
        )
        assert.ok(p99 < boundOver(originP99), `p99 outside cluster_state:fail is ${ms(p99)}, ${ms(originP99)} straight to the origin (${busy(loop)})`)
        assert.ok(orphaned.length >= 10, `${orphaned.length} requests for the failed master's keys before the promotion`)
        // Were each of them to wait for the Redis timeout, most would take that much longer than
        // going straight to the origin.
        assert.ok(median < originMedian + TIMEOUT_MS / 2, `requests for the failed master's keys took ${ms(median)} (median), ${ms(originMedian)} straight to the origin`)
      } finally {
        await loop.stop()
        await state.stop()
        await stopAll()
      }
    })
  }

  it('serves from the origin with bounded latency while the cluster has lost its quorum', async (t: TestContext) => {
    const c = await cluster()
    const p = await proxy(c, 'quorum:')
    const direct = await originOnly()
    const [first, second, survivor] = await c.masters()
    const owners = await objectsOn(c, 'quorum:', [first, second, survivor] as ClusterNode[], [4, 4, 4])
    await warm(c, p, 'quorum:', owners.keys())
    const state = watchState(c, survivor as ClusterNode)
    const loop = load([p, direct], [...owners.keys()], 4)
    try {
      await samplesReach(loop.samples, 32)
      await Promise.all([c.kill(first as ClusterNode), c.kill(second as ClusterNode)])
      const brokeAt = performance.now()
      await eventually(async () => (await c.state(survivor as ClusterNode)) === 'fail', 'cluster_state:fail')
      // Long enough for the breakers of the dead masters to let their probes through (5 s).
      const count = loop.samples.length
      await samplesReach(loop.samples, count + 100)
      const samples = await loop.stop()
      await state.stop()

      assertAllServed(samples)
      const after = samples.filter((s) => s.scheduledAt >= brokeAt)
      const latencies = (via: number) => after.filter((s) => s.value?.via === via).map((s) => s.latencyMs)
      const hits = after.filter((s) => s.value?.fromRedis === true && s.scheduledAt > (state.periods[0]?.from ?? Infinity))
      /** The worst p99 over any one second (a burst). */
      const worstSecond = (via: number) => {
        let worst = 0
        for (let from = brokeAt; from < (after.at(-1)?.scheduledAt ?? brokeAt); from += 1000) {
          const second = after.filter((s) => s.value?.via === via && s.scheduledAt >= from && s.scheduledAt < from + 1000)
          worst = Math.max(worst, percentile(second.map((s) => s.latencyMs), 99))
        }
        return worst
      }
      const figures = [0, 1].map((via) => ({
        median: percentile(latencies(via), 50),
        p99: percentile(latencies(via), 99),
        worst: worstSecond(via),
      }))
      const [cached, origin] = figures as [(typeof figures)[0], (typeof figures)[0]]
      t.diagnostic(
        `quorum lost: ${after.length} requests after the kill, 0 errors, ${hits.length} Redis hits once the cluster reported fail; ` +
          `with the cluster tier: median ${ms(cached.median)}, p99 ${ms(cached.p99)}, worst 1 s p99 ${ms(cached.worst)}; ` +
          `straight to the origin: median ${ms(origin.median)}, p99 ${ms(origin.p99)}, worst 1 s p99 ${ms(origin.worst)}; ${busy(loop)}`
      )
      assert.equal(hits.length, 0, 'nothing is served from a cluster that refuses commands')
      // No request waits for Redis: the failed cluster costs next to nothing over going straight
      // to the origin.
      assert.ok(cached.median < origin.median + TIMEOUT_MS / 2, `median ${ms(cached.median)} vs ${ms(origin.median)} straight to the origin`)
      assert.ok(cached.p99 < boundOver(origin.p99), `p99 ${ms(cached.p99)} vs ${ms(origin.p99)} straight to the origin (${busy(loop)})`)
      assert.ok(cached.worst < boundOver(origin.worst), `worst p99 over one second ${ms(cached.worst)} vs ${ms(origin.worst)} (${busy(loop)})`)
    } finally {
      await loop.stop()
      await state.stop()
      await stopAll()
    }
  })
})
