// Helpers the bench scripts share: processes pinned to CPUs, free ports, readiness, the bench
// origin (origin.mjs) and the memory of a process as Linux reports it.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

export const ROOT = join(import.meta.dirname, '..')
export const CPUS = availableParallelism()
/** Servers on CPU 0, load generators on the others (when taskset works and there are 2+ CPUs). */
export const PINNABLE = CPUS >= 2 && spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' }).status === 0
export const SERVER_CPU = '0'
export const CLIENT_CPUS = CPUS >= 2 ? `1-${CPUS - 1}` : '0'

/** `argv` pinned to `cpus` when pinning works. */
export function pinned(cpus: string, argv: string[], options: SpawnOptions = {}): ChildProcess {
  const [command, ...args] = argv as [string, ...string[]]
  return PINNABLE ? spawn('taskset', ['-c', cpus, command, ...args], options) : spawn(command, args, options)
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return Number.NaN
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Status of one GET (no body kept); 0 when nothing answered. */
export function statusOf(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', () => resolve(0))
      })
      .on('error', () => resolve(0))
  })
}

/** Polls `url` until it answers 200 (60 s at most: a busy 2-core machine starts slowly). */
export async function waitFor200(url: string, what: string): Promise<void> {
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if ((await statusOf(url)) === 200) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`${what} did not answer 200 at ${url} within 60 s`)
}

/** Stops a child and waits for it to exit. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/** The pid of the process doing the work: taskset execs the command, so it is the child itself. */
export function pidOf(child: ChildProcess): number {
  if (child.pid === undefined) throw new Error('the process did not start')
  return child.pid
}

const TICK_US = 1e6 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100)

/**
 * A process's CPU time so far in µs: the run time of each of its threads (schedstat, ns), or
 * where that is missing, utime + stime (in clock ticks, usually 10 ms).
 */
export async function cpuOf(pid: number): Promise<number> {
  try {
    let ns = 0
    for (const task of await readdir(`/proc/${pid}/task`)) ns += Number((await readFile(`/proc/${pid}/task/${task}/schedstat`, 'utf8')).split(' ')[0])
    return ns / 1000
  } catch {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * TICK_US
  }
}

/** VmRSS and VmHWM (peak RSS since start, or since `resetPeak`) of `pid`, in MiB. */
export function rssOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN)
  return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 }
}

/** Samples VmRSS every 50 ms until stopped: the peak seen, in MiB (VmHWM is the exact peak). */
export function sampleRss(pid: number): () => number {
  let peak = 0
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssOf(pid).rss)
    } catch {
      // exited
    }
  }, 50)
  return () => {
    clearInterval(timer)
    return peak
  }
}

export interface Origin {
  process: ChildProcess
  url: string
  /** Seconds spent writing objects that were missing from the kept store (empty when none were). */
  seeded: Array<{ key: string; size: number; seconds: number }>
  /** GETs the origin has served per path since it started. */
  gets(): Promise<Record<string, number>>
}

/** Directory of the bench origin's store, kept between runs (BENCH_ORIGIN_DIR overrides). */
export const ORIGIN_DIR = process.env.BENCH_ORIGIN_DIR ?? join(tmpdir(), 'yatagarasu-bench-origin')

/** Starts bench/origin.mjs (s3rver + a counting relay) on the server CPU with these objects; `extra`: more of its options (--rate). */
export async function startOrigin(objects: Record<string, number>, bucket = 'bench', extra: string[] = []): Promise<Origin> {
  const args = [process.execPath, join(ROOT, 'bench/origin.mjs'), '--dir', ORIGIN_DIR, '--bucket', bucket, ...extra]
  for (const [key, size] of Object.entries(objects)) args.push('--object', `${key}:${size}`)
  const child = pinned(SERVER_CPU, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`bench origin exited (${code})`)))
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve)
  })
  const ready = JSON.parse(line) as { port: number; seeded: Origin['seeded'] }
  const url = `http://127.0.0.1:${ready.port}`
  return {
    process: child,
    url,
    seeded: ready.seeded,
    gets: () =>
      new Promise((resolve, reject) => {
        http
          .get(`${url}/__origin_gets`, (res) => {
            let text = ''
            res.setEncoding('utf8')
            res.on('data', (c: string) => (text += c))
            res.on('end', () => resolve(JSON.parse(text) as Record<string, number>))
          })
          .on('error', reject)
      }),
  }
}

/** Builds dist/ (the compiled proxy the benches run, as in production), unless BENCH_NO_BUILD is set. */
export function build(): void {
  if (process.env.BENCH_NO_BUILD === '1') return
  const result = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' })
  if (result.status !== 0) throw new Error('npm run build failed')
}

/** The node flags the proxy ships with (src/main.ts's shebang, the Dockerfile, npm start). */
export const SHIPPED_FLAGS = ['--max-semi-space-size=4']

/** The compiled proxy on the server CPU with `config` (a file), stdout and stderr to the bench's stderr. */
export function startProxy(configFile: string, nodeFlags: string[] = SHIPPED_FLAGS): ChildProcess {
  return pinned(SERVER_CPU, [process.execPath, ...nodeFlags, join(ROOT, 'dist/main.js'), '--config', configFile], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
}

/** CPU seconds of `pid` and its children (nginx's workers, the proxy's cluster workers): cpuOf for each. */
export async function cpuSeconds(pid: number): Promise<number> {
  let us = await cpuOf(pid)
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
    for (const child of children === '' ? [] : children.split(' ')) us += await cpuOf(Number(child)).catch(() => 0)
  }
  return us / 1e6
}

export function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 60_000
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve()
      })
      socket.once('error', () => {
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port} after 60 s`))
        else setTimeout(attempt, 100)
      })
    }
    attempt()
  })
}

const NGINX = process.env.NGINX_BIN ?? '/usr/sbin/nginx'

/**
 * nginx on the server CPU, from `conf` (a bench/*.conf whose @NAME@ placeholders are filled in),
 * in front of the origin at `originPort`, with its files in `dir`, once it listens (stopped when it
 * does not).
 */
export async function startNginx(conf: string, dir: string, originPort: number): Promise<{ process: ChildProcess; port: number }> {
  const port = await freePort()
  await mkdir(join(dir, 'tmp'), { recursive: true })
  await mkdir(join(dir, 'cache'), { recursive: true })
  const text = (await readFile(join(ROOT, conf), 'utf8'))
    .replaceAll('@USER_LINE@', process.getuid?.() === 0 ? 'user root;' : '')
    .replaceAll('@RUN_DIR@', dir)
    .replaceAll('@ORIGIN_PORT@', String(originPort))
    .replaceAll('@PORT@', String(port))
  await writeFile(join(dir, 'nginx.conf'), text)
  const child = pinned(SERVER_CPU, [NGINX, '-p', dir, '-e', join(dir, 'nginx-error.log'), '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'inherit'] })
  try {
    await waitForPort(port)
  } catch (err) {
    await stop(child)
    throw err
  }
  return { process: child, port }
}

/**
 * A bench script run on its own: builds dist/, measures with its options (`--quick` for the short
 * ones), prints the table, and writes the rows as JSON with `--json FILE` (bench/summary.ts reads them).
 */
export async function runBench<O, R>(optionsOf: (quick: boolean) => O, measure: (options: O) => Promise<R[]>, table: (rows: R[], options: O) => string): Promise<void> {
  const options = optionsOf(process.argv.includes('--quick'))
  const json = process.argv.indexOf('--json')
  build()
  const rows = await measure(options)
  console.log(table(rows, options))
  if (json > 0) await writeFile(process.argv[json + 1] as string, JSON.stringify(rows))
}
