// The audit log: one JSON record per request (see AuditRecord), fanned out to the configured
// outputs. Serialized once, written asynchronously; no output can block or fail a request.
import type { AuditConfig } from '../config/schema.ts'
import type { AuditSink } from '../ports.ts'
import { stdoutLines } from '../telemetry/log.ts'
import type { Logger } from '../telemetry/log.ts'
import type { Metrics } from '../telemetry/metrics.ts'
import type { AuditRecord } from '../types.ts'
import { AuditFile } from './file.ts'
import { AuditS3Export } from './s3-export.ts'
import { AuditSyslog } from './syslog.ts'

export function createAuditLog(config: AuditConfig, logger: Logger, metrics: Metrics | undefined): AuditSink {
  const dropped = (output: string, count = 1) => metrics?.auditDropped.inc({ output }, count)
  const failed = (output: string) => (err: Error) =>
    logger.error({ output, err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'audit output failed; its records are dropped')

  const lineOutputs: Array<{ write(line: string): void; close(): Promise<void> }> = []
  let syslog: AuditSyslog | undefined
  for (const output of new Set(config.outputs)) {
    if (output === 'stdout') {
      const lines = stdoutLines()
      lineOutputs.push({ write: (line) => lines.write(line), close: async () => lines.drain() })
    } else if (output === 'file' && config.file !== undefined) {
      lineOutputs.push(
        new AuditFile({
          path: config.file.path,
          maxBytes: config.file.max_file_size_mb * 1024 * 1024,
          maxBackups: config.file.max_backup_files,
          onFailure: failed('file'),
          onDrop: () => dropped('file'),
        })
      )
    } else if (output === 'syslog' && config.syslog !== undefined) {
      syslog = new AuditSyslog({ ...config.syslog, onDrop: () => dropped('syslog') })
    } else if (output === 's3' && config.s3_export !== undefined) {
      const s3 = config.s3_export
      lineOutputs.push(
        new AuditS3Export({
          bucket: s3.bucket,
          region: s3.region,
          endpoint: s3.endpoint,
          accessKey: s3.access_key,
          secretKey: s3.secret_key,
          pathPrefix: s3.path_prefix,
          intervalMs: s3.export_interval_seconds * 1000,
          onFailure: failed('s3'),
          onDrop: (count) => dropped('s3', count),
        })
      )
    }
  }

  return {
    record(entry: AuditRecord): void {
      try {
        const json = JSON.stringify(entry)
        if (lineOutputs.length > 0) {
          const line = `${json}\n`
          for (const output of lineOutputs) output.write(line)
        }
        syslog?.write(json, entry.timestamp)
      } catch (err) {
        // Never the request's problem.
        logger.error({ err }, 'audit record could not be written')
      }
    },
    async close(): Promise<void> {
      await Promise.allSettled([...lineOutputs.map((o) => o.close()), syslog?.close()])
    },
  }
}
