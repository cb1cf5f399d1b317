// The Redis tier against a real redis-server that hangs (SIGSTOP: connections stay open, nothing
// answers): each call waits one timeout until the node's breaker opens, then none; and against
// one that is healthy but slow to get through (many large replies queued on the connection):
// calls past their timeout are given up, but the breaker stays closed while answers keep coming.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { spawn } from 'node:child_process'
import { Redis } from 'ioredis'
import { objectMeta } from '../../test/support/meta.ts'
import { startRedis, type TestRedis } from '../../test/support/redis.ts'
import type { CachedObject } from '../ports.ts'
import { FAILURES_TO_OPEN } from '../store-breaker.ts'
import { MAX_HELD_MS } from './deadlines.ts'
import { SLOW_FOR_MS } from './redis-node-health.ts'
import { RedisCache } from './redis.ts'

const TIMEOUT_MS = 100

function entry(text: string | Buffer): CachedObject {
  const body = Buffer.isBuffer(text) ? text : Buffer.from(text)
  const now = Date.now()
  return {
    meta: objectMeta({ size: body.length, etag: '"abc"', contentType: 'text/plain' }),
    body,
    storedAt: now,
    freshUntil: now + 60_000,
  }
}

/** Polls until the store reads back what it writes (Redis connected, breaker closed). */
async function readable(store: RedisCache): Promise<void> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    await store.set('__probe', entry('p'))
    if ((await store.get('__probe')) !== undefined) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error('the Redis store never read back what it wrote')
}

describe('redis tier on a hung Redis', () => {
  it('gives each call one timeout until the breaker opens, then skips Redis, and reads again once it answers', async () => {
    const redis = await startRedis()
    const store = new RedisCache({ url: redis.url, clusterNodes: [], keyPrefix: 'hung:', timeoutMs: TIMEOUT_MS, staleSeconds: 60, maxItemBytes: 1 << 19 })
    const timedGet = async () => {
      const started = performance.now()
      const got = await store.get('b/x')
      return { got, ms: performance.now() - started }
    }
    try {
      await readable(store)
      await store.set('b/x', entry('x'))
      redis.pause()
      for (let i = 0; i < FAILURES_TO_OPEN; i++) {
        const { got, ms } = await timedGet()
        assert.equal(got, undefined)
        // At least the timeout; at most its grace periods, were this process's timers late.
        assert.ok(ms >= TIMEOUT_MS - 5 && ms < TIMEOUT_MS + MAX_HELD_MS + 500, `get ${i + 1} on a hung Redis took ${ms.toFixed(0)} ms`)
      }
      const skipped = await timedGet()
      assert.equal(skipped.got, undefined)
      assert.ok(skipped.ms < 50, `a get with the breaker open took ${skipped.ms.toFixed(0)} ms`)
      redis.resume()
      await readable(store)
      assert.equal((await store.get('b/x'))?.body.toString(), 'x')
    } finally {
      await store.close()
      await redis.stop()
    }
  })
})

/**
 * Many requests at once for 100 KiB entries, as at 64 connections in the benchmark, while Redis is
 * busy with other clients (a script that runs BUSY_MS, again and again). Redis writes one large
 * reply per client per turn of its event loop, so the replies trickle out one every few ms, in
 * order: the last ones of a round come after the timeout, while answers keep arriving. (In the
 * benchmark Redis shares a CPU with the busy proxy, and gets its turns when the proxy lets it.)
 */
const WORKERS = 64
const SIZE = 100 * 1024
const BUSY_MS = 4
const BUSY_CLIENTS = 3
const BUSY_SCRIPT = `local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]
repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - start >= ${BUSY_MS * 1000}`

interface Get {
  hit: boolean
  ms: number
  startedAt: number
}

/**
 * Keeps Redis busy: redis-cli running the script again and again from its own process. Resolves
 * once the scripts run, with the function that stops them.
 */
async function keepBusy(port: number): Promise<() => Promise<void>> {
  // Several, so that one script is nearly always waiting while Redis runs another.
  const clis = Array.from({ length: BUSY_CLIENTS }, () => spawn('redis-cli', ['-p', String(port), '-r', '100000000', 'EVAL', BUSY_SCRIPT, '0'], { stdio: 'ignore' }))
  const exited = clis.map((cli) => new Promise<void>((resolve) => cli.once('exit', () => resolve())))
  const stop = async () => {
    for (const cli of clis) cli.kill('SIGKILL')
    await Promise.all(exited)
  }
  const probe = new Redis(port, { maxRetriesPerRequest: 0 })
  try {
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      const calls = /cmdstat_eval:calls=(\d+)/.exec(await probe.info('commandstats'))?.[1]
      if (Number(calls ?? 0) >= 3 * BUSY_CLIENTS) return stop
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } finally {
    probe.disconnect()
  }
  await stop()
  throw new Error('redis-cli never ran the busy script')
}

/** WORKERS concurrent loops of gets until `stop()` says so (30 s at most); every get's outcome and duration. */
async function getMany(store: RedisCache, key: string, stop: (gets: Get[]) => boolean): Promise<Get[]> {
  const gets: Get[] = []
  const until = performance.now() + 30_000
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (!stop(gets) && performance.now() < until) {
        const startedAt = performance.now()
        const got = await store.get(key)
        gets.push({ hit: got !== undefined && got.body.length === SIZE, ms: performance.now() - startedAt, startedAt })
        // A skipped get settles at once: let timers and I/O run.
        if (got === undefined) await new Promise((resolve) => setImmediate(resolve))
      }
    })
  )
  return gets
}

/** A get answered undefined sooner than this did not wait for Redis: the breaker skipped it. */
const SKIPPED_MS = TIMEOUT_MS / 2

/** A real Redis kept busy by slow scripts, holding one 100 KiB value, 'b/hot'; cleaned up after `body`. */
async function withBusyRedis(keyPrefix: string, slowForMs: number | undefined, body: (redis: TestRedis, store: RedisCache) => Promise<void>): Promise<void> {
  const redis = await startRedis()
  const store = new RedisCache({ url: redis.url, clusterNodes: [], keyPrefix, timeoutMs: TIMEOUT_MS, staleSeconds: 60, maxItemBytes: 1 << 20, slowForMs })
  let endBusy = async () => {}
  try {
    endBusy = await keepBusy(redis.port)
    await readable(store)
    await store.set('b/hot', entry(Buffer.alloc(SIZE, 7)))
    await body(redis, store)
  } finally {
    redis.resume()
    await endBusy()
    await store.close()
    await redis.stop()
  }
}

describe('redis tier on a busy Redis that answers slowly', () => {
  it('keeps its breaker closed when gets outlast the timeout while answers keep coming', async () => {
    // A long "no answer in time" window: on a slow machine a round of replies may drain for over a
    // second, and this test is about the rule that answers keep the breaker closed.
    await withBusyRedis('busy:', 5000, async (_redis, store) => {
      const timedGet = async (): Promise<Get> => {
        const startedAt = performance.now()
        const got = await store.get('b/hot')
        return { hit: got !== undefined && got.body.length === SIZE, ms: performance.now() - startedAt, startedAt }
      }
      const round = await Promise.all(Array.from({ length: WORKERS }, timedGet))
      const given = round.filter((g) => !g.hit)
      // The scenario: the first replies came in time, enough others did not to open the breaker.
      assert.ok(given.length >= FAILURES_TO_OPEN, `only ${given.length} of ${WORKERS} gets outlasted ${TIMEOUT_MS} ms: nothing tested`)
      assert.ok(given.length < WORKERS, 'the first replies arrive in time')
      for (const g of given) {
        assert.ok(g.ms >= SKIPPED_MS, `a get skipped Redis (${g.ms.toFixed(1)} ms): its breaker opened`)
        assert.ok(g.ms < TIMEOUT_MS + MAX_HELD_MS + 500, `a get was given up after ${g.ms.toFixed(0)} ms`)
      }
      // Redis still answers the round's given-up gets first; then hits again. An open breaker
      // would skip every get for seconds.
      const until = performance.now() + 3000
      let next = await timedGet()
      while (!next.hit && performance.now() < until) {
        assert.ok(next.ms >= SKIPPED_MS, `a get skipped Redis (${next.ms.toFixed(1)} ms): its breaker opened`)
        next = await timedGet()
      }
      assert.ok(next.hit, 'gets are hits again')
    })
  })

  it('still gives up a Redis that hangs under that load, and opens its breaker', async () => {
    // Only "answers nothing" may open it here (the slow-node rule would also open it, later).
    await withBusyRedis('busyhung:', 30_000, async (redis, store) => {
      let pausedAt: number | undefined
      const gets = await getMany(store, 'b/hot', (done) => {
        if (pausedAt === undefined && done.length >= WORKERS && done.some((g) => g.hit)) {
          // Answers are flowing; now Redis stops answering.
          redis.pause()
          pausedAt = performance.now()
        }
        // Until the breaker skips Redis (or long past when it should have).
        return pausedAt !== undefined && (done.some((g) => g.startedAt > (pausedAt as number) && g.ms < SKIPPED_MS) || performance.now() - pausedAt > 10_000)
      })
      assert.ok(pausedAt !== undefined)
      const after = gets.filter((g) => g.startedAt > (pausedAt as number))
      const firstSkip = after.find((g) => !g.hit && g.ms < SKIPPED_MS)
      assert.ok(firstSkip !== undefined, 'the breaker never opened on a hung Redis')
      const opensAfter = firstSkip.startedAt - pausedAt
      // The calls in flight when it hung wait their timeout, the next ones fail too: then it opens.
      assert.ok(opensAfter < 2 * TIMEOUT_MS + MAX_HELD_MS + 500, `the breaker opened ${opensAfter.toFixed(0)} ms after Redis hung`)
      for (const g of after) {
        assert.ok(!g.hit, 'a hung Redis answers nothing')
        assert.ok(g.ms < TIMEOUT_MS + MAX_HELD_MS + 500, `a get on a hung Redis waited ${g.ms.toFixed(0)} ms`)
      }
      redis.resume()
      await readable(store)
      assert.equal((await store.get('b/hot'))?.body.length, SIZE)
    })
  })

  it('opens the breaker when Redis keeps answering but no get in time for a second', async () => {
    await withBusyRedis('busyuseless:', undefined, async (_redis, store) => {
      // 64 gets at a time, again as soon as each ends: the replies nobody waits for any more keep
      // the queue longer than the timeout, so no get is answered in time.
      const gets = await getMany(store, 'b/hot', (done) => done.some((g) => !g.hit && g.ms < SKIPPED_MS))
      const firstSkip = gets.find((g) => !g.hit && g.ms < SKIPPED_MS)
      assert.ok(firstSkip !== undefined, 'the breaker never opened')
      const lastHit = gets.filter((g) => g.hit).reduce((at, g) => Math.max(at, g.startedAt + g.ms), gets[0]!.startedAt)
      const opensAfter = firstSkip.startedAt - lastHit
      assert.ok(opensAfter < SLOW_FOR_MS + 2 * TIMEOUT_MS + MAX_HELD_MS + 500, `opened ${opensAfter.toFixed(0)} ms after the last hit`)
    })
  })
})
