// The access log: one line per request, in exactly the shape pino writes (level, time, the
// logger's bindings, the fields, msg), written straight to the logger's output. Written by hand
// because it is the one log line on the hot path: pino's generic walk over a fields object cost
// ~10% of a cached 1 KiB GET in the bench (see plan.md), this fixed-order concatenation a fraction.
import { pino } from 'pino'
import type { Logger } from './log.ts'

/**
 * One finished request. Undefined fields are left out, as pino does: a request the HTTP parser
 * refused has no method, path or duration (its start is unknown).
 */
export interface AccessLogLine {
  request_id: string
  client_ip: string
  method: string | undefined
  path: string | undefined
  status: number
  bytes: number
  complete: boolean
  duration_ms: number | undefined
  bucket: string | undefined
  replica: string | undefined
  /** The image variant (preset or parameters) or encoding answered instead of the stored bytes. */
  representation?: string | undefined
  error: string | undefined
  reason: string | undefined
  trace_id: string | undefined
}

export type AccessLog = (line: AccessLogLine) => void

/** Printable ASCII without `"` and `\`: JSON needs no escape in such a string. */
const NEEDS_NO_ESCAPE = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/

interface LineOutput {
  write(line: string): unknown
  /** For a line known to be ASCII only (LineBatch copies it without a UTF-8 pass). */
  writeAscii?(line: string): unknown
}

/** The access log of a logger, or undefined when its level hides `info` lines (no work then). */
export function accessLogOf(logger: Logger): AccessLog | undefined {
  if (!logger.isLevelEnabled('info')) return undefined
  const output = (logger as unknown as Record<symbol, LineOutput>)[pino.symbols.streamSym] as LineOutput
  const head = `{"level":${logger.levels.values.info},"time":`
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? ''
  const bindingsAscii = /^[\x00-\x7f]*$/.test(bindings)
  const writeAscii = output.writeAscii?.bind(output)
  /** Whether the line being built is ASCII so far. */
  let ascii = true
  /** A JSON string literal: the usual value (an id, an IP, a plain path) needs no JSON.stringify. */
  const quoted = (value: string): string => {
    if (NEEDS_NO_ESCAPE.test(value)) return '"' + value + '"'
    ascii = false
    return JSON.stringify(value)
  }
  return (line) => {
    ascii = bindingsAscii
    let text =
      head +
      Date.now() +
      bindings +
      ',"request_id":' +
      quoted(line.request_id) +
      ',"client_ip":' +
      quoted(line.client_ip)
    if (line.method !== undefined) text += ',"method":' + quoted(line.method)
    if (line.path !== undefined) text += ',"path":' + quoted(line.path)
    text += ',"status":' + line.status + ',"bytes":' + line.bytes + ',"complete":' + line.complete
    if (line.duration_ms !== undefined) text += ',"duration_ms":' + line.duration_ms
    if (line.bucket !== undefined) text += ',"bucket":' + quoted(line.bucket)
    if (line.replica !== undefined) text += ',"replica":' + quoted(line.replica)
    if (line.representation !== undefined) text += ',"representation":' + quoted(line.representation)
    if (line.error !== undefined) text += ',"error":' + quoted(line.error)
    if (line.reason !== undefined) text += ',"reason":' + quoted(line.reason)
    if (line.trace_id !== undefined) text += ',"trace_id":' + quoted(line.trace_id)
    text += ',"msg":"request"}\n'
    if (ascii && writeAscii !== undefined) writeAscii(text)
    else output.write(text)
  }
}
