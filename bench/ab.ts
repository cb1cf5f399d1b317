// `npm run bench:ab -- <base-rev>`: this build beside another one (a commit, a tag, a branch), path by
// path, in one rotation with the path's anchor: is it slower than the base, and does each meet its
// target beside the anchor? Built for the question one harness run cannot answer on a shared VM: its
// cases run one after another, and this VM has slow and fast phases of seconds to minutes that
// move one case by 1.5-2x, so a ratio of two cases measured a minute apart is mostly the phase.
//
// For each path (memory and disk hits of 1 KiB, Redis hits of 1 KiB and 100 KiB, beside raw
// node:http; misses of 1 KiB and 100 KiB with no cache beside s3rver direct) and object size, two
// runs of the shared harness (../shared/perf) with only the anchor and the two builds: every server
// starts at once, each case is warmed up, then the rounds go anchor, base, this build (and anchor,
// this build, base in the second run: a case measured right after a heavy one runs slower, and
// neither build should always be second), round after round (the harness's interleaved reps), a
// few seconds apart. Each ratio is taken within a round and the median over the rounds of both
// runs is reported, with its range: a ratio of neighbours in time, not of phases.
//
//   npx tsx bench/ab.ts <base-rev> [--rounds N (8)] [--seconds S (3)] [--warmup S (8)]
//                                  [--paths memory,disk,redis,miss] [--quick] [--json FILE]
//   --quick: 3 rounds of 2 s, 3 s warm-up. The base is checked out in a temporary git worktree
//   (its node_modules linked when its package-lock.json is this one's, else installed with
//   npm ci) and built; both run with the shipped node flags.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, symlinkSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { build, median, ROOT, SHIPPED_FLAGS } from './support.ts'

const PATHS = {
  memory: { anchor: 'node-raw', objects: ['obj-1k'], cache: 'memory' },
  disk: { anchor: 'node-raw', objects: ['obj-1k'], cache: 'disk' },
  redis: { anchor: 'node-raw', objects: ['obj-1k', 'obj-100k'], cache: 'redis' },
  miss: { anchor: 'origin', objects: ['obj-1k', 'obj-100k'], cache: 'none' },
} as const
type PathName = keyof typeof PATHS
const SIZES: Record<string, number> = { 'obj-1k': 1024, 'obj-100k': 100 * 1024 }
/** The issue's target per path, as the anchor ratio a build must reach (hits: req/s, or µs/req for the disk). */
const TARGETS: Record<PathName, string> = {
  memory: 'req/s >= 0.60x raw',
  disk: 'µs/req <= 2.5x raw',
  redis: 'req/s >= 0.35x raw',
  miss: 'req/s >= 0.75x s3rver',
}
const SECRET = 'perf-secret-0123456789abcdef0123456789abcdef'

interface Options {
  base: string
  rounds: number
  seconds: number
  warmup: number
  paths: PathName[]
  json: string | undefined
}

function parse(argv: string[]): Options {
  const options: Options = { base: '', rounds: 8, seconds: 3, warmup: 8, paths: Object.keys(PATHS) as PathName[], json: undefined }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    const value = () => {
      const next = argv[++i]
      if (next === undefined) throw new Error(`${arg} needs a value`)
      return next
    }
    if (arg === '--quick') Object.assign(options, { rounds: 3, seconds: 2, warmup: 3 })
    else if (arg === '--rounds') options.rounds = Number(value())
    else if (arg === '--seconds') options.seconds = Number(value())
    else if (arg === '--warmup') options.warmup = Number(value())
    else if (arg === '--json') options.json = value()
    else if (arg === '--paths') {
      options.paths = value().split(',') as PathName[]
      const unknown = options.paths.filter((p) => !(p in PATHS))
      if (unknown.length > 0) throw new Error(`--paths: unknown ${unknown.join(', ')} (known: ${Object.keys(PATHS).join(', ')})`)
    } else if (arg.startsWith('-')) throw new Error(`unknown option ${arg}`)
    else options.base = arg
  }
  if (options.base === '') throw new Error('usage: bench/ab.ts <base-rev> [--rounds N] [--seconds S] [--warmup S] [--paths LIST] [--quick] [--json FILE]')
  return options
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] })
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} (in ${cwd}) failed`)
}

/** The base revision checked out and built in a temporary worktree; its entry point. */
function prepareBase(rev: string, dir: string): string {
  run('git', ['worktree', 'add', '--detach', '--force', dir, rev], ROOT)
  const lock = (root: string) => readFileSync(join(root, 'package-lock.json'), 'utf8')
  if (lock(dir) === lock(ROOT)) symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
  else run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], dir)
  run('npm', ['run', '--silent', 'build'], dir)
  return join(dir, 'dist/main.js')
}

function configYaml(cache: (typeof PATHS)[PathName]['cache']): string {
  const layers: Record<string, string> = {
    memory: 'cache:\n  enabled: true\n  layers: [memory]\n  max_item_size: 16MB\n  memory: { max_size: 256MB }',
    disk: 'cache:\n  enabled: true\n  layers: [disk]\n  max_item_size: 16MB\n  disk: { dir: "${TARGET_RUN_DIR}/cache", max_size: 1GB }',
    redis: 'cache:\n  enabled: true\n  layers: [redis]\n  max_item_size: 16MB\n  redis: { url: "redis://127.0.0.1:${REDIS_PORT}" }',
    none: 'cache:\n  enabled: false',
  }
  return [
    'server:',
    '  address: "127.0.0.1:${PORT}"',
    'buckets:',
    '  - name: perf',
    '    path_prefix: /perf-bucket',
    '    s3: { bucket: perf-bucket, region: us-east-1, endpoint: "${S3_ENDPOINT}", access_key: S3RVER, secret_key: S3RVER }',
    `    auth: { enabled: true, jwt: { secret: "${SECRET}", algorithm: HS256 } }`,
    `    cache: { enabled: ${cache !== 'none'} }`,
    layers[cache],
    'logging:',
    '  level: warn',
    '',
  ].join('\n')
}

interface HarnessRun {
  rps: number
  srvPct: number
}
interface HarnessRow {
  target: string
  size: number
  runs: HarnessRun[]
}

interface AbRow {
  path: PathName
  size: number
  rounds: number
  baseRps: number
  headRps: number
  /** Medians over the rounds of this build's value over the base's, in the same round. */
  rpsRatio: number
  rpsRange: [number, number]
  usRatio: number
  usRange: [number, number]
  /** Medians over the rounds of each build's ratio to the anchor in the same round (µs/req for the disk). */
  baseVsAnchor: number
  headVsAnchor: number
  target: string
}

const usPerRequest = (r: HarnessRun) => (r.srvPct * 1e4) / r.rps

/** Ratios within each round, then their median and range. */
function perRound(a: HarnessRun[], b: HarnessRun[], of: (r: HarnessRun) => number): { median: number; range: [number, number] } {
  const ratios = a.slice(0, b.length).map((r, i) => of(r) / of(b[i] as HarnessRun))
  return { median: median(ratios), range: [Math.min(...ratios), Math.max(...ratios)] }
}

async function measurePath(path: PathName, options: Options, harness: string, baseMain: string, work: string, token: string): Promise<AbRow[]> {
  const spec = PATHS[path]
  const config = join(work, `${path}.yaml`)
  await writeFile(config, configYaml(spec.cache))
  const node = [process.execPath, ...SHIPPED_FLAGS].join(' ')
  const command = (main: string) => `${spec.cache === 'redis' ? `export REDIS_PORT=$((PORT+1)); redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no >/dev/null & ` : ''}exec ${node} '${main}' --config '${config}'`
  // One harness run per object size and order: base then this build, and this build then base
  // (half the rounds each): a case measured right after another is not always the same build.
  const runs = new Map<string, HarnessRun[]>()
  const add = (name: string, size: number, more: HarnessRun[]) => runs.set(`${name}\0${size}`, [...(runs.get(`${name}\0${size}`) ?? []), ...more])
  const builds = [['base', baseMain], ['head', join(ROOT, 'dist/main.js')]] as const
  for (const object of spec.objects) {
    for (const order of [builds, [...builds].reverse()]) {
      const json = join(work, `${path}-${object}-${order[0][0]}.json`)
      const reps = Math.ceil(options.rounds / 2)
      const args = ['--only', spec.anchor, '--no-autocannon', '--reps', String(reps), '--duration', String(options.seconds), '--warmup', String(options.warmup), '--json', json]
      for (const [name, main] of order) args.push('--target', `${name}-${path}`, '--cmd', command(main), '--path', `/perf-bucket/${object}`, '--auth', `Bearer ${token}`)
      console.log(`\n== ${path} ${object}: ${spec.anchor}, ${order.map(([name]) => (name === 'head' ? 'this build' : name)).join(', ')}; ${reps} rounds of ${options.seconds} s`)
      run('bash', [join(harness, 'run-anchors.sh'), ...args], harness)
      const rows = (JSON.parse(await readFile(json, 'utf8')) as { rows: HarnessRow[] }).rows
      const size = SIZES[object] as number
      const of = (target: string) => rows.find((r) => r.target === target && r.size === size)?.runs ?? []
      // Truncated to the rounds every target completed, so rounds stay paired across the passes.
      const complete = Math.min(of(spec.anchor).length, of(`base-${path}`).length, of(`head-${path}`).length)
      for (const target of [spec.anchor, `base-${path}`, `head-${path}`]) add(target, size, of(target).slice(0, complete))
    }
  }
  const runsOf = (target: string, size: number) => runs.get(`${target}\0${size}`) ?? []
  return spec.objects.map((object) => {
    const size = SIZES[object] as number
    const anchor = runsOf(spec.anchor, size)
    const base = runsOf(`base-${path}`, size)
    const head = runsOf(`head-${path}`, size)
    const vsAnchor = (runs: HarnessRun[]) =>
      path === 'disk' ? perRound(runs, anchor, usPerRequest).median : perRound(runs, anchor, (r) => r.rps).median
    const rps = perRound(head, base, (r) => r.rps)
    const us = perRound(head, base, usPerRequest)
    return {
      path,
      size,
      rounds: Math.min(base.length, head.length),
      baseRps: median(base.map((r) => r.rps)),
      headRps: median(head.map((r) => r.rps)),
      rpsRatio: rps.median,
      rpsRange: rps.range,
      usRatio: us.median,
      usRange: us.range,
      baseVsAnchor: vsAnchor(base),
      headVsAnchor: vsAnchor(head),
      target: TARGETS[path],
    }
  })
}

function table(rows: AbRow[], base: string): string {
  const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '–')
  const size = (bytes: number) => (bytes >= 1024 * 1024 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`)
  const lines = [
    `| path | object | rounds | base req/s | this req/s | this / base req/s (range) | this / base µs/req (range) | base vs anchor | this vs anchor | target |`,
    '| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |',
  ]
  for (const r of rows) {
    lines.push(
      `| ${r.path} | ${size(r.size)} | ${r.rounds} | ${f(r.baseRps, 0)} | ${f(r.headRps, 0)} | ${f(r.rpsRatio)} (${f(r.rpsRange[0])}-${f(r.rpsRange[1])}) | ` +
        `${f(r.usRatio)} (${f(r.usRange[0])}-${f(r.usRange[1])}) | ${f(r.baseVsAnchor)} | ${f(r.headVsAnchor)} | ${r.target} |`
    )
  }
  return `\nbase ${base} against this build (medians of per-round ratios; µs/req is the server's CPU per request)\n${lines.join('\n')}`
}

async function main(): Promise<void> {
  const options = parse(process.argv.slice(2))
  const harnessSource = join(ROOT, '..', 'shared', 'perf')
  if (!existsSync(join(harnessSource, 'run-anchors.sh'))) throw new Error('bench:ab needs ../shared/perf beside the project (the team\'s shared harness)')
  build()
  const work = await mkdtemp(join(tmpdir(), 'yatagarasu-ab-'))
  const baseDir = join(work, 'base')
  try {
    const baseMain = prepareBase(options.base, baseDir)
    // The harness writes where it runs: a copy of it (its npm dependencies kept between runs).
    const harness = join(tmpdir(), 'yatagarasu-ab-perf')
    run('bash', ['-c', `mkdir -p '${harness}' && (cd '${harnessSource}' && tar cf - --exclude=node_modules --exclude=.run .) | (cd '${harness}' && tar xf -)`], ROOT)
    const token = await new SignJWT({ role: 'perf' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('4h').sign(new TextEncoder().encode(SECRET))
    const rows: AbRow[] = []
    for (const path of options.paths) rows.push(...(await measurePath(path, options, harness, baseMain, work, token)))
    const out = table(rows, options.base)
    console.log(out)
    if (options.json !== undefined) await writeFile(options.json, JSON.stringify({ base: options.base, rows }, null, 2))
  } finally {
    spawnSync('git', ['worktree', 'remove', '--force', baseDir], { cwd: ROOT, stdio: 'ignore' })
    await rm(work, { recursive: true, force: true })
  }
}

await main()
