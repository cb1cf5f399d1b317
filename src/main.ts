#!/usr/bin/env -S node --max-semi-space-size=4
// Process edge: arguments, config, listen, signals.
//   yatagarasu --config config.yaml          run the proxy
//   yatagarasu --check --config config.yaml  validate the config and exit 0 (valid) or 1 (invalid)
// SIGHUP reloads the config (a bad one keeps the running config); SIGTERM/SIGINT drain and exit 0.
// With `server.workers` > 1 this process becomes the cluster primary (cluster.ts) and each worker
// runs the code below the fork.
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { RELOAD_OTHERS, runPrimary, shareMetricsWithPrimary } from './cluster.ts'
import { ConfigError, loadConfig } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { buildRuntime } from './runtime.ts'
import { startProxy } from './server.ts'
import { createLogger, exitAfterFlush } from './telemetry/log.ts'
import { VERSION } from './version.ts'

const USAGE = `usage: yatagarasu [--config FILE] [--check]

  -c, --config FILE   configuration file (default: $YATAGARASU_CONFIG or ./config.yaml)
      --check         validate the configuration and exit 0 (valid) or 1 (invalid)
  -v, --version       print the version
  -h, --help          print this help`

// WebAssembly (OPA policies) is optimized once it has done real work, not after its first calls:
// V8's default budget had TurboFan compile a module after its first calls, ~9 MB of RSS an idle
// proxy kept (measured on undici's parser, which origin requests used then: idle 103 -> 93 MB).
// Under load the budget (~15x V8's) is spent quickly. V8 reads it when a module is instantiated,
// which happens later.
setFlagsFromString('--wasm-tiering-budget=200000000')
// The young generation's size is read when the heap is created: setFlagsFromString here has no
// effect on it (measured), so `--max-semi-space-size=4` is on the shebang line (the `yatagarasu`
// binary), the Docker ENTRYPOINT and `npm start`; cluster workers inherit it (execArgv). 4 MB holds
// what ~200 misses allocate (~19 KB each), so the objects of 64 requests in flight die young: with
// 1 MB each one's ~9 KB were copied twice and promoted (GC pauses ~110 us per 1 KiB miss; ~15 with
// 4 MB). It costs ~5-15 MB of RSS (docs/operations.md, Sizing).

async function main(): Promise<number> {
  let args
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean', default: false },
        version: { type: 'boolean', short: 'v', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (args.help) {
    console.log(USAGE)
    return 0
  }
  if (args.version) {
    console.log(VERSION)
    return 0
  }

  const file = args.config ?? process.env.YATAGARASU_CONFIG ?? 'config.yaml'
  let config: Config
  try {
    config = await loadConfig(file)
    // --check builds the runtime too (policies load, keys parse), exactly as start-up does.
    if (args.check) await (await buildRuntime(config, { logger: createLogger({ level: 'silent', format: 'json' }), generation: 0, startedAt: Date.now() })).close()
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : `cannot load ${file}: ${String(err)}`)
    return 1
  }
  if (args.check) {
    for (const warning of config.warnings) console.error(`warning in ${file}: ${warning.path}: ${warning.message}`)
    console.log(`configuration ${file} is valid: ${config.buckets.length} bucket(s)`)
    return 0
  }

  const root = createLogger(config.logging)
  // In cluster mode every line a worker writes (access lines too) names the worker.
  const logger = cluster.isWorker ? root.child({ worker: cluster.worker?.id }) : root
  const workers = config.server.workers === 'auto' ? availableParallelism() : config.server.workers
  if (workers > 1 && cluster.isPrimary) {
    await runPrimary(config, workers, logger)
    return -1
  }
  // Installed before the proxy starts: SIGHUP's default action would kill a worker still starting
  // (the primary forwards it to every worker). A reload asked for meanwhile runs once it is up.
  let reloadOnStart = false
  let reloadNow: (() => void) | undefined
  process.on('SIGHUP', () => (reloadNow === undefined ? (reloadOnStart = true) : reloadNow()))
  let proxy: Awaited<ReturnType<typeof startProxy>>
  try {
    proxy = await startProxy(
      config,
      logger,
      cluster.isWorker
        ? { metricsServer: false, afterAdminReload: (result) => result.ok && process.send?.(RELOAD_OTHERS) }
        : {}
    )
  } catch (err) {
    // A port in use or not allowed (EADDRINUSE, EACCES): one line naming the address, no stack
    // trace; what start-up opened (Redis connections, timers) must not keep the process alive.
    logger.fatal({ code: (err as NodeJS.ErrnoException)?.code }, `cannot start: ${describeStartError(err)}`)
    exitAfterFlush(logger, 1)
    return -1
  }
  // The primary asks each worker for its metrics and serves the sum.
  if (cluster.isWorker && proxy.metricsRegistry !== undefined) await shareMetricsWithPrimary(proxy.metricsRegistry)
  logger.info(
    {
      address: `${config.server.host}:${proxy.port}`,
      metrics: proxy.metricsUrl,
      buckets: config.buckets.map((b) => b.path_prefix),
      version: VERSION,
    },
    'yatagarasu listening'
  )
  logger.flush()

  reloadNow = () => void proxy.reload()
  if (reloadOnStart) reloadNow()
  let stopping = false
  const stop = (signal: string) => {
    // Ctrl-C reaches a cluster's workers twice (from the terminal and from the primary).
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'shutting down: draining requests in flight')
    logger.flush()
    void proxy.shutdown().then(() => {
      logger.info('shutdown complete')
      exitAfterFlush(logger, 0)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  return -1
}

/** "cannot listen on 127.0.0.1:8080: EADDRINUSE (the port is in use)", or the error's message. */
function describeStartError(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number }
  if (e?.syscall === 'listen' && e.code !== undefined) return `cannot listen on ${e.address ?? ''}:${e.port ?? ''}: ${e.code} (${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message})`
  return err instanceof Error ? err.message : String(err)
}

const code = await main()
if (code >= 0) process.exitCode = code
