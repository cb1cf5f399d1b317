// Slice hits beside their anchor, nginx's `slice` module (nginx-slice.conf): random 1 MiB Ranges of
// a 256 MiB object, after one warm pass (a whole GET through each, checked against the origin's
// SHA-256), with wrk at each connection count, interleaved (nginx and the proxy alternate, rep after
// rep), medians of the reps. Also counts the GETs that reached the origin while the ranges were
// measured: a warm slice cache sends none. The proxy runs compiled, with the disk tier, slices of
// BENCH_SLICE_SIZE (default 1MB, nginx's `slice 1m`), no auth (nginx has none).
//
//   npx tsx bench/slices.ts [--quick]     (npm run bench runs it too)
//   BENCH_SLICE_REPS (3; --quick 1), BENCH_SLICE_SECONDS (8; --quick 3),
//   BENCH_SLICE_CONNECTIONS (default "64 1")
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLIENT_CPUS, cpuSeconds, freePort, median, pidOf, PINNABLE, runBench, startNginx, startOrigin, startProxy, stop, waitFor200 } from './support.ts'

const MiB = 1024 * 1024
const SIZE = 256 * MiB
const RANGE = MiB
/** One object per target, so the origin's GET count tells them apart. */
const KEYS = { nginx: 'media-nginx.bin', proxy: 'media-proxy.bin' } as const
type Target = keyof typeof KEYS

export interface SliceRow {
  connections: number
  target: Target
  rps: number
  /** Server CPU per request (process utime + stime over the run; nginx: master and workers). */
  cpuUs: number
  /** GETs of its object that reached the origin during the measured runs (0 when all were hits). */
  originGets: number
  errors: string
}

export interface SliceOptions {
  reps: number
  seconds: number
  connections: number[]
  log: (line: string) => void
}

const lua = `-- a random ${RANGE}-byte Range of the ${SIZE}-byte object at wrk's path
math.randomseed(os.time())
request = function()
  local s = math.random(0, ${SIZE - RANGE})
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. s .. "-" .. (s + ${RANGE - 1}) })
end
`

/** SHA-256 and status of a GET of `url` (with `range`, if given). */
function digest(url: string, range?: string): Promise<{ status: number; sha: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, headers: range === undefined ? {} : { range } }, (res) => {
        const hash = createHash('sha256')
        let bytes = 0
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk)
          bytes += chunk.length
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, sha: hash.digest('hex'), bytes }))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

/** One wrk run on the client CPUs: requests per second, and what went wrong (if anything). */
function wrk(url: string, connections: number, seconds: number, script: string): { rps: number; errors: string } {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, url]
  const out = PINNABLE ? execFileSync('taskset', ['-c', CLIENT_CPUS, 'wrk', ...args]).toString() : execFileSync('wrk', args).toString()
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN)
  const problems = [/Non-2xx or 3xx responses: \d+/.exec(out)?.[0], /Socket errors: .*/.exec(out)?.[0]].filter((p) => p !== undefined)
  return { rps, errors: problems.join('; ') }
}

export async function measureSlices(options: SliceOptions): Promise<SliceRow[]> {
  if (spawnSync('wrk', ['-v']).error !== undefined) throw new Error('slices bench: wrk is not installed (apt-get install wrk)')
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-slices-'))
  const children: ChildProcess[] = []
  options.log('slices: starting the origin (256 MiB objects kept between runs, generated once)')
  const origin = await startOrigin({ [KEYS.nginx]: SIZE, [KEYS.proxy]: SIZE })
  children.push(origin.process)
  for (const s of origin.seeded) options.log(`slices: generated ${s.key} in ${s.seconds} s`)
  try {
    const originPort = Number(new URL(origin.url).port)
    const { process: nginx, port: nginxPort } = await startNginx('bench/nginx-slice.conf', join(dir, 'nginx'), originPort)
    children.push(nginx)

    const proxyPort = await freePort()
    const sliceSize = process.env.BENCH_SLICE_SIZE ?? '1MB'
    await writeFile(
      join(dir, 'proxy.yaml'),
      `server: { address: "127.0.0.1:${proxyPort}" }
logging: { level: warn }
cache:
  enabled: true
  layers: [disk]
  max_item_size: 16MB
  slice: { enabled: true, slice_size: ${sliceSize} }
  disk: { dir: "${join(dir, 'proxy-cache')}", max_size: 4GB }
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${origin.url}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: true, ttl_seconds: 3600 }
`
    )
    const proxy = startProxy(join(dir, 'proxy.yaml'))
    children.push(proxy)
    await waitFor200(`http://127.0.0.1:${proxyPort}/health`, 'the proxy')

    const urls: Record<Target, string> = {
      nginx: `http://127.0.0.1:${nginxPort}/bench/${KEYS.nginx}`,
      proxy: `http://127.0.0.1:${proxyPort}/bench/${KEYS.proxy}`,
    }
    const pids: Record<Target, number> = { nginx: pidOf(nginx), proxy: pidOf(proxy) }
    // The warm pass: one whole GET through each, the same bytes as the origin's.
    for (const target of ['nginx', 'proxy'] as const) {
      const started = performance.now()
      const [through, direct] = await Promise.all([digest(urls[target]), digest(`${origin.url}/bench/${KEYS[target]}`)])
      if (through.status !== 200 || through.sha !== direct.sha) throw new Error(`slices: the warm pass through ${target} gave ${through.status}, ${through.bytes} bytes, another SHA-256 than the origin`)
      const range = `bytes=${123 * MiB + 4567}-${123 * MiB + 4567 + RANGE - 1}`
      const [part, partDirect] = await Promise.all([digest(urls[target], range), digest(`${origin.url}/bench/${KEYS[target]}`, range)])
      if (part.status !== 206 || part.sha !== partDirect.sha) throw new Error(`slices: a Range through ${target} gave ${part.status}, not the origin's bytes`)
      options.log(`slices: warm pass through ${target}: ${((performance.now() - started) / 1000).toFixed(1)} s, bytes match the origin`)
    }
    // The proxy writes slices to disk after answering: let the last ones land.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const script = join(dir, 'ranges.lua')
    await writeFile(script, lua)

    const rows: SliceRow[] = []
    for (const connections of options.connections) {
      for (const target of ['nginx', 'proxy'] as const) wrk(urls[target], connections, 1, script) // warm-up, unrecorded
      const runs: Record<Target, Array<{ rps: number; cpuUs: number; errors: string }>> = { nginx: [], proxy: [] }
      const before = await origin.gets()
      for (let rep = 0; rep < options.reps; rep++) {
        const order: Target[] = rep % 2 === 0 ? ['nginx', 'proxy'] : ['proxy', 'nginx']
        for (const target of order) {
          const cpu = await cpuSeconds(pids[target])
          const run = wrk(urls[target], connections, options.seconds, script)
          const used = (await cpuSeconds(pids[target])) - cpu
          runs[target].push({ ...run, cpuUs: (used * 1e6) / (run.rps * options.seconds) })
          options.log(`slices: ${connections} conn, ${target} rep ${rep + 1}: ${run.rps.toFixed(0)} req/s ${run.errors}`)
        }
      }
      const after = await origin.gets()
      for (const target of ['nginx', 'proxy'] as const) {
        const path = `/bench/${KEYS[target]}`
        rows.push({
          connections,
          target,
          rps: median(runs[target].map((r) => r.rps)),
          cpuUs: median(runs[target].map((r) => r.cpuUs)),
          originGets: (after[path] ?? 0) - (before[path] ?? 0),
          errors: [...new Set(runs[target].map((r) => r.errors).filter((e) => e !== ''))].join('; '),
        })
      }
    }
    return rows
  } finally {
    for (const child of children.reverse()) await stop(child)
    await rm(dir, { recursive: true, force: true })
  }
}

export function slicesTable(rows: SliceRow[], options: SliceOptions): string {
  const lines = [
    `slice hits: random 1 MiB Ranges of a 256 MiB object after one warm pass, wrk ${options.reps} x ${options.seconds} s (median), nginx slice 1m vs the proxy (disk tier, slice_size ${process.env.BENCH_SLICE_SIZE ?? '1MB'})`,
    '| connections | target | req/s | srv µs/req | vs nginx slice | origin GETs while measured | notes |',
    '| ---: | --- | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const row of rows) {
    const anchor = rows.find((r) => r.connections === row.connections && r.target === 'nginx')
    const ratio = anchor === undefined ? '' : (row.rps / anchor.rps).toFixed(2)
    lines.push(`| ${row.connections} | ${row.target === 'nginx' ? 'nginx slice' : 'proxy'} | ${row.rps.toFixed(0)} | ${row.cpuUs.toFixed(0)} | ${ratio} | ${row.originGets} | ${row.errors} |`)
  }
  return lines.join('\n')
}

export function sliceOptions(quick: boolean): SliceOptions {
  return {
    reps: Number(process.env.BENCH_SLICE_REPS ?? (quick ? 1 : 3)),
    seconds: Number(process.env.BENCH_SLICE_SECONDS ?? (quick ? 3 : 8)),
    connections: (process.env.BENCH_SLICE_CONNECTIONS ?? '64 1').split(' ').filter((c) => c !== '').map(Number),
    log: (line) => process.stderr.write(`[bench] ${line}\n`),
  }
}

if (import.meta.main) await runBench(sliceOptions, measureSlices, slicesTable)
