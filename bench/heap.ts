// What each path costs V8's garbage collector, per request, at 64 connections: bytes allocated,
// bytes that survived a young-generation GC (scavenge), bytes promoted to the old generation, and
// the GC pauses. The byte counts come from V8 itself (`--trace-gc-nvp`), so unlike timings they do
// not move with the machine's speed: a change that makes a request's objects outlive it (a
// WeakMap keyed by a per-request object, a per-request web stream that something keeps) shows here
// as promoted bytes, which every later full GC pays for. Each scenario runs a fresh compiled proxy
// (auth off, the shipped node flags) on the server CPU; autocannon runs here. The proxy's CPU per
// request (all its threads) is shown beside them: a timing, so it moves with the machine.
//
//   npx tsx bench/heap.ts [--quick]          (npm run bench:heap)
//   BENCH_HEAP_SECONDS: seconds measured per scenario (default 8, --quick 4), after a 3 s warm-up
//   BENCH_NODE_FLAGS: the proxy's node flags instead of the shipped ones
//   BENCH_HEAP_ONLY: only the paths whose name contains this
//
// Promoted bytes are judged against PROMOTED_LIMIT: with the shipped 4 MB young generation, the
// objects of 64 requests in flight die young, so what a request promotes is what it left behind.
// One run in ~20 showed a miss row promoting several KB where every rerun showed 0.2: rerun a
// high figure before believing it.
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import autocannon from 'autocannon'
import { build, cpuOf, freePort, pidOf, pinned, ROOT, SERVER_CPU, SHIPPED_FLAGS, startOrigin, stop, waitFor200, type Origin } from './support.ts'

const CONNECTIONS = 64
const MANY = 1000
/** 100 KiB objects for the fill rows: ten times what the small tiers below keep. */
const MANY_LARGE = 100
/** Promoted bytes per request above which a path keeps something it should not. */
const PROMOTED_LIMIT = 512

interface Scenario {
  name: string
  /** The `cache:` section of the config. */
  cache: string
  /** Paths requested in turn. */
  paths: string[]
  /** Requests made once before the warm-up (cache fills for the hit rows). */
  prime?: boolean
  /**
   * Each request stores an entry that its tier keeps through a few scavenges: the entry's objects
   * are promoted as they should be, so the row is not judged against PROMOTED_LIMIT.
   */
  keepsEntries?: boolean
}

const many = Array.from({ length: MANY }, (_, i) => `/bench/many/k-${i}`)
const manyLarge = Array.from({ length: MANY_LARGE }, (_, i) => `/bench/large/k-${i}`)

function scenarios(redisUrl: string | undefined): Scenario[] {
  const list: Scenario[] = [
    { name: 'miss 1 KiB (one key)', cache: 'cache: { enabled: false }', paths: ['/bench/obj-1k'] },
    { name: `miss 1 KiB (${MANY} keys)`, cache: 'cache: { enabled: false }', paths: many },
    { name: 'miss 100 KiB', cache: 'cache: { enabled: false }', paths: ['/bench/obj-100k'] },
    {
      // A memory tier too small to keep anything for long: every request is a miss that fills.
      name: `cache fill 1 KiB (${MANY} keys)`,
      cache: 'cache: { enabled: true, layers: [memory], max_item_size: 16KB, memory: { max_size: 64KB } }',
      paths: many,
    },
    {
      // Bodies arriving in several reads: piped to the client, copied into the memory tier.
      name: `cache fill 100 KiB (${MANY_LARGE} keys), memory`,
      cache: 'cache: { enabled: true, layers: [memory], max_item_size: 1MB, memory: { max_size: 1MB } }',
      paths: manyLarge,
      keepsEntries: true,
    },
    {
      // Written to a file as they arrive (temp file, fsync, rename).
      name: `cache fill 100 KiB (${MANY_LARGE} keys), disk`,
      cache: 'cache: { enabled: true, layers: [disk], max_item_size: 1MB, disk: { dir: "CACHE_DIR", max_size: 1MB } }',
      paths: manyLarge,
      keepsEntries: true,
    },
    { name: 'memory hit 1 KiB', cache: 'cache: { enabled: true, layers: [memory], memory: { max_size: 64MB } }', paths: ['/bench/obj-1k'], prime: true },
    { name: 'disk hit 1 KiB', cache: 'cache: { enabled: true, layers: [disk], disk: { dir: "CACHE_DIR", max_size: 1GB } }', paths: ['/bench/obj-1k'], prime: true },
  ]
  if (redisUrl !== undefined) {
    list.push({ name: 'Redis hit 1 KiB', cache: `cache: { enabled: true, layers: [redis], redis: { url: "${redisUrl}" } }`, paths: ['/bench/obj-1k'], prime: true })
  }
  return list
}

function config(port: number, origin: string, cache: string, cacheDir: string): string {
  const cached = !cache.includes('enabled: false')
  return `server: { address: "127.0.0.1:${port}" }
logging: { level: warn }
${cache.replace('CACHE_DIR', cacheDir)}
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${origin}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: ${cached}, ttl_seconds: 3600 }
`
}

export interface HeapRow {
  scenario: string
  /** Judged against PROMOTED_LIMIT (not when each request stores an entry that is kept). */
  judged: boolean
  requests: number
  allocatedKB: number
  survivedKB: number
  promotedKB: number
  scavenges: number
  markCompacts: number
  pauseUs: number
  /** The proxy's CPU per request, all threads (a timing: it moves with the machine). */
  cpuUs: number
}

/** Sums the `--trace-gc-nvp` lines (`key=value ...`, `gc=s` for a scavenge) per request. */
export function heapRow(scenario: string, lines: readonly string[], requests: number, cpuUs = Number.NaN, judged = true): HeapRow {
  let allocated = 0
  let survived = 0
  let promoted = 0
  let pause = 0
  let scavenges = 0
  let markCompacts = 0
  for (const line of lines) {
    if (!line.includes(' gc=')) continue
    const fields = new Map(line.split(' ').flatMap((part) => (part.includes('=') ? [part.split('=', 2) as [string, string]] : [])))
    if (fields.get('gc') === 's') scavenges++
    else markCompacts++
    allocated += Number(fields.get('allocated') ?? 0)
    survived += Number(fields.get('new_space_survived') ?? 0)
    promoted += Number(fields.get('promoted') ?? 0)
    pause += Number(fields.get('pause') ?? 0)
  }
  const per = (bytes: number) => Math.round((bytes / requests / 1024) * 10) / 10
  return {
    scenario,
    judged,
    requests,
    allocatedKB: per(allocated),
    survivedKB: per(survived),
    promotedKB: per(promoted),
    scavenges,
    markCompacts,
    pauseUs: Math.round((pause * 1000) / requests),
    cpuUs: Math.round(cpuUs / requests),
  }
}

async function load(url: string, paths: string[], seconds: number): Promise<number> {
  let next = 0
  const result = await autocannon({
    url,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        setupRequest: (request) => {
          request.path = paths[next++ % paths.length] as string
          return request
        },
      },
    ],
  })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx answers, ${result.errors} errors`)
  return result.requests.total
}

async function measure(origin: Origin, scenario: Scenario, flags: string[], seconds: number): Promise<HeapRow> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-heap-'))
  const port = await freePort()
  const file = join(dir, 'config.yaml')
  await writeFile(file, config(port, origin.url, scenario.cache, join(dir, 'cache')))
  const proxy = pinned(SERVER_CPU, [process.execPath, ...flags, '--trace-gc-nvp', join(ROOT, 'dist/main.js'), '--config', file], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines: string[] = []
  createInterface({ input: proxy.stdout as NodeJS.ReadableStream }).on('line', (line) => lines.push(line))
  try {
    const url = `http://127.0.0.1:${port}`
    await waitFor200(`${url}/health`, 'the proxy')
    if (scenario.prime === true) await load(url, scenario.paths, 1)
    await load(url, scenario.paths, 3)
    const from = lines.length
    const cpu = await cpuOf(pidOf(proxy))
    const requests = await load(url, scenario.paths, seconds)
    return heapRow(scenario.name, lines.slice(from), requests, (await cpuOf(pidOf(proxy))) - cpu, scenario.keepsEntries !== true)
  } finally {
    await stop(proxy)
    await rm(dir, { recursive: true, force: true })
  }
}

/** A redis-server on a free port, when one is installed. */
async function startRedis(): Promise<{ url: string; child: ChildProcess } | undefined> {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status !== 0) return undefined
  const port = await freePort()
  const child = pinned(SERVER_CPU, ['redis-server', '--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const deadline = Date.now() + 30_000
  while (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG') {
    if (Date.now() > deadline) throw new Error('redis-server did not answer within 30 s')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { url: `redis://127.0.0.1:${port}`, child }
}

function table(rows: HeapRow[], flags: string[]): string {
  const out = [
    `V8 heap work per request, ${CONNECTIONS} connections, node flags: ${flags.join(' ') || '(defaults)'}`,
    '| path | requests | allocated KB | survived a scavenge KB | promoted KB | scavenges | full GCs | GC pause µs | proxy CPU µs | promoted <= 0.5 KB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const r of rows) {
    const within = !r.judged ? '– (keeps entries)' : r.promotedKB * 1024 <= PROMOTED_LIMIT ? 'yes' : 'NO'
    out.push(`| ${r.scenario} | ${r.requests} | ${r.allocatedKB} | ${r.survivedKB} | ${r.promotedKB} | ${r.scavenges} | ${r.markCompacts} | ${r.pauseUs} | ${r.cpuUs} | ${within} |`)
  }
  return out.join('\n')
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick')
  const seconds = Number(process.env.BENCH_HEAP_SECONDS ?? (quick ? 4 : 8))
  const flags = process.env.BENCH_NODE_FLAGS === undefined ? SHIPPED_FLAGS : process.env.BENCH_NODE_FLAGS.split(' ').filter((f) => f !== '')
  build()
  const objects: Record<string, number> = { 'obj-1k': 1024, 'obj-100k': 100 * 1024 }
  for (let i = 0; i < MANY; i++) objects[`many/k-${i}`] = 1024
  for (let i = 0; i < MANY_LARGE; i++) objects[`large/k-${i}`] = 100 * 1024
  const origin = await startOrigin(objects)
  const redis = await startRedis()
  const rows: HeapRow[] = []
  try {
    const only = process.env.BENCH_HEAP_ONLY
    for (const scenario of scenarios(redis?.url).filter((s) => only === undefined || s.name.includes(only))) {
      process.stderr.write(`[bench] heap: ${scenario.name}\n`)
      rows.push(await measure(origin, scenario, flags, seconds))
    }
  } finally {
    if (redis !== undefined) await stop(redis.child)
    await stop(origin.process)
  }
  console.log(table(rows, flags))
}

if (import.meta.main) await main()
