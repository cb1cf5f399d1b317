// A cold herd: CLIENTS requests at once, each on its own connection, for an object nobody has
// cached yet, behind an origin that sends each answer at BENCH_HERD_RATE bytes/s (a distant S3),
// through the proxy with two workers sharing the disk tier, beside nginx with two workers and
// proxy_cache_lock (nginx-cold-herd.conf), the usual way to fetch a cold object once. Per target and
// rep a fresh object: what reached the origin (GETs, bytes), when the clients got their first byte
// (median, last) and their last, and the server's CPU (the process and its workers). Every answer's
// bytes are checked against the origin's (CRC-32C, cheap enough that the clients, on the client
// CPUs, keep up with nginx's burst). Servers and origin share the server CPU, as in every bench
// here. Targets alternate rep after rep; medians of the reps.
//
//   npx tsx bench/cold-herd.ts [--quick]     (npm run bench:cold-herd; npm run bench runs it too)
//   BENCH_HERD_REPS (3; --quick 1), BENCH_HERD_CLIENTS (16), BENCH_HERD_MIB (64: the object),
//   BENCH_HERD_RATE (25000000 bytes/s per origin answer)
import { spawnSync, type ChildProcess } from 'node:child_process'
import { crc32c } from '@node-rs/crc32'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLIENT_CPUS, cpuSeconds, freePort, median, pidOf, PINNABLE, runBench, startNginx, startOrigin, startProxy, stop, waitFor200 } from './support.ts'

const MiB = 1024 * 1024
const TARGETS = ['nginx', 'proxy'] as const
type Target = (typeof TARGETS)[number]

export interface HerdOptions {
  reps: number
  clients: number
  bytes: number
  rate: number
  log: (line: string) => void
}

export interface HerdRow {
  target: Target
  originGets: number
  /** Origin body bytes per object (1 = the object once). */
  originCopies: number
  firstByteMs: number
  lastFirstByteMs: number
  allDoneMs: number
  cpuMs: number
}

interface Answer {
  status: number
  crc: number
  firstByteMs: number
  doneMs: number
}

/** `clients` GETs of `url` at once, each on its own connection, timed from `started`. */
function herd(url: string, clients: number): Promise<Answer[]> {
  const started = performance.now()
  return Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<Answer>((resolve, reject) => {
          http
            .get(url, { agent: false }, (res) => {
              let crc = 0
              let firstByteMs = Number.NaN
              res.on('data', (chunk: Buffer) => {
                if (Number.isNaN(firstByteMs)) firstByteMs = performance.now() - started
                crc = crc32c(chunk, crc)
              })
              res.on('end', () => resolve({ status: res.statusCode ?? 0, crc, firstByteMs, doneMs: performance.now() - started }))
              res.on('error', reject)
            })
            .on('error', reject)
        })
    )
  )
}

function crcOf(url: string): Promise<number> {
  return herd(url, 1).then(([answer]) => answer?.crc ?? Number.NaN)
}

async function originCounts(url: string): Promise<{ gets: Record<string, number>; bytes: Record<string, number> }> {
  const read = (path: string) =>
    new Promise<Record<string, number>>((resolve, reject) => {
      http
        .get(`${url}${path}`, (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (text += c))
          res.on('end', () => resolve(JSON.parse(text) as Record<string, number>))
        })
        .on('error', reject)
    })
  return { gets: await read('/__origin_gets'), bytes: await read('/__origin_bytes') }
}

export async function measureColdHerd(options: HerdOptions): Promise<HerdRow[]> {
  // The clients (this process) on the client CPUs, the servers (pinned at start) on the server CPU.
  if (PINNABLE) spawnSync('taskset', ['-pc', CLIENT_CPUS, String(process.pid)], { stdio: 'ignore' })
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-herd-'))
  const children: ChildProcess[] = []
  const keyOf = (target: Target, rep: number) => `herd-${target}-${rep}.bin`
  const objects: Record<string, number> = {}
  for (let rep = 0; rep < options.reps; rep++) for (const target of TARGETS) objects[keyOf(target, rep)] = options.bytes
  options.log(`cold herd: starting the origin (${options.reps * 2} objects of ${options.bytes / MiB} MiB, kept between runs)`)
  const origin = await startOrigin(objects)
  children.push(origin.process)
  try {
    // The same objects at full speed, for their checksums; then the paced origin the targets use.
    const sums = new Map<string, number>()
    for (const key of Object.keys(objects)) sums.set(key, await crcOf(`${origin.url}/bench/${key}`))
    await stop(origin.process)
    children.pop()
    const paced = await startOrigin(objects, 'bench', ['--rate', String(options.rate)])
    children.push(paced.process)

    const { process: nginx, port: nginxPort } = await startNginx('bench/nginx-cold-herd.conf', join(dir, 'nginx'), Number(new URL(paced.url).port))
    children.push(nginx)

    const proxyPort = await freePort()
    await writeFile(
      join(dir, 'proxy.yaml'),
      `server: { address: "127.0.0.1:${proxyPort}", workers: 2 }
logging: { level: warn }
cache:
  enabled: true
  layers: [memory, disk]
  max_item_size: ${Math.ceil((2 * options.bytes) / MiB)}MB
  memory: { max_size: 256MB }
  disk: { dir: "${join(dir, 'proxy-cache')}", max_size: 4GB }
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${paced.url}", access_key: S3RVER, secret_key: S3RVER, timeout: 60 }
    cache: { enabled: true, ttl_seconds: 3600 }
`
    )
    const proxy = startProxy(join(dir, 'proxy.yaml'))
    children.push(proxy)
    await waitFor200(`http://127.0.0.1:${proxyPort}/health`, 'the proxy')

    const bases: Record<Target, string> = { nginx: `http://127.0.0.1:${nginxPort}/bench`, proxy: `http://127.0.0.1:${proxyPort}/bench` }
    const pids: Record<Target, number> = { nginx: pidOf(nginx), proxy: pidOf(proxy) }
    const runs: Record<Target, HerdRow[]> = { nginx: [], proxy: [] }
    for (let rep = 0; rep < options.reps; rep++) {
      for (const target of rep % 2 === 0 ? TARGETS : [...TARGETS].reverse()) {
        const key = keyOf(target, rep)
        const before = await originCounts(paced.url)
        const cpu = await cpuSeconds(pids[target])
        const answers = await herd(`${bases[target]}/${key}`, options.clients)
        const cpuMs = ((await cpuSeconds(pids[target])) - cpu) * 1000
        const after = await originCounts(paced.url)
        const wrong = answers.filter((a) => a.status !== 200 || a.crc !== sums.get(key)).length
        if (wrong > 0) throw new Error(`cold herd: ${wrong} of ${answers.length} answers through ${target} were not the object's bytes`)
        const path = `/bench/${key}`
        const firsts = answers.map((a) => a.firstByteMs)
        const row: HerdRow = {
          target,
          originGets: (after.gets[path] ?? 0) - (before.gets[path] ?? 0),
          originCopies: ((after.bytes[path] ?? 0) - (before.bytes[path] ?? 0)) / options.bytes,
          firstByteMs: median(firsts),
          lastFirstByteMs: Math.max(...firsts),
          allDoneMs: Math.max(...answers.map((a) => a.doneMs)),
          cpuMs,
        }
        runs[target].push(row)
        options.log(`cold herd: ${target} rep ${rep + 1}: ${row.originGets} origin GETs, last first byte ${row.lastFirstByteMs.toFixed(0)} ms, all done ${row.allDoneMs.toFixed(0)} ms`)
      }
    }
    return TARGETS.map((target) => {
      const of = (pick: (row: HerdRow) => number) => median(runs[target].map(pick))
      return {
        target,
        originGets: of((r) => r.originGets),
        originCopies: of((r) => r.originCopies),
        firstByteMs: of((r) => r.firstByteMs),
        lastFirstByteMs: of((r) => r.lastFirstByteMs),
        allDoneMs: of((r) => r.allDoneMs),
        cpuMs: of((r) => r.cpuMs),
      }
    })
  } finally {
    for (const child of children.reverse()) await stop(child)
    await rm(dir, { recursive: true, force: true })
  }
}

export function coldHerdTable(rows: HerdRow[], options: HerdOptions): string {
  const lines = [
    `cold herd: ${options.clients} clients at once for a cold ${options.bytes / MiB} MiB object, origin at ${(options.rate / 1e6).toFixed(0)} MB/s per answer, two workers each (on the one server CPU), ${options.reps} rep(s) (median): nginx proxy_cache_lock (it looks at the lock every 500 ms) vs the proxy (memory + disk, workers share the disk)`,
    '| target | origin GETs | origin bytes (x object) | first byte, median ms | first byte, last client ms | all done ms | server CPU ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of rows) {
    const name = r.target === 'nginx' ? 'nginx proxy_cache_lock' : 'proxy'
    lines.push(`| ${name} | ${r.originGets} | ${r.originCopies.toFixed(2)} | ${r.firstByteMs.toFixed(0)} | ${r.lastFirstByteMs.toFixed(0)} | ${r.allDoneMs.toFixed(0)} | ${r.cpuMs.toFixed(0)} |`)
  }
  return lines.join('\n')
}

export function coldHerdOptions(quick: boolean): HerdOptions {
  return {
    reps: Number(process.env.BENCH_HERD_REPS ?? (quick ? 1 : 3)),
    clients: Number(process.env.BENCH_HERD_CLIENTS ?? 16),
    bytes: Number(process.env.BENCH_HERD_MIB ?? 64) * MiB,
    rate: Number(process.env.BENCH_HERD_RATE ?? 25_000_000),
    log: (line) => process.stderr.write(`[bench] ${line}\n`),
  }
}

if (import.meta.main) await runBench(coldHerdOptions, measureColdHerd, coldHerdTable)
