// The proxy's memory (issue targets: idle under ~100 MB RSS; under 150 MB while 64 clients
// download disk-cached 10 MiB objects and while 20 slow clients each stream a 1 GiB sliced object).
// Each scenario runs a fresh compiled proxy in its own process (disk tier, slicing on) on the server
// CPU; the clients run here, on the other CPUs. Reported per scenario: the proxy's peak RSS (VmHWM
// from /proc/<pid>/status: the exact peak since it started, start-up included) and the highest
// VmRSS sampled every 50 ms while the clients ran. Not a timed test: numbers, not assertions.
//
//   npx tsx bench/memory.ts [--quick]       (npm run bench runs it too)
//   BENCH_MEMORY_SECONDS: seconds per loaded scenario (default 15, --quick 6)
//   Each scenario runs twice: with node's defaults and with the flags the proxy ships with
//   (SHIPPED_FLAGS: shebang, Dockerfile, npm start). What differs is V8's heap: a larger young
//   generation (semi-spaces up to 16 MiB by default) is more heap, and is scavenged less often, so
//   dead origin socket reads (64 KiB buffers outside the heap, freed only by a collection) wait
//   longer: in the sliced row the 4 MiB of each slice fetch. Disk hits churn no buffers (their read
//   buffers are pooled: ~32 MiB at 64 streams). Peaks measured with --quick (idle / disk hits /
//   sliced), semi-space 1 / 4 MiB / V8's default: 83 / 121 / 100, 90-91 / 124-135 / 110-118,
//   93 / 145 / 135 MB (4 MiB ships: docs/operations.md, Sizing); since disk fills copy into
//   reused buffers, 4 MiB: 92-93 / 130-133 / 113-117 MB.
//   BENCH_NODE_FLAGS: run only with these node flags instead (e.g. "" for the defaults alone)
//   BENCH_ORIGIN_DIR: where the origin keeps its objects between runs (a 1 GiB one among them)
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, type Origin, pidOf, rssOf, runBench, sampleRss, SHIPPED_FLAGS, startOrigin, startProxy, stop, waitFor200 } from './support.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const OBJECTS = { 'small.bin': 1024, 'ten-0.bin': 10 * MiB, 'ten-1.bin': 10 * MiB, 'ten-2.bin': 10 * MiB, 'ten-3.bin': 10 * MiB, 'huge.bin': GiB }
const SLOW_CLIENT_BYTES_PER_SECOND = 4 * MiB

export interface MemoryRow {
  scenario: string
  /** The proxy's node flags ('' for none). */
  flags: string
  /** VmHWM at the end: the peak since the process started. */
  peakMiB: number
  /** The highest VmRSS sampled while the clients ran (or VmRSS now, idle). */
  sampledMiB: number
  limitMiB: number
  detail: string
}

export interface MemoryOptions {
  seconds: number
  /** Each scenario runs once per flag set. */
  variants: string[][]
  /** Prints progress to stderr. */
  log: (line: string) => void
}

function config(port: number, origin: string, cacheDir: string): string {
  return `server: { address: "127.0.0.1:${port}" }
logging: { level: warn }
cache:
  enabled: true
  layers: [disk]
  max_item_size: 16MB
  slice: { enabled: true, slice_size: 4MB }
  disk: { dir: "${cacheDir}", max_size: 4GB }
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${origin}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: true, ttl_seconds: 3600 }
`
}

/** Downloads `url` whole (length checked), reading as fast as it can. */
function download(agent: http.Agent, url: string, size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        let bytes = 0
        res.on('data', (chunk: Buffer) => (bytes += chunk.length))
        res.on('end', () => (res.statusCode === 200 && bytes === size ? resolve() : reject(new Error(`${url}: ${res.statusCode}, ${bytes} bytes`))))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

/**
 * Streams `url` at about `rate` bytes a second (pausing the response, so back-pressure reaches the
 * proxy) until `until`; resolves with the bytes read. Fails on a non-200 or an early end.
 */
function slowStream(url: string, rate: number, until: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = http.get(url, { agent: false }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`${url}: ${res.statusCode}`))
      let bytes = 0
      let timer: NodeJS.Timeout | undefined
      const done = () => {
        clearTimeout(timer)
        req.destroy()
        resolve(bytes)
      }
      const stopTimer = setTimeout(done, Math.max(0, until - Date.now()))
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        const ahead = bytes / rate - (performance.now() - started) / 1000
        if (ahead > 0.05) {
          res.pause()
          timer = setTimeout(() => res.resume(), ahead * 1000)
        }
      })
      res.on('end', () => {
        clearTimeout(stopTimer)
        done()
      })
      res.on('error', (err) => {
        clearTimeout(stopTimer)
        reject(err)
      })
    })
    req.on('error', (err) => {
      if (!req.destroyed || Date.now() < until) reject(err)
    })
  })
}

async function withProxy<T>(origin: Origin, flags: string[], work: (url: string, pid: number) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-memory-'))
  const port = await freePort()
  const file = join(dir, 'config.yaml')
  await writeFile(file, config(port, origin.url, join(dir, 'cache')))
  const proxy = startProxy(file, flags)
  try {
    const url = `http://127.0.0.1:${port}`
    await waitFor200(`${url}/health`, 'the proxy')
    return await work(url, pidOf(proxy))
  } finally {
    await stop(proxy)
    await rm(dir, { recursive: true, force: true })
  }
}

export async function measureMemory(options: MemoryOptions): Promise<MemoryRow[]> {
  const started = performance.now()
  options.log(`memory: starting the origin (store in a kept directory; a missing 1 GiB object is generated once)`)
  const origin = await startOrigin(OBJECTS)
  for (const s of origin.seeded) options.log(`memory: generated ${s.key} (${(s.size / MiB).toFixed(0)} MiB) in the origin in ${s.seconds} s`)
  const rows: MemoryRow[] = []
  try {
    for (const flags of options.variants) rows.push(...(await scenarios(origin, flags, options.seconds)))
  } finally {
    await stop(origin.process)
  }
  options.log(`memory: done in ${((performance.now() - started) / 1000).toFixed(0)} s`)
  return rows
}

async function scenarios(origin: Origin, nodeFlags: string[], seconds: number): Promise<MemoryRow[]> {
  const flags = nodeFlags.join(' ')
  const options = { seconds }
  const rows: MemoryRow[] = []
  rows.push(
    await withProxy(origin, nodeFlags, async (url, pid) => {
      // One miss and one hit of a small object, then quiet: what an idle worker holds.
      await download(new http.Agent(), `${url}/bench/small.bin`, 1024)
      await download(new http.Agent(), `${url}/bench/small.bin`, 1024)
      await new Promise((resolve) => setTimeout(resolve, 2000))
      const { rss, hwm } = rssOf(pid)
      return { scenario: 'idle (after one miss and one hit of 1 KiB)', flags, peakMiB: hwm, sampledMiB: rss, limitMiB: 100, detail: 'VmRSS now' }
    })
  )
  rows.push(
    await withProxy(origin, nodeFlags, async (url, pid) => {
      const keys = Object.keys(OBJECTS).filter((k) => k.startsWith('ten-'))
      const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
      // Fill the disk tier (a miss each), then check each is a hit.
      const before = await origin.gets()
      for (const key of keys) await download(agent, `${url}/bench/${key}`, 10 * MiB)
      const peak = sampleRss(pid)
      const until = Date.now() + options.seconds * 1000
      let downloads = 0
      await Promise.all(
        Array.from({ length: 64 }, async (_, client) => {
          for (let i = client; Date.now() < until; i++) {
            await download(agent, `${url}/bench/${keys[i % keys.length]}`, 10 * MiB)
            downloads++
          }
        })
      )
      agent.destroy()
      const sampled = peak()
      const gets = await origin.gets()
      const misses = keys.reduce((n, key) => n + (gets[`/bench/${key}`] ?? 0) - (before[`/bench/${key}`] ?? 0), 0)
      return {
        scenario: '64 clients downloading disk-cached 10 MiB objects',
        flags,
        peakMiB: rssOf(pid).hwm,
        sampledMiB: sampled,
        limitMiB: 150,
        detail: `${downloads} downloads in ${options.seconds} s (${((downloads * 10) / options.seconds).toFixed(0)} MiB/s), origin GETs ${misses} (the ${keys.length} fills)`,
      }
    })
  )
  rows.push(
    await withProxy(origin, nodeFlags, async (url, pid) => {
      // Cold: every slice is fetched from the origin while the clients read.
      const before = (await origin.gets())['/bench/huge.bin'] ?? 0
      const peak = sampleRss(pid)
      const until = Date.now() + options.seconds * 1000
      const read = await Promise.all(Array.from({ length: 20 }, () => slowStream(`${url}/bench/huge.bin`, SLOW_CLIENT_BYTES_PER_SECOND, until)))
      const sampled = peak()
      const total = read.reduce((a, b) => a + b, 0)
      return {
        scenario: '20 slow clients streaming a 1 GiB sliced object (4 MiB/s each)',
        flags,
        peakMiB: rssOf(pid).hwm,
        sampledMiB: sampled,
        limitMiB: 150,
        detail: `${(total / MiB).toFixed(0)} MiB sent in ${options.seconds} s, ${((await origin.gets())['/bench/huge.bin'] ?? 0) - before} origin GETs (4 MiB slices)`,
      }
    })
  )
  return rows
}

export function memoryTable(rows: MemoryRow[]): string {
  const lines = [
    'proxy memory per scenario (a fresh process each; idle is judged by VmRSS now, the others by the peak)',
    '| scenario | node flags | peak RSS MiB (VmHWM) | sampled VmRSS MiB | target | within | detail |',
    '| --- | --- | ---: | ---: | ---: | --- | --- |',
  ]
  for (const r of rows) {
    const judged = r.scenario.startsWith('idle') ? r.sampledMiB : r.peakMiB
    lines.push(`| ${r.scenario} | ${r.flags || 'defaults'} | ${r.peakMiB.toFixed(1)} | ${r.sampledMiB.toFixed(1)} | < ${r.limitMiB} | ${judged < r.limitMiB ? 'yes' : 'NO'} | ${r.detail} |`)
  }
  return lines.join('\n')
}

export function memoryOptions(quick: boolean): MemoryOptions {
  return {
    seconds: Number(process.env.BENCH_MEMORY_SECONDS ?? (quick ? 6 : 15)),
    variants: process.env.BENCH_NODE_FLAGS === undefined ? [[], SHIPPED_FLAGS] : [process.env.BENCH_NODE_FLAGS.split(' ').filter((f) => f !== '')],
    log: (line) => process.stderr.write(`[bench] ${line}\n`),
  }
}

if (import.meta.main) await runBench(memoryOptions, measureMemory, memoryTable)
