// `yatagarasu --config` started as a user runs it, in cluster mode (`server.workers` > 1), with its
// log lines collected: which worker answered a request is read from its access line (each worker's
// lines carry `worker`); the primary deals fresh connections to the workers in turn.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { eventually } from './eventually.ts'
import { freePort, type RawResponse } from './http.ts'

const ROOT = join(import.meta.dirname, '../..')
/** A process starting or a worker appearing, on a busy 2-core CI machine. */
export const START_MS = 60_000
/** Log lines reach stdout in batches (every 250 ms when quiet). */
const LOG_MS = 30_000

export type Line = Record<string, unknown>

export interface RunningCluster {
  child: ChildProcess
  port: number
  metricsPort: number
  configFile: string
  lines: Line[]
  /** The first log line (already written or still to come) that matches. */
  logged(match: (line: Line) => boolean, withinMs?: number): Promise<Line>
  /** Which worker answered each response, from the access lines of their request ids. */
  workersOf(responses: RawResponse[]): Promise<number[]>
  /** SIGKILL (when still running), and the config's directory removed. */
  stop(): Promise<void>
}

/**
 * Starts `yatagarasu --config` on a config written from `yaml(port, metricsPort)`, and waits for
 * `workers` workers to listen.
 */
export async function startCluster(yaml: (port: number, metricsPort: number) => string, workers = 2): Promise<RunningCluster> {
  const [port, metricsPort] = [await freePort(), await freePort()]
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-cluster-'))
  const configFile = join(dir, 'config.yaml')
  await writeFile(configFile, yaml(port, metricsPort))
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', configFile], {
    cwd: ROOT,
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines: Line[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line) as Line)
    } catch {
      // Not a log line.
    }
  })
  const logged = (match: (line: Line) => boolean, withinMs = LOG_MS) =>
    eventually(async () => lines.find(match), 'a log line', { withinMs })
  await eventually(async () => lines.filter((l) => l.msg === 'yatagarasu listening').length === workers, `${workers} workers listening`, {
    withinMs: START_MS,
    explain: async () => `exit code ${child.exitCode}`,
  })
  return {
    child,
    port,
    metricsPort,
    configFile,
    lines,
    logged,
    async workersOf(responses) {
      const workers: number[] = []
      for (const res of responses) {
        const id = res.headers['x-request-id']
        const line = await logged((l) => l.msg === 'request' && l.request_id === id)
        workers.push(line.worker as number)
      }
      return workers
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGKILL')
        await exited
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}
