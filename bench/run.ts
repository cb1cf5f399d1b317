// `npm run bench`: the read path under load, on this machine. Not part of `npm test`.
//   - 1 KiB GET: raw node:http answering the same bytes (the ceiling), straight from s3rver, and
//     through the proxy (uncached: proxy + s3rver)
//   - 50 MiB GET: MB/s straight from s3rver and through the proxy
//   - the proxy's peak RSS (it runs in its own process, as in production)
//   - cached 1 KiB GET with a JWT (memory hit) against the same raw node:http ceiling, with one
//     process and with `workers: auto` (one worker per CPU)
//   - the memory tier's hit ratio on a Zipf(1.0) workload; JWT verify cost
// Each measurement runs RUNS times; the table shows the median. Where `taskset` works (Linux, 2+
// CPUs), this process (autocannon and s3rver) runs on CPU 0 and each server under test on the
// others, so the load generator and the server do not take turns on one core; `workers: auto`
// gets every CPU (and shares CPU 0 with the load generator). Raw node:http and the cached proxy get
// the same request, JWT header included, and run in alternating pairs (BENCH_PAIRS of them): their
// ratio is the median of the per-pair ratios.
//   BENCH_DURATION (seconds per run, default 5), BENCH_CONNECTIONS (default 32), BENCH_RUNS (default 3),
//   BENCH_PAIRS (default 5)
//   BENCH_COMPARE_NODE=/path/to/other/node: also runs the proxy (cached hit and uncached miss) and
//   raw node:http on that Node.js binary and on this one, in alternating pairs, and prints them
//   side by side (e.g. Node 20 vs 24 in one run)
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import autocannon from 'autocannon'
// @ts-expect-error s3rver ships no type declarations
import S3rver from 's3rver'
import { SignJWT } from 'jose'
import { benchJwt } from './jwt.ts'
import { SHIPPED_FLAGS } from './support.ts'
import { zipfHitRatio } from './zipf.ts'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const PAIRS = Math.max(1, Number(process.env.BENCH_PAIRS ?? 5) || 1)
const SMALL = randomBytes(1024)
const JWT_SECRET = 'bench-secret-that-is-long-enough-for-hs256'
const LARGE = randomBytes(50 * 1024 * 1024)
const ROOT = join(import.meta.dirname, '..')

const CPUS = availableParallelism()
const PINNED = CPUS >= 2 && spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' }).status === 0
const ALL_CPUS = `0-${CPUS - 1}`
const SERVER_CPUS = CPUS >= 2 ? `1-${CPUS - 1}` : ALL_CPUS

/** A node process for a server under test, on the server CPUs (or `cpus`) when pinning works. */
function nodeServer(args: string[], options: SpawnOptions, cpus = SERVER_CPUS, node = process.execPath): ChildProcess {
  return PINNED ? spawn('taskset', ['-c', cpus, node, ...args], options) : spawn(node, args, options)
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return 0
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

async function load(url: string, headers: Record<string, string> = {}) {
  const result = await autocannon({ url, headers, connections: CONNECTIONS, duration: DURATION, pipelining: 1 })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`)
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99 }
}

function download(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    http
      .get(url, { agent: false }, (res) => {
        let bytes = 0
        res.on('data', (c: Buffer) => (bytes += c.length))
        res.on('end', () => {
          if (bytes !== LARGE.length) reject(new Error(`${url}: got ${bytes} bytes`))
          resolve(bytes / 1e6 / ((performance.now() - started) / 1000))
        })
      })
      .on('error', reject)
  })
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-'))
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3') })
  const { port: s3Port } = (await s3rver.run()) as AddressInfo
  const s3Url = `http://127.0.0.1:${s3Port}`
  const client = new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
  await client.send(new CreateBucketCommand({ Bucket: 'bench' }))
  await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'small.bin', Body: SMALL }))
  await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'large.bin', Body: LARGE }))
  client.destroy()

  const rawPort = await freePort()
  const raw = nodeServer([join(ROOT, 'bench/raw-server.mjs'), String(rawPort)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  await new Promise((resolve) => raw.once('message', resolve))
  const rawUrl = `http://127.0.0.1:${rawPort}/`

  const proxyPort = await freePort()
  const configFile = join(dir, 'config.yaml')
  const configText = `server: { address: "127.0.0.1:${proxyPort}" }
logging: { level: info }
cache:
  memory: { max_size: 64MB }
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${s3Url}", access_key: S3RVER, secret_key: S3RVER }
  - name: cached
    path_prefix: /cached
    s3: { bucket: bench, endpoint: "${s3Url}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: true, ttl_seconds: 3600 }
    auth: { enabled: true, jwt: { secret: "${JWT_SECRET}" } }
`
  await writeFile(configFile, configText)
  // The compiled proxy in its own process, as in production; access logs go to /dev/null.
  await new Promise<void>((resolve, reject) =>
    spawn('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' }).on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error('build failed'))
    )
  )
  const proxy = nodeServer([...SHIPPED_FLAGS, join(ROOT, 'dist/main.js'), '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  await waitForHealth(`http://127.0.0.1:${proxyPort}/health`)
  const proxyUrl = `http://127.0.0.1:${proxyPort}`

  const token = await new SignJWT({ sub: 'bench' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(JWT_SECRET))
  const rows: Array<[string, { rps: number; p50: number; p99: number }]> = []
  const withJwt = { authorization: `Bearer ${token}` }
  // The ceiling and the cached hit are measured in pairs, back to back: this VM has slow and fast
  // phases tens of seconds long, and measuring all of one and then all of the other would put them
  // in different phases. The ratio is the median of the per-pair ratios.
  const rawUrlAndHeaders = [rawUrl, withJwt] as const
  const cachedUrlAndHeaders = [`${proxyUrl}/cached/small.bin`, withJwt] as const
  await load(...rawUrlAndHeaders) // warm-up
  await load(...cachedUrlAndHeaders)
  type Load = Awaited<ReturnType<typeof load>>
  const rawRuns: Load[] = []
  const cachedRuns: Load[] = []
  for (let i = 0; i < PAIRS; i++) {
    // Which one goes first alternates, so a steady drift does not favour either.
    if (i % 2 === 0) rawRuns.push(await load(...rawUrlAndHeaders))
    cachedRuns.push(await load(...cachedUrlAndHeaders))
    if (i % 2 === 1) rawRuns.push(await load(...rawUrlAndHeaders))
  }
  const summary = (runs: Load[]) => ({
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
  })
  const pairRatios = cachedRuns.map((r, i) => r.rps / (rawRuns[i] as Load).rps)
  rows.push(['raw node:http, same 1 KiB, same request', summary(rawRuns)])
  rows.push(['proxy, cached 1 KiB with a JWT (memory hit)', summary(cachedRuns)])
  const targets: Array<[string, string, Record<string, string>]> = [
    ['s3rver direct, 1 KiB', `${s3Url}/bench/small.bin`, {}],
    ['proxy -> s3rver, 1 KiB (uncached)', `${proxyUrl}/bench/small.bin`, {}],
  ]
  for (const [name, url, headers] of targets) {
    await load(url, headers) // warm-up
    const runs: Load[] = []
    for (let i = 0; i < RUNS; i++) runs.push(await load(url, headers))
    rows.push([name, summary(runs)])
  }
  const rssAfterSmall = await peakRssMiB(proxy.pid as number)
  rows.push(['proxy with tracing on (every request sampled, OTLP to a local sink), cached 1 KiB with a JWT', await tracedCachedLoad(dir, configText, token)])
  rows.push([`proxy with workers: auto (${CPUS} workers, all CPUs), cached 1 KiB with a JWT`, await clusterCachedLoad(dir, configText, token)])
  const throughput: Array<[string, number]> = []
  for (const [name, url] of [['s3rver direct', `${s3Url}/bench/large.bin`], ['proxy -> s3rver', `${proxyUrl}/bench/large.bin`]] as const) {
    await download(url)
    const runs = []
    for (let i = 0; i < RUNS; i++) runs.push(await download(url))
    throughput.push([name, median(runs)])
  }
  const peakRss = await peakRssMiB(proxy.pid as number)

  console.log(`\n1 KiB GET, ${CONNECTIONS} connections, ${DURATION}s x ${RUNS} runs (median; raw and cached: ${PAIRS} alternating pairs), ${PINNED ? `load generator on CPU 0, servers on CPUs ${SERVER_CPUS}` : 'not pinned'}`)
  console.log('| target | req/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |')
  for (const [name, r] of rows) console.log(`| ${name} | ${Math.round(r.rps)} | ${r.p50} | ${r.p99} |`)
  console.log(
    `\ncached hit / raw node:http, per alternating pair: ${pairRatios.map((r) => `${Math.round(r * 100)}%`).join(', ')}; ` +
      `median ${Math.round(median(pairRatios) * 100)}% (target >= 60%)`
  )
  console.log(`\n50 MiB GET, one at a time, ${RUNS} runs (median)`)
  console.log('| path | MB/s |\n| --- | ---: |')
  for (const [name, mbs] of throughput) console.log(`| ${name} | ${Math.round(mbs)} |`)
  console.log(`\nproxy peak RSS: ${rssAfterSmall.toFixed(1)} MiB after the 1 KiB load, ${peakRss.toFixed(1)} MiB after the 50 MiB downloads`)

  console.log(`\nmemory tier hit ratio, Zipf(1.0) over 10,000 objects, cache holding 10%: ${((await zipfHitRatio()) * 100).toFixed(1)}%`)
  const jwt = await benchJwt(RUNS)
  console.log(`\nJWT verify (in-process, ${RUNS} runs, median): fresh HS256 ${jwt.freshUs.toFixed(1)} us, cached ${jwt.cachedUs.toFixed(2)} us`)

  proxy.kill('SIGTERM')
  await new Promise((resolve) => proxy.once('exit', resolve))
  raw.kill()

  const otherNode = process.env.BENCH_COMPARE_NODE
  if (otherNode !== undefined && otherNode !== '') await compareRuntimes(dir, configText, token, otherNode)

  const failover = await primaryKillUnderLoad(dir, s3Port)
  console.log(
    `\nprimary killed under steady load (2 replicas, ${CONNECTIONS} connections, ${DURATION * 2}s, primary down at ${DURATION}s): ` +
      `${failover.requests} requests, ${failover.failed} failed (non-2xx or errors), served by the backup after the kill: ${failover.backupShare}`
  )
  await s3rver.close()
  await rm(dir, { recursive: true, force: true })
}

/**
 * The same proxy and the same raw node:http server on two Node.js binaries, in alternating pairs
 * (the VM's slow and fast phases hit both alike): cached hit, uncached miss, raw.
 */
async function compareRuntimes(dir: string, configText: string, token: string, otherNode: string): Promise<void> {
  const nodes = [otherNode, process.execPath]
  const versions = nodes.map((node) => spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim())
  type Row = { raw: number[]; cached: number[]; miss: number[] }
  const rows: Row[] = nodes.map(() => ({ raw: [], cached: [], miss: [] }))
  const started = await Promise.all(
    nodes.map(async (node, n) => {
      const port = await freePort()
      const configFile = join(dir, `runtime-${n}.yaml`)
      await writeFile(configFile, configText.replace(/127\.0\.0\.1:\d+" \}/, `127.0.0.1:${port}" }`))
      const proxy = nodeServer([...SHIPPED_FLAGS, join(ROOT, 'dist/main.js'), '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] }, SERVER_CPUS, node)
      const rawPort = await freePort()
      const raw = nodeServer([join(ROOT, 'bench/raw-server.mjs'), String(rawPort)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }, SERVER_CPUS, node)
      await new Promise((resolve) => raw.once('message', resolve))
      await waitForHealth(`http://127.0.0.1:${port}/health`)
      return { proxy, raw, proxyUrl: `http://127.0.0.1:${port}`, rawUrl: `http://127.0.0.1:${rawPort}/` }
    })
  )
  const headers = { authorization: `Bearer ${token}` }
  for (const s of started) {
    await load(s.rawUrl, headers)
    await load(`${s.proxyUrl}/cached/small.bin`, headers)
    await load(`${s.proxyUrl}/bench/small.bin`)
  }
  for (let i = 0; i < PAIRS; i++) {
    const order = i % 2 === 0 ? [0, 1] : [1, 0]
    for (const n of order) {
      const s = started[n]!
      const row = rows[n]!
      row.raw.push((await load(s.rawUrl, headers)).rps)
      row.cached.push((await load(`${s.proxyUrl}/cached/small.bin`, headers)).rps)
      row.miss.push((await load(`${s.proxyUrl}/bench/small.bin`)).rps)
    }
  }
  for (const s of started) {
    s.raw.kill()
    s.proxy.kill('SIGTERM')
    await new Promise((resolve) => s.proxy.once('exit', resolve))
  }
  console.log(`\nNode.js side by side (${PAIRS} alternating rounds, median req/s, 1 KiB, ${CONNECTIONS} connections)`)
  console.log(`| | ${versions.join(' | ')} |\n| --- | ${versions.map(() => '---:').join(' | ')} |`)
  const line = (name: string, pick: (r: Row) => number[]) => console.log(`| ${name} | ${rows.map((r) => Math.round(median(pick(r)))).join(' | ')} |`)
  line('raw node:http, same request', (r) => r.raw)
  line('proxy, cached 1 KiB with a JWT', (r) => r.cached)
  line('proxy -> s3rver, 1 KiB uncached', (r) => r.miss)
  console.log(`| cached / raw | ${rows.map((r) => `${Math.round((median(r.cached) / median(r.raw)) * 100)}%`).join(' | ')} |`)
}

/** The cached target again, through a second proxy with tracing on, exporting to a local OTLP sink. */
async function tracedCachedLoad(dir: string, configText: string, token: string): Promise<{ rps: number; p50: number; p99: number }> {
  const sink = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'))
  })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
  const tracing = `observability:\n  tracing: { enabled: true, otlp_endpoint: "http://127.0.0.1:${(sink.address() as AddressInfo).port}", sampling_ratio: 1 }\n`
  const result = await cachedLoadWith(dir, 'traced.yaml', (port) => configText.replace(/127\.0\.0\.1:\d+" \}/, `127.0.0.1:${port}" }`) + tracing, token)
  sink.close()
  return result
}

/** The cached target again, through a proxy in cluster mode with one worker per CPU. */
function clusterCachedLoad(dir: string, configText: string, token: string): Promise<{ rps: number; p50: number; p99: number }> {
  return cachedLoadWith(dir, 'cluster.yaml', (port) => configText.replace(/127\.0\.0\.1:\d+" \}/, `127.0.0.1:${port}", workers: auto }`), token, ALL_CPUS)
}

/** Starts the compiled proxy on `config(port)` and measures the cached JWT target through it. */
async function cachedLoadWith(
  dir: string,
  name: string,
  config: (port: number) => string,
  token: string,
  cpus = SERVER_CPUS
): Promise<{ rps: number; p50: number; p99: number }> {
  const port = await freePort()
  const configFile = join(dir, name)
  await writeFile(configFile, config(port))
  const proxy = nodeServer([...SHIPPED_FLAGS, join(ROOT, 'dist/main.js'), '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] }, cpus)
  await waitForHealth(`http://127.0.0.1:${port}/health`)
  const url = `http://127.0.0.1:${port}/cached/small.bin`
  const headers = { authorization: `Bearer ${token}` }
  await load(url, headers)
  const runs = []
  for (let i = 0; i < RUNS; i++) runs.push(await load(url, headers))
  proxy.kill('SIGTERM')
  await new Promise((resolve) => proxy.once('exit', resolve))
  return { rps: median(runs.map((r) => r.rps)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)) }
}

/**
 * A bucket with two replicas (both the bench's s3rver, the primary behind a TCP relay that can be
 * cut), uncached, under steady load; the relay is killed half-way (listener closed, every
 * connection reset). Counts the requests that failed.
 */
async function primaryKillUnderLoad(dir: string, s3Port: number): Promise<{ requests: number; failed: number; backupShare: string }> {
  const sockets = new Set<net.Socket>()
  const relay = net.createServer((client) => {
    const upstream = net.connect(s3Port, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.pipe(upstream).pipe(client)
    const drop = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve))
  const relayPort = (relay.address() as AddressInfo).port
  const port = await freePort()
  const configFile = join(dir, 'replicas.yaml')
  await writeFile(
    configFile,
    `server: { address: "127.0.0.1:${port}", debug_headers: true }
logging: { level: warn }
buckets:
  - name: ha
    path_prefix: /ha
    s3:
      bucket: bench
      access_key: S3RVER
      secret_key: S3RVER
      timeout: 10
      replicas:
        - { name: primary, priority: 1, endpoint: "http://127.0.0.1:${relayPort}", timeout: 2 }
        - { name: backup, priority: 2, endpoint: "http://127.0.0.1:${s3Port}", timeout: 2 }
      circuit_breaker: { failure_threshold: 3, timeout_seconds: 30 }
`
  )
  const proxy = nodeServer([...SHIPPED_FLAGS, join(ROOT, 'dist/main.js'), '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  await waitForHealth(`http://127.0.0.1:${port}/health`)
  let servedByBackup = 0
  let afterKill = 0
  let killed = false
  const run = autocannon({
    url: `http://127.0.0.1:${port}/ha/small.bin`,
    connections: CONNECTIONS,
    duration: DURATION * 2,
    // Reads X-Served-By from each response's headers (autocannon hands over the parser's raw list).
    setupClient: (client) =>
      client.on('headers', (info) => {
        if (!killed) return
        afterKill++
        const raw = (info as unknown as { headers: string[] }).headers
        const at = raw.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'x-served-by')
        if (at >= 0 && raw[at + 1] === 'backup') servedByBackup++
      }),
  })
  setTimeout(() => {
    killed = true
    relay.close()
    for (const socket of sockets) socket.destroy()
  }, DURATION * 1000)
  const result = await run
  proxy.kill('SIGTERM')
  await new Promise((resolve) => proxy.once('exit', resolve))
  return {
    requests: result.requests.total,
    failed: result.non2xx + result.errors,
    backupShare: afterKill === 0 ? 'n/a' : `${Math.round((servedByBackup / afterKill) * 100)}%`,
  }
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

async function waitForHealth(url: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const ok = await new Promise<boolean>((resolve) =>
      http.get(url, (res) => resolve(res.statusCode === 200)).on('error', () => resolve(false))
    )
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error('the proxy did not start')
}

await main()
