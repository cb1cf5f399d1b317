// Compression cost per encoding and level on real text, to choose (and recheck) the levels in
// src/compression/compress.ts: size ratio and milliseconds per object, one at a time, for a 100 KiB
// minified JS file, 100 KiB of JSON and 1 MiB of prose (Markdown), then the throughput of the
// chosen levels with the threadpool busy. Not part of `npm run bench`; run it with
//   npx tsx bench/compression.ts
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { availableParallelism } from 'node:os'
import * as zlib from 'node:zlib'
import { COMPRESSION_LEVELS, compressAtLevel } from '../src/compression/compress.ts'
import { ZSTD_AVAILABLE } from '../src/compression/negotiate.ts'
import type { CompressionEncoding } from '../src/config/representations-schema.ts'

const ROOT = join(import.meta.dirname, '..')
const KiB = 1024
const MiB = 1024 * KiB

const CANDIDATES: Record<CompressionEncoding, number[]> = {
  br: [1, 4, 5, 6, 9, 11],
  zstd: [1, 3, 6, 9, 12, 19],
  gzip: [1, 6, 9],
}

/** The first `size` bytes of a file in node_modules (real shipped content, not generated text). */
async function head(path: string, size: number): Promise<Buffer> {
  const bytes = await readFile(join(ROOT, path))
  if (bytes.byteLength < size) throw new Error(`${path} is smaller than ${size} bytes; pick another sample`)
  return bytes.subarray(0, size)
}

/** 1 MiB of distinct prose: the packages' README.md files, sorted by path, duplicates skipped. */
async function readmes(size: number): Promise<Buffer> {
  const dir = join(ROOT, 'node_modules')
  const paths: string[] = []
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!entry.isDirectory()) continue
    const scoped = entry.name.startsWith('@')
    const names = scoped ? (await readdir(join(dir, entry.name))).sort().map((n) => join(entry.name, n)) : [entry.name]
    for (const name of names) paths.push(join(dir, name, 'README.md'))
  }
  const seen = new Set<string>()
  const parts: Buffer[] = []
  let total = 0
  for (const path of paths) {
    const text = await readFile(path).catch(() => undefined)
    if (text === undefined) continue
    const digest = createHash('sha256').update(text).digest('hex')
    if (seen.has(digest)) continue
    seen.add(digest)
    parts.push(text)
    total += text.byteLength
    if (total >= size) return Buffer.concat(parts).subarray(0, size)
  }
  throw new Error(`node_modules READMEs hold only ${total} bytes`)
}

function roundTrip(encoding: CompressionEncoding, compressed: Buffer): Buffer {
  if (encoding === 'br') return zlib.brotliDecompressSync(compressed)
  if (encoding === 'gzip') return zlib.gunzipSync(compressed)
  return zlib.zstdDecompressSync(compressed)
}

/** Median ms per compression, one at a time, after a warm-up; at least 3 runs and 0.5 s. */
async function measure(bytes: Buffer, encoding: CompressionEncoding, level: number): Promise<{ ms: number; size: number }> {
  const first = await compressAtLevel(bytes, encoding, level)
  if (!roundTrip(encoding, first).equals(bytes)) throw new Error(`${encoding} ${level} does not round-trip`)
  const times: number[] = []
  const started = performance.now()
  while (times.length < 3 || performance.now() - started < 500) {
    const t = performance.now()
    await compressAtLevel(bytes, encoding, level)
    times.push(performance.now() - t)
  }
  times.sort((a, b) => a - b)
  return { ms: times[Math.floor(times.length / 2)] as number, size: first.byteLength }
}

/** MB/s of the chosen level with `parallel` compressions in flight (the threadpool busy) for ~2 s. */
async function throughput(bytes: Buffer, encoding: CompressionEncoding, parallel: number): Promise<number> {
  const level = COMPRESSION_LEVELS[encoding]
  let done = 0
  const until = performance.now() + 2000
  const started = performance.now()
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (performance.now() < until) {
        await compressAtLevel(bytes, encoding, level)
        done++
      }
    })
  )
  return (done * bytes.byteLength) / MiB / ((performance.now() - started) / 1000)
}

const samples: Array<[string, Buffer]> = [
  ['js 100 KiB (bowser, minified)', await head('node_modules/bowser/bundled.js', 100 * KiB)],
  ['json 100 KiB (package-lock)', await head('package-lock.json', 100 * KiB)],
  ['text 1 MiB (READMEs)', await readmes(MiB)],
]
const encodings = (['br', 'zstd', 'gzip'] as const).filter((e) => e !== 'zstd' || ZSTD_AVAILABLE)
const threadpool = Number(process.env.UV_THREADPOOL_SIZE ?? 4)

console.log(`node ${process.version}, ${availableParallelism()} CPUs, threadpool ${threadpool}; chosen levels marked *`)
for (const [name, bytes] of samples) {
  console.log(`\n${name}: ${bytes.byteLength} bytes`)
  console.log('encoding level   ratio      ms    MB/s')
  for (const encoding of encodings) {
    for (const level of CANDIDATES[encoding]) {
      const { ms, size } = await measure(bytes, encoding, level)
      const mark = level === COMPRESSION_LEVELS[encoding] ? '*' : ' '
      const mbps = bytes.byteLength / MiB / (ms / 1000)
      console.log(
        `${encoding.padEnd(8)} ${String(level).padStart(4)}${mark} ${((size / bytes.byteLength) * 100).toFixed(1).padStart(6)}% ${ms.toFixed(2).padStart(7)} ${mbps.toFixed(1).padStart(7)}`
      )
    }
  }
}

const text = (samples[2] as [string, Buffer])[1]
console.log(`\nthroughput of the chosen levels on the 1 MiB text, ${threadpool} in flight (MiB/s of input)`)
for (const encoding of encodings) {
  console.log(`${encoding.padEnd(5)} level ${COMPRESSION_LEVELS[encoding]}: ${(await throughput(text, encoding, threadpool)).toFixed(1)} MiB/s`)
}
