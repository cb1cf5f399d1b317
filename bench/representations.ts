// Representations under load (part of `npm run bench`; alone: `npx tsx bench/representations.ts`):
//   - renders per second of a 12 MP JPEG to a 640 px AVIF and WebP (ImageRenderer in this process,
//     one at a time and with every render slot busy)
//   - a cached image variant hit and a cached compressed hit, each beside a plain cached hit of an
//     object of exactly the same size, in alternating pairs against the same proxy process: the
//     ratio is what answering a representation costs over answering bytes.
// BENCH_DURATION (seconds per run, default 5), BENCH_CONNECTIONS (default 32), BENCH_PAIRS (default 3)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import autocannon from 'autocannon'
// @ts-expect-error s3rver ships no type declarations
import S3rver from 's3rver'
import sharp from 'sharp'
import { bucketImagesSchema, normalizeImages } from '../src/config/representations-schema.ts'
import { ImageRenderer } from '../src/images/render.ts'
import { freePort, median, waitFor200 } from './support.ts'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32)
const PAIRS = Math.max(1, Number(process.env.BENCH_PAIRS ?? 3) || 1)
const ROOT = join(import.meta.dirname, '..')
const CPUS = availableParallelism()
const PINNED = CPUS >= 2 && spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' }).status === 0

async function load(url: string, headers: Record<string, string> = {}): Promise<number> {
  const result = await autocannon({ url, headers, connections: CONNECTIONS, duration: DURATION, pipelining: 1 })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`)
  return result.requests.average
}

function fetchOnce(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      })
      .on('error', reject)
  })
}

/** Renders per second of `input` to 640 px `format`, `parallel` at a time, for about `seconds`. */
async function renderRate(renderer: ImageRenderer, input: Buffer, format: 'avif' | 'webp', parallel: number, seconds: number): Promise<number> {
  const job = { params: { width: 640, height: undefined, fit: 'inside' as const, format, quality: 75, preset: undefined }, format, label: 'bench' }
  await renderer.render(input, job) // warm-up
  let done = 0
  const started = performance.now()
  const deadline = started + seconds * 1000
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (performance.now() < deadline) {
        await renderer.render(input, job)
        done++
      }
    })
  )
  return done / ((performance.now() - started) / 1000)
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-bench-repr-'))
  const photo = await sharp({ create: { width: 4000, height: 3000, channels: 3, background: '#000000', noise: { type: 'gaussian', mean: 128, sigma: 50 } } })
    .blur(2)
    .jpeg({ quality: 85 })
    .toBuffer()

  // 1. Renders per second (libvips on its own threads; this process is the only load).
  const images = normalizeImages(bucketImagesSchema.parse({ allow_arbitrary: true }), undefined)
  if (images === null) throw new Error('images config')
  const renderer = new ImageRenderer('bench', { ...images, max_concurrent: CPUS, max_queue: 1000 }, undefined)
  const renderRows: Array<[string, string, string]> = []
  for (const format of ['avif', 'webp'] as const) {
    const one = await renderRate(renderer, photo, format, 1, DURATION)
    const all = await renderRate(renderer, photo, format, CPUS, DURATION)
    renderRows.push([`12 MP JPEG -> 640 px ${format.toUpperCase()}`, one.toFixed(1), all.toFixed(1)])
  }

  // 2. Cached representation hits beside plain hits of the same size.
  const s3rver = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dir, 's3') })
  const { port: s3Port } = (await s3rver.run()) as AddressInfo
  const s3Url = `http://127.0.0.1:${s3Port}`
  const client = new S3Client({ endpoint: s3Url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
  await client.send(new CreateBucketCommand({ Bucket: 'bench' }))
  const script = Buffer.from(Array.from({ length: 3000 }, (_, i) => `export const value${i} = compute(${i}, "item-${i % 37}");\n`).join(''))
  await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'photo.jpg', Body: photo, ContentType: 'image/jpeg' }))
  await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'app.js', Body: script, ContentType: 'application/javascript' }))

  const port = await freePort()
  const configFile = join(dir, 'config.yaml')
  await writeFile(
    configFile,
    `server: { address: "127.0.0.1:${port}" }
logging: { level: warn }
cache:
  memory: { max_size: 128MB }
  max_item_size: 32MB
buckets:
  - name: bench
    path_prefix: /bench
    s3: { bucket: bench, endpoint: "${s3Url}", access_key: S3RVER, secret_key: S3RVER }
    cache: { enabled: true, ttl_seconds: 3600 }
    images: { allow_arbitrary: true }
    compression: { enabled: true }
`
  )
  const args = ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', configFile]
  const proxy: ChildProcess = PINNED ? spawn('taskset', ['-c', `1-${CPUS - 1}`, process.execPath, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] }) : spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  const base = `http://127.0.0.1:${port}`
  try {
    await waitFor200(`${base}/health`, 'the proxy')
    const variantUrl = `${base}/bench/photo.jpg?w=640&fmt=webp`
    const variant = await fetchOnce(variantUrl)
    const compressed = await fetchOnce(`${base}/bench/app.js`, { 'accept-encoding': 'br' })
    if (variant.status !== 200 || compressed.headers['content-encoding'] !== 'br') throw new Error('representations not made')
    // Plain objects of exactly the representations' sizes.
    await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'same-as-variant.bin', Body: randomBytes(variant.body.length) }))
    await client.send(new PutObjectCommand({ Bucket: 'bench', Key: 'same-as-compressed.bin', Body: randomBytes(compressed.body.length) }))
    await fetchOnce(`${base}/bench/same-as-variant.bin`)
    await fetchOnce(`${base}/bench/same-as-compressed.bin`)

    const rows: Array<[string, number, number, number]> = []
    for (const [name, url, headers, plainUrl] of [
      [`image variant hit (${variant.body.length} B WebP)`, variantUrl, {}, `${base}/bench/same-as-variant.bin`],
      [`compressed hit (${compressed.body.length} B br)`, `${base}/bench/app.js`, { 'accept-encoding': 'gzip, deflate, br, zstd' }, `${base}/bench/same-as-compressed.bin`],
    ] as const) {
      await load(url, headers)
      await load(plainUrl)
      const reps: number[] = []
      const plains: number[] = []
      const ratios: number[] = []
      for (let i = 0; i < PAIRS; i++) {
        const plain = await load(plainUrl)
        const rep = await load(url, headers)
        plains.push(plain)
        reps.push(rep)
        ratios.push(rep / plain)
      }
      rows.push([name, median(reps), median(plains), median(ratios)])
    }

    console.log(`\nRepresentations (Node ${process.version}, ${CPUS} CPUs${PINNED ? ', proxy pinned to CPUs 1+' : ''}, ${CONNECTIONS} connections, ${DURATION}s runs, medians of ${PAIRS} pairs)\n`)
    console.log('| render | renders/s, one at a time | renders/s, every slot busy |')
    console.log('| --- | ---: | ---: |')
    for (const [name, one, all] of renderRows) console.log(`| ${name} | ${one} | ${all} |`)
    console.log('\n| cached hit | req/s | plain hit, same size, req/s | ratio |')
    console.log('| --- | ---: | ---: | ---: |')
    for (const [name, rep, plain, ratio] of rows) console.log(`| ${name} | ${Math.round(rep)} | ${Math.round(plain)} | ${ratio.toFixed(2)}x |`)
  } finally {
    proxy.kill('SIGTERM')
    client.destroy()
    await s3rver.close()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
