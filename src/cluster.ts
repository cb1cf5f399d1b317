// Cluster mode (`server.workers` > 1): the primary process forks the workers (node:cluster; they
// share the listening socket), and
//   - passes SIGHUP on to every worker (each reloads its own configuration);
//   - on SIGTERM/SIGINT passes the signal on, waits for every worker to drain and exit, then exits 0;
//   - restarts a worker that dies any other way (after a pause when it keeps dying at start);
//   - serves /metrics on `metrics.port`, summed over the workers (prom-client's AggregatorRegistry);
//   - when a worker reloads through POST /admin/reload, sends SIGHUP to the other workers;
//   - without Redis: keeps the rate-limit counters every worker spends (security/rate-limit.ts), and
//     passes a purge one worker received on to the others (cluster-purge.ts);
//   - keeps the ledger of the disk tier's directory the workers share (cache/disk-cluster.ts).
// The primary serves no requests and builds no runtime (the disk ledger reads only file headers).
import cluster, { type Worker } from 'node:cluster'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { relayPurges } from './cluster-purge.ts'
import type { Config } from './config/schema.ts'
import { serveDiskLedgers, serveRateLimits } from './runtime.ts'
import { listenMetrics, metricsEndpoint } from './server.ts'
import { exitAfterFlush, type Logger } from './telemetry/log.ts'

export const RELOAD_OTHERS = 'yatagarasu:reload-others'

/** A worker that dies this soon after it started is crash-looping: wait before the next one. */
const CRASH_LOOP_MS = 2000
const RESTART_PAUSE_MS = 1000

export async function runPrimary(config: Config, workers: number, logger: Logger): Promise<void> {
  // prom-client is loaded only when metrics are on.
  const registry = config.metrics.enabled ? new (await import('prom-client')).AggregatorRegistry() : undefined
  const metricsServer =
    registry === undefined ? undefined : await listenMetrics(metricsEndpoint(() => registry.clusterMetrics(), registry.contentType), config)
  const startedAt = new Map<Worker, number>()
  let stopping = false
  // Always, whatever the config says now: a reload may add a limit.
  serveRateLimits()
  relayPurges()
  serveDiskLedgers()

  const fork = () => {
    const worker = cluster.fork()
    startedAt.set(worker, Date.now())
    worker.on('message', (message: unknown) => {
      if (message !== RELOAD_OTHERS) return
      for (const other of Object.values(cluster.workers ?? {})) if (other !== undefined && other !== worker) other.process.kill('SIGHUP')
    })
    worker.once('online', () => logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker started'))
  }

  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (startedAt.get(worker) ?? 0)
    startedAt.delete(worker)
    if (stopping) return
    logger.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died; starting a new one')
    if (lived >= CRASH_LOOP_MS) return fork()
    setTimeout(() => {
      if (!stopping) fork()
    }, RESTART_PAUSE_MS).unref()
  })

  for (let i = 0; i < workers; i++) fork()
  const metricsPort = (metricsServer?.address() as AddressInfo | null | undefined)?.port
  logger.info(
    { workers, address: `${config.server.host}:${config.server.port}`, metrics_port: metricsPort },
    'yatagarasu primary started'
  )
  logger.flush()

  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading every worker')
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP')
  })
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'shutting down: draining every worker')
    logger.flush()
    const running = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
    let left = running.length
    const done = () => {
      metricsServer?.close()
      logger.info('shutdown complete')
      exitAfterFlush(logger, 0)
    }
    if (left === 0) return done()
    for (const worker of running) {
      worker.once('exit', () => {
        if (--left === 0) done()
      })
      worker.process.kill(signal)
    }
  }
  // `on`, not `once`: a second signal must not kill the primary (its workers would die mid-drain).
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

/** In a worker: answer the primary's metric requests with this registry. */
export async function shareMetricsWithPrimary(registry: Registry): Promise<void> {
  const { AggregatorRegistry } = await import('prom-client')
  // Constructing one installs prom-client's worker-side message listener.
  new AggregatorRegistry()
  AggregatorRegistry.setRegistries([registry])
}
