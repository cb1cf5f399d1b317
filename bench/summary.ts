// The targets, read from one `npm run bench` run: every path as a ratio to its anchor in
// the same run (the shared harness's results per connection count and run, medians over the runs;
// slices.json, cold-herd.json, memory.json; written by all.sh into one directory).
//   npx tsx bench/summary.ts <results dir>
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { HerdRow } from './cold-herd.ts'
import type { MemoryRow } from './memory.ts'
import type { SliceRow } from './slices.ts'
import { median } from './support.ts'

interface HarnessRow {
  target: string
  size: number
  tool: string
  rps: number
  /** Throughput: what a 10 MiB row is compared by (few requests finish in a short run). */
  mibps: number
  srvUsPerReq: number
  /** The server's CPU, in % of one core. */
  srvPct: number
  cliPct: number
}

/**
 * CPU µs per request. A 10 MiB row's comes from the bytes sent: a rep finishes only a wave or two
 * of 64 downloads, so its count of finished requests is quantized (a wave more or less is 2x).
 */
function usPerRequest(r: HarnessRow): number {
  if (r.size < 1024 * 1024) return r.srvUsPerReq
  return ((r.srvPct / 100) * 1e6) / ((r.mibps * 1024 * 1024) / r.size)
}

const SIZES: Array<[number, string]> = [
  [1024, '1 KiB'],
  [100 * 1024, '100 KiB'],
  [10 * 1024 * 1024, '10 MiB'],
]

function readJson<T>(file: string): T | undefined {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined
}

/**
 * The harness's wrk rows at `connections`, each the median over the runs (paths-<c>-<run>.json,
 * each run a fresh set of server processes; or one paths-<c>.json); undefined when there is none.
 */
function harnessRows(dir: string, connections: number): HarnessRow[] | undefined {
  const named = new RegExp(`^paths-${connections}(-\\d+)?\\.json$`)
  const runs = readdirSync(dir)
    .filter((file) => named.test(file))
    .map((file) => readJson<{ rows: HarnessRow[] }>(join(dir, file))?.rows.filter((r) => r.tool === 'wrk') ?? [])
  if (runs.length === 0) return undefined
  const byCase = new Map<string, HarnessRow[]>()
  for (const row of runs.flat()) {
    const key = `${row.target}\0${row.size}`
    byCase.set(key, [...(byCase.get(key) ?? []), row])
  }
  return [...byCase.values()].map((rows) => {
    const of = (pick: (r: HarnessRow) => number) => median(rows.map(pick))
    const first = rows[0] as HarnessRow
    return { ...first, rps: of((r) => r.rps), mibps: of((r) => r.mibps), srvUsPerReq: of((r) => r.srvUsPerReq), srvPct: of((r) => r.srvPct), cliPct: of((r) => r.cliPct) }
  })
}

export function summary(dir: string): string {
  const lines = ['| path | object | conn | proxy req/s | anchor | anchor req/s | ratio | target | proxy µs/req | note |', '| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |']
  const judge = (value: number, op: '>=' | '<=', bound: number) => (Number.isNaN(value) ? '' : (op === '>=' ? value >= bound : value <= bound) ? 'met' : 'NOT met')
  const fmt = (n: number | null | undefined, digits = 0) => (n === undefined || n === null || !Number.isFinite(n) ? '–' : n.toFixed(digits))
  const diskAt: Record<number, number> = {}
  for (const connections of [64, 1]) {
    const rows = harnessRows(dir, connections)
    if (rows === undefined) continue
    const row = (target: string, size: number) => rows.find((r) => r.target === target && r.size === size)
    for (const [size, label] of SIZES) {
      const add = (path: string, target: string, anchorName: string, anchor: HarnessRow | undefined, ratioTarget: string, ok: string, note = '', by: (r: HarnessRow) => number = (r) => r.rps) => {
        const proxy = row(target, size)
        if (proxy === undefined || anchor === undefined) return
        lines.push(`| ${path} | ${label} | ${connections} | ${fmt(by(proxy))} | ${anchorName} | ${fmt(by(anchor))} | ${fmt(by(proxy) / by(anchor), 2)} | ${ratioTarget} ${ok} | ${fmt(usPerRequest(proxy))} | ${note}${proxy.cliPct > 90 ? ' client-bound' : ''} |`)
      }
      const origin = row('origin', size)
      const miss = row('proxy-miss', size)
      if (miss !== undefined && origin !== undefined) {
        const big = size === 10 * 1024 * 1024
        const bound = big ? 0.8 : 0.75
        // 10 MiB: compared by MiB/s (the proxy req/s column then holds MiB/s).
        const by = (r: HarnessRow) => (big ? r.mibps : r.rps)
        // nginx relaying the same miss on the same core: what the ratio can be at best.
        const relay = row('nginx-relay', size)
        const notes = big ? [] : [`CPU <= 300 µs: ${judge(miss.srvUsPerReq, '<=', 300)}`]
        if (relay !== undefined) notes.push(`nginx relay ${fmt(by(relay) / by(origin), 2)}x s3rver at ${fmt(usPerRequest(relay))} µs/req, proxy ${fmt(by(miss) / by(relay), 2)}x nginx relay`)
        // A minimal Node.js relay (node:http + undici): what the usual Node.js stack costs for a miss.
        const nodeRelay = row('node-relay', size)
        if (nodeRelay !== undefined) notes.push(`node relay ${fmt(by(nodeRelay) / by(origin), 2)}x s3rver at ${fmt(usPerRequest(nodeRelay))} µs/req, proxy ${fmt(by(miss) / by(nodeRelay), 2)}x node relay`)
        add(big ? 'miss (MiB/s)' : 'miss', 'proxy-miss', 's3rver direct', origin, `>= ${bound}x;`, judge(by(miss) / by(origin), '>=', bound), notes.join('; '), by)
      }
      const nginx = row('nginx', size)
      const raw = row('node-raw', size)
      const disk = row('proxy-disk', size)
      if (disk !== undefined) {
        if (size === 10 * 1024 * 1024) {
          diskAt[connections] = disk.rps
          add('disk hit', 'proxy-disk', 'nginx proxy_cache', nginx, '>= 0.5x', nginx === undefined ? '' : judge(disk.rps / nginx.rps, '>=', 0.5))
        } else {
          const cost = raw === undefined ? Number.NaN : disk.srvUsPerReq / raw.srvUsPerReq
          add('disk hit', 'proxy-disk', 'nginx proxy_cache', nginx, '', '', size === 1024 ? `µs/req ${fmt(cost, 2)}x raw (target <= 2.5x: ${judge(cost, '<=', 2.5)})` : `µs/req ${fmt(cost, 2)}x raw`)
        }
      }
      if (size === 1024) {
        const redis = row('proxy-redis', size)
        if (redis !== undefined && raw !== undefined) add('Redis hit', 'proxy-redis', 'raw node:http', raw, '>= 0.35x', judge(redis.rps / raw.rps, '>=', 0.35))
        const memory = row('proxy-mem', size)
        if (memory !== undefined && raw !== undefined) add('memory hit', 'proxy-mem', 'raw node:http', raw, '>= 0.60x', judge(memory.rps / raw.rps, '>=', 0.6))
      }
    }
  }
  const out = [lines.join('\n')]
  if (diskAt[64] !== undefined && diskAt[1] !== undefined) {
    out.push(`\ndisk hit 10 MiB, 64 connections never slower than 1: ${fmt(diskAt[64])} vs ${fmt(diskAt[1])} req/s (${diskAt[64] >= diskAt[1] ? 'met' : 'NOT met'})`)
  }
  const slices = readJson<SliceRow[]>(join(dir, 'slices.json'))
  if (slices !== undefined) {
    const sliceLines = ['\n| slice hits (random 1 MiB Ranges, 256 MiB object) | conn | proxy req/s | nginx slice req/s | ratio | target >= 0.5x | proxy µs/req | nginx µs/req | origin GETs (proxy / nginx) |', '| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |']
    for (const connections of [...new Set(slices.map((r) => r.connections))]) {
      const proxy = slices.find((r) => r.connections === connections && r.target === 'proxy')
      const nginx = slices.find((r) => r.connections === connections && r.target === 'nginx')
      if (proxy === undefined || nginx === undefined) continue
      sliceLines.push(`| after one warm pass | ${connections} | ${fmt(proxy.rps)} | ${fmt(nginx.rps)} | ${fmt(proxy.rps / nginx.rps, 2)} | ${judge(proxy.rps / nginx.rps, '>=', 0.5)} | ${fmt(proxy.cpuUs)} | ${fmt(nginx.cpuUs)} | ${proxy.originGets} / ${nginx.originGets} |`)
    }
    out.push(sliceLines.join('\n'))
  }
  const herd = readJson<HerdRow[]>(join(dir, 'cold-herd.json'))
  const herdOf = (target: HerdRow['target']) => herd?.find((r) => r.target === target)
  const [herdProxy, herdNginx] = [herdOf('proxy'), herdOf('nginx')]
  if (herdProxy !== undefined && herdNginx !== undefined) {
    out.push(
      [
        '\n| cold herd (a cold object for many clients at once, two workers) | origin bytes (x object) | first byte, last client ms | all done ms | server CPU ms | fetched once per instance |',
        '| --- | ---: | ---: | ---: | ---: | --- |',
        ...[herdProxy, herdNginx].map(
          (r) =>
            `| ${r.target === 'proxy' ? 'proxy' : 'nginx proxy_cache_lock'} | ${fmt(r.originCopies, 2)} | ${fmt(r.lastFirstByteMs)} | ${fmt(r.allDoneMs)} | ${fmt(r.cpuMs)} | ${r.target === 'proxy' ? (r.originCopies <= 1.01 ? 'met' : 'NOT met') : ''} |`
        ),
      ].join('\n')
    )
  }
  const memory = readJson<MemoryRow[]>(join(dir, 'memory.json'))
  if (memory !== undefined) {
    const memoryLines = ['\n| memory | node flags | RSS MiB (idle: now; others: peak) | target | |', '| --- | --- | ---: | ---: | --- |']
    for (const r of memory) {
      const judged = r.scenario.startsWith('idle') ? r.sampledMiB : r.peakMiB
      memoryLines.push(`| ${r.scenario} | ${r.flags || 'defaults'} | ${fmt(judged, 1)} | < ${r.limitMiB} | ${judged < r.limitMiB ? 'met' : 'NOT met'} |`)
    }
    out.push(memoryLines.join('\n'))
  }
  return out.join('\n')
}

if (import.meta.main) {
  const dir = process.argv[2]
  if (dir === undefined) throw new Error('usage: tsx bench/summary.ts <results dir>')
  console.log(summary(dir))
}
