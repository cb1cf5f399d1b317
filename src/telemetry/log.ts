// Structured logs with pino: JSON by default, human-readable text when `logging.format: text`.
// Nothing that can carry a secret (headers, query strings, tokens) is ever passed to the logger.
import { pino, type DestinationStream, type Logger } from 'pino'
import pretty from 'pino-pretty'
import type { Config } from '../config/schema.ts'

export type { Logger }

export function createLogger(config: Config['logging'], destination?: DestinationStream): Logger {
  const options = { level: config.level, base: { service: 'yatagarasu' } }
  if (destination !== undefined) return pino(options, destination)
  if (config.format === 'text') return pino(options, pretty({ colorize: false, sync: true }))
  // Buffered: one write per ~4 KiB of log lines instead of one per request (the access log is on
  // the hot path), flushed at least every 250 ms so a quiet instance's lines are not held back.
  // main.ts flushes lifecycle lines at once and on shutdown.
  const logger = pino(options, pino.destination({ dest: 1, sync: false, minLength: 4096 }))
  setInterval(() => logger.flush(), 250).unref()
  return logger
}
