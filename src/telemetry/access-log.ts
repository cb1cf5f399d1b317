// The access log: one line per request, in exactly the shape pino writes (level, time, the
// logger's bindings, the fields, msg), written straight to the logger's output. Written by hand
// because it is the one log line on the hot path: pino's generic walk over a fields object cost
// ~10% of a cached 1 KiB GET in the bench (see plan.md), this fixed-order concatenation a fraction.
import { pino } from 'pino'
import type { Logger } from './log.ts'

/** One finished request. Undefined fields are left out, as pino does. */
export interface AccessLogLine {
  request_id: string
  client_ip: string
  method: string
  path: string
  status: number
  bytes: number
  complete: boolean
  duration_ms: number
  bucket: string | undefined
  replica: string | undefined
  error: string | undefined
  reason: string | undefined
  trace_id: string | undefined
}

export type AccessLog = (line: AccessLogLine) => void

interface LineOutput {
  write(line: string): unknown
}

/** The access log of a logger, or undefined when its level hides `info` lines (no work then). */
export function accessLogOf(logger: Logger): AccessLog | undefined {
  if (!logger.isLevelEnabled('info')) return undefined
  const output = (logger as unknown as Record<symbol, LineOutput>)[pino.symbols.streamSym] as LineOutput
  const head = `{"level":${logger.levels.values.info},"time":`
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? ''
  return (line) => {
    let text =
      head +
      Date.now() +
      bindings +
      ',"request_id":' +
      JSON.stringify(line.request_id) +
      ',"client_ip":' +
      JSON.stringify(line.client_ip) +
      ',"method":' +
      JSON.stringify(line.method) +
      ',"path":' +
      JSON.stringify(line.path) +
      ',"status":' +
      line.status +
      ',"bytes":' +
      line.bytes +
      ',"complete":' +
      line.complete +
      ',"duration_ms":' +
      line.duration_ms
    if (line.bucket !== undefined) text += ',"bucket":' + JSON.stringify(line.bucket)
    if (line.replica !== undefined) text += ',"replica":' + JSON.stringify(line.replica)
    if (line.error !== undefined) text += ',"error":' + JSON.stringify(line.error)
    if (line.reason !== undefined) text += ',"reason":' + JSON.stringify(line.reason)
    if (line.trace_id !== undefined) text += ',"trace_id":' + JSON.stringify(line.trace_id)
    output.write(text + ',"msg":"request"}\n')
  }
}
