// Starts the real proxy (the same startProxy main.ts uses) on a free loopback port, from a YAML
// config written to a temp file, with its logs captured as parsed JSON lines.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { loadConfig, type Env } from '../../src/config/load.ts'
import { startProxy, type Proxy } from '../../src/server.ts'

export interface TestProxy {
  url: string
  proxy: Proxy
  configFile: string
  logs: Array<Record<string, unknown>>
  /** Resolves with the first log line (already written or still to come) that matches. */
  logged(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
  /** Replaces the config file's contents (for reload tests). */
  rewrite(yaml: string): Promise<void>
  stop(): Promise<void>
}

export async function startTestProxy(yaml: string, env: Env = {}): Promise<TestProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-test-'))
  const configFile = join(dir, 'config.yaml')
  await writeFile(configFile, yaml)
  const config = await loadConfig(configFile, env)
  const logs: Array<Record<string, unknown>> = []
  const waiters = new Set<{ match: (line: Record<string, unknown>) => boolean; resolve: (line: Record<string, unknown>) => void }>()
  const logger = pino(
    { level: 'debug' },
    {
      write(text: string) {
        const line = JSON.parse(text) as Record<string, unknown>
        logs.push(line)
        for (const waiter of waiters) {
          if (!waiter.match(line)) continue
          waiters.delete(waiter)
          waiter.resolve(line)
        }
      },
    }
  )
  const proxy = await startProxy(config, logger)
  let stopped = false
  return {
    url: proxy.url,
    proxy,
    configFile,
    logs,
    logged(match) {
      const found = logs.find(match)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        // A safety net so a missing line fails the test instead of hanging the run; generous, as
        // it must hold on a busy CI machine (a line that comes at all comes far sooner).
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error('no matching log line within 30 s'))
        }, 30_000)
        const waiter = {
          match,
          resolve: (line: Record<string, unknown>) => {
            clearTimeout(timer)
            resolve(line)
          },
        }
        waiters.add(waiter)
      })
    },
    rewrite: (next) => writeFile(configFile, next),
    async stop() {
      if (stopped) return
      stopped = true
      await proxy.shutdown(1000)
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** A bucket block for the test backend, indented for a `buckets:` list. */
export function bucketYaml(options: {
  name: string
  prefix: string
  bucket: string
  endpoint: string
  secret?: string
  /** The origin timeout in seconds (s3.timeout; 2 by default, for tests of a stalled origin). */
  timeout?: number
  extra?: string
}): string {
  return `
  - name: ${options.name}
    path_prefix: ${options.prefix}
    s3:
      bucket: ${options.bucket}
      region: us-east-1
      endpoint: ${options.endpoint}
      access_key: S3RVER
      secret_key: ${JSON.stringify(options.secret ?? 'test/Secret+Key=with/special chars')}
      timeout: ${options.timeout ?? 2}
${options.extra ?? ''}`
}

/** The value of one series (`name{labels}` as /metrics prints it) on the proxy's metrics port; undefined when absent. */
export async function metricOf(proxy: TestProxy, series: string): Promise<number | undefined> {
  if (proxy.proxy.metricsUrl === undefined) throw new Error('metrics are not enabled in this config')
  const text = await (await fetch(proxy.proxy.metricsUrl)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}
