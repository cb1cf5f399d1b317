#!/usr/bin/env node
// Process edge: arguments, config, listen, signals.
//   yatagarasu --config config.yaml          run the proxy
//   yatagarasu --check --config config.yaml  validate the config and exit 0 (valid) or 1 (invalid)
// SIGHUP reloads the config (a bad one keeps the running config); SIGTERM/SIGINT drain and exit 0.
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { buildRuntime } from './runtime.ts'
import { startProxy } from './server.ts'
import { createLogger } from './telemetry/log.ts'
import { VERSION } from './version.ts'

const USAGE = `usage: yatagarasu [--config FILE] [--check]

  -c, --config FILE   configuration file (default: $YATAGARASU_CONFIG or ./config.yaml)
      --check         validate the configuration and exit 0 (valid) or 1 (invalid)
  -v, --version       print the version
  -h, --help          print this help`

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
    console.log(`configuration ${file} is valid: ${config.buckets.length} bucket(s)`)
    return 0
  }

  const logger = createLogger(config.logging)
  if (config.server.workers !== 1) {
    logger.warn({ workers: config.server.workers }, 'server.workers > 1 is not implemented yet; running one process')
  }
  const proxy = await startProxy(config, logger)
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

  process.on('SIGHUP', () => void proxy.reload())
  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down: draining requests in flight')
    logger.flush()
    void proxy.shutdown().then(() => {
      logger.info('shutdown complete')
      logger.flush()
      process.exit(0)
    })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  return -1
}

const code = await main()
if (code >= 0) process.exitCode = code
