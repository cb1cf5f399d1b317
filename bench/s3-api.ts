// `npx tsx bench/s3-api.ts`: what the S3 API listener costs next to the HTTP path, on this machine.
// Not part of `npm test` or `npm run bench`.
//   - `aws s3 cp`-style reads: 8 MiB ranged GETs of a 64 MiB object the memory tier holds, through
//     the S3 listener (SigV4 header auth, signed ahead of time with the AWS SDK's signer, so the
//     client's signing is not measured) and the same ranges through the HTTP path (a bucket without
//     auth), in the same run, rounds alternating. Measured on the server side: the proxy's CPU per
//     request (the run time of all its threads, /proc/<pid>/task/*/schedstat) and MB/s; the ratio
//     is the median of per-pair ratios.
//   - SigV4 verification alone (verifySigV4 in this process): CPU µs per header-signed and
//     presigned request, the signing key cached as the listener caches it. Target: under 20 µs.
// The proxy runs from src/ through tsx in its own process (pinned to the other CPUs where taskset
// works; this process, the client and s3rver, on CPU 0).
//   - the same with 1 KiB ranges, where the copying is small and the front end's cost per request
//     shows.
//   BENCH_ROUNDS (pairs, default 5), BENCH_REQUESTS (8 MiB GETs per round, default 64),
//   BENCH_SMALL_REQUESTS (1 KiB GETs per round, default 4000),
//   BENCH_CONCURRENCY (default 8, as `aws s3 cp`'s max_concurrent_requests is 10),
//   BENCH_VERIFY (verifications per micro-measure, default 200000)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { Sha256 } from '@aws-crypto/sha256-js'
import { HttpRequest } from '@smithy/protocol-http'
import { SignatureV4 } from '@smithy/signature-v4'
// @ts-expect-error s3rver ships no type declarations
import S3rver from 's3rver'
import { SigningKeyCache, verifySigV4, type SignedRequest } from '../src/frontends/s3-api/sigv4.ts'
import { cpuOf } from './support.ts'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5) || 1)
const REQUESTS = Math.max(8, Number(process.env.BENCH_REQUESTS ?? 64) || 64)
const CONCURRENCY = Math.max(1, Number(process.env.BENCH_CONCURRENCY ?? 8) || 8)
const SMALL_REQUESTS = Math.max(100, Number(process.env.BENCH_SMALL_REQUESTS ?? 4000) || 4000)
const VERIFY = Math.max(1000, Number(process.env.BENCH_VERIFY ?? 200_000) || 200_000)
const PART = 8 * 1024 * 1024
const OBJECT = randomBytes(64 * 1024 * 1024)
const KEY = { id: 'BENCHREADER00001', secret: 'bench-reader-secret-0123456789-abcdefghijk' }
const ROOT = join(import.meta.dirname, '..')
const CPUS = availableParallelism()
const PINNED = CPUS >= 2 && spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' }).status === 0

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

async function waitFor(url: string, deadlineMs = 60_000): Promise<void> {
  const until = Date.now() + deadlineMs
  for (;;) {
    try {
      const res = await fetch(url)
      await res.arrayBuffer()
      if (res.status < 500) return
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`${url} did not answer within ${deadlineMs / 1000} s`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

interface Target {
  port: number
  path: string
  /** Headers per range (the S3 ones signed for that range). */
  headers: Array<Record<string, string>>
  /** The bytes each range answers. */
  size: number
  requests: number
}

/** `target.requests` ranged GETs over CONCURRENCY keep-alive connections; checks every answer. */
async function load(target: Target): Promise<{ seconds: number; bytes: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  let next = 0
  let bytes = 0
  const started = performance.now()
  const worker = async () => {
    for (let i = next++; i < target.requests; i = next++) {
      const part = i % target.headers.length
      bytes += await new Promise<number>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: target.port, path: target.path, headers: target.headers[part], agent }, (res) => {
          let size = 0
          res.on('data', (chunk: Buffer) => (size += chunk.length))
          // Every answer must be a cache hit: a miss would measure the origin, not the front end.
          const hit = /; hit\b/.test(String(res.headers['cache-status']))
          res.on('end', () => (res.statusCode === 206 && size === target.size && hit ? resolve(size) : reject(new Error(`${target.path}: ${res.statusCode}, ${size} bytes, ${res.headers['cache-status']}`))))
          res.on('error', reject)
        })
        req.on('error', reject)
      })
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  agent.destroy()
  return { seconds: (performance.now() - started) / 1000, bytes }
}

async function round(target: Target, pid: number): Promise<{ cpuUsPerRequest: number; mbPerSecond: number }> {
  const cpu = await cpuOf(pid)
  const { seconds, bytes } = await load(target)
  return { cpuUsPerRequest: ((await cpuOf(pid)) - cpu) / target.requests, mbPerSecond: bytes / 1024 / 1024 / seconds }
}

/** Header-signed requests, one per range, signed now with the AWS SDK's SigV4 signer. */
async function signedRanges(port: number, path: string, ranges: readonly string[]): Promise<Array<Record<string, string>>> {
  const signer = new SignatureV4({ credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
  const signed: Array<Record<string, string>> = []
  for (const range of ranges) {
    const request = await signer.sign(
      new HttpRequest({
        method: 'GET',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port,
        path,
        // As botocore sends a ranged GetObject.
        headers: { host: `127.0.0.1:${port}`, range, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'user-agent': 'aws-cli/2.9 bench' },
      })
    )
    signed.push(request.headers as Record<string, string>)
  }
  return signed
}

type Run = { cpuUsPerRequest: number; mbPerSecond: number }

/** Rounds of the two paths in pairs, alternating which goes first (the machine has slow phases). */
async function pairs(viaHttp: Target, viaS3: Target, pid: number): Promise<{ http: Run[]; s3: Run[] }> {
  await load(viaHttp)
  await load(viaS3)
  const out = { http: [] as Run[], s3: [] as Run[] }
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 2 === 0) {
      out.http.push(await round(viaHttp, pid))
      out.s3.push(await round(viaS3, pid))
    } else {
      out.s3.push(await round(viaS3, pid))
      out.http.push(await round(viaHttp, pid))
    }
  }
  return out
}

function report(title: string, runs: { http: Run[]; s3: Run[] }): void {
  const cpu = (list: Run[]) => median(list.map((r) => r.cpuUsPerRequest))
  const mb = (list: Run[]) => median(list.map((r) => r.mbPerSecond))
  const cpuRatio = median(runs.http.map((h, i) => (runs.s3[i] as Run).cpuUsPerRequest / h.cpuUsPerRequest))
  const mbRatio = median(runs.http.map((h, i) => (runs.s3[i] as Run).mbPerSecond / h.mbPerSecond))
  const row = (name: string, list: Run[]) =>
    `| ${name.padEnd(28)} | ${cpu(list).toFixed(0).padStart(12)} | ${mb(list).toFixed(1).padStart(8)} | ${list.map((r) => r.cpuUsPerRequest.toFixed(0)).join(' ')}`
  console.log(`\n${title}\n`)
  console.log(`| ${'path'.padEnd(28)} | proxy CPU µs | MB/s     | CPU µs per round`)
  console.log(`| ${'-'.repeat(28)} | ${'-'.repeat(12)} | -------- | ---`)
  console.log(row('HTTP path (no auth)', runs.http))
  console.log(row('S3 listener (SigV4 header)', runs.s3))
  const extra = cpu(runs.s3) - cpu(runs.http)
  console.log(`S3 / HTTP (median of per-pair ratios): CPU per request x${cpuRatio.toFixed(3)} (${extra >= 0 ? '+' : ''}${extra.toFixed(0)} µs between the medians), MB/s x${mbRatio.toFixed(3)}`)
}

/** CPU µs per verifySigV4 of a header-signed and of a presigned GET (the listener's options). */
async function verifyCost(): Promise<{ header: number; presigned: number }> {
  const signer = new SignatureV4({ credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret }, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false })
  const base = { method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: 9000, path: '/bench/videos/intro%202024.mp4' }
  const headerSigned = await signer.sign(
    new HttpRequest({ ...base, headers: { host: '127.0.0.1:9000', range: 'bytes=0-8388607', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'user-agent': 'aws-cli/2.9 bench' } })
  )
  // As S3's presigner: UNSIGNED-PAYLOAD in the canonical request, the header itself not sent.
  const unsigned = new Set(['x-amz-content-sha256'])
  const presigned = await signer.presign(new HttpRequest({ ...base, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } }), {
    expiresIn: 3600,
    unsignableHeaders: unsigned,
    unhoistableHeaders: unsigned,
  })
  const target = '/bench/videos/intro%202024.mp4'
  const rawOf = (headers: Record<string, string>) => Object.entries(headers).flat()
  const requests: Array<[string, SignedRequest]> = [
    ['header', { method: 'GET', target, rawHeaders: rawOf(headerSigned.headers as Record<string, string>) }],
    ['presigned', { method: 'GET', target: `${target}?${new URLSearchParams(presigned.query as Record<string, string>).toString().replaceAll('+', '%20')}`, rawHeaders: ['Host', '127.0.0.1:9000'] }],
  ]
  const options = { region: 'us-east-1', secretOf: (id: string) => (id === KEY.id ? KEY.secret : undefined), keys: new SigningKeyCache() }
  const out: Record<string, number> = {}
  for (const [name, request] of requests) {
    if (verifySigV4(request, options).accessKeyId !== KEY.id) throw new Error(`${name}: not verified`)
    for (let i = 0; i < VERIFY / 10; i++) verifySigV4(request, options) // warm-up
    // CPU time, not wall time: on a shared machine the wall clock also counts the time this
    // process waited for a CPU.
    const runs: number[] = []
    for (let r = 0; r < 5; r++) {
      const started = process.cpuUsage()
      for (let i = 0; i < VERIFY / 5; i++) verifySigV4(request, options)
      const used = process.cpuUsage(started)
      runs.push((used.user + used.system) / (VERIFY / 5))
    }
    out[name] = median(runs)
  }
  return { header: out.header as number, presigned: out.presigned as number }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-s3-api-'))
  let proxy: ChildProcess | undefined
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3rver') })
  const { port: s3Port } = (await s3rver.run()) as AddressInfo
  try {
    const s3Url = `http://127.0.0.1:${s3Port}`
    const client = new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
    await client.send(new CreateBucketCommand({ Bucket: 'bench' }))
    await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'big.bin', Body: OBJECT }))
    client.destroy()

    const [httpPort, s3ApiPort] = [await freePort(), await freePort()]
    const configFile = join(dir, 'config.yaml')
    await writeFile(
      configFile,
      `server: { address: "127.0.0.1:${httpPort}" }
logging: { level: info }
cache:
  max_item_size: 80MB
  memory: { max_size: 256MB }
s3_api:
  enabled: true
  address: "127.0.0.1:${s3ApiPort}"
  credentials:
    - { access_key_id: ${KEY.id}, secret_access_key: "${KEY.secret}", buckets: [bench] }
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${s3Url}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: true, ttl_seconds: 3600 }
`
    )
    const args = ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', configFile]
    const options = { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] as ('ignore' | 'inherit')[] }
    proxy = PINNED ? spawn('taskset', ['-c', `1-${CPUS - 1}`, process.execPath, ...args], options) : spawn(process.execPath, args, options)
    await waitFor(`http://127.0.0.1:${httpPort}/health`)
    // taskset execs the command: the pid is the proxy's either way.
    const pid = proxy.pid as number

    const path = '/bench/big.bin'
    const parts: string[] = []
    for (let start = 0; start < OBJECT.length; start += PART) parts.push(`bytes=${start}-${start + PART - 1}`)
    // 1 KiB ranges: the copying is small, so what the front end adds per request shows.
    const smalls = Array.from({ length: 64 }, (_, i) => `bytes=${i * 1_000_003}-${i * 1_000_003 + 1023}`)
    const asHttp = (ranges: string[]) => ranges.map((range) => ({ range }))
    // Fill the cache (one whole GET) before anything is measured.
    await new Promise<void>((resolve, reject) => http.get(`http://127.0.0.1:${httpPort}${path}`, (res) => res.resume().on('end', resolve).on('error', reject)).on('error', reject))

    const large = await pairs(
      { port: httpPort, path, headers: asHttp(parts), size: PART, requests: REQUESTS },
      { port: s3ApiPort, path, headers: await signedRanges(s3ApiPort, path, parts), size: PART, requests: REQUESTS },
      pid
    )
    const small = await pairs(
      { port: httpPort, path, headers: asHttp(smalls), size: 1024, requests: SMALL_REQUESTS },
      { port: s3ApiPort, path, headers: await signedRanges(s3ApiPort, path, smalls), size: 1024, requests: SMALL_REQUESTS },
      pid
    )
    const verify = await verifyCost()

    const setting = `${ROUNDS} pairs, ${CONCURRENCY} connections, Node ${process.version}${PINNED ? ', proxy pinned apart from the client' : ''}`
    report(`8 MiB ranged GETs of a cached 64 MiB object (aws s3 cp's parts): ${REQUESTS} a round, ${setting}`, large)
    report(`1 KiB ranged GETs of the same object: ${SMALL_REQUESTS} a round, ${setting}`, small)
    console.log(`\nSigV4 verification (verifySigV4 alone, ${VERIFY} each, CPU time): ${verify.header.toFixed(1)} µs header-signed, ${verify.presigned.toFixed(1)} µs presigned (target < 20 µs)`)
  } finally {
    proxy?.kill('SIGTERM')
    if (proxy !== undefined && proxy.exitCode === null) await new Promise((resolve) => proxy?.once('exit', resolve))
    await s3rver.close()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
