import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { accessLogOf, type AccessLogLine } from './access-log.ts'
import { createLogger } from './log.ts'

/** A logger as the proxy builds it, writing into an array. */
function capture(level: 'info' | 'warn'): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const lines: string[] = []
  const logger = createLogger({ level, format: 'json' }, { write: (line: string) => void lines.push(line) })
  return { lines, logger }
}

const withoutTime = (line: string) => ({ ...JSON.parse(line), time: 0 })

describe('access log', () => {
  it('writes the line pino would write for the same fields, leaving out undefined ones', () => {
    const { lines, logger } = capture('info')
    const log = accessLogOf(logger)
    assert.ok(log)
    const line: AccessLogLine = {
      request_id: 'r-1',
      client_ip: '2001:db8::1',
      method: 'GET',
      // Quotes, backslashes, control and non-ASCII characters are escaped as JSON.
      path: '/b/"quoted"\\back\u0001/日本.txt',
      status: 206,
      bytes: 1024,
      complete: false,
      duration_ms: 1.234,
      bucket: 'b',
      replica: undefined,
      error: 'ORIGIN_TIMEOUT',
      reason: undefined,
      trace_id: 'abc',
    }
    log(line)
    logger.info(line, 'request')
    assert.equal(lines.length, 2)
    assert.ok(lines[0]?.endsWith('\n'))
    assert.deepEqual(withoutTime(lines[0] as string), withoutTime(lines[1] as string))
    assert.deepEqual(Object.keys(JSON.parse(lines[0] as string)), Object.keys(JSON.parse(lines[1] as string)))
    assert.equal(JSON.parse(lines[0] as string).path, line.path)
    assert.equal('replica' in JSON.parse(lines[0] as string), false)
  })

  it('leaves out the method, path and duration of a request the parser refused, as pino does', () => {
    const { lines, logger } = capture('info')
    const log = accessLogOf(logger)
    assert.ok(log)
    const line: AccessLogLine = {
      request_id: 'r-2',
      client_ip: '127.0.0.1',
      method: undefined,
      path: undefined,
      status: 400,
      bytes: 97,
      complete: true,
      duration_ms: undefined,
      bucket: undefined,
      replica: undefined,
      error: 'GUARD_BAD_REQUEST',
      reason: 'HPE_INVALID_METHOD',
      trace_id: undefined,
    }
    log(line)
    logger.info(line, 'request')
    assert.deepEqual(withoutTime(lines[0] as string), withoutTime(lines[1] as string))
    assert.deepEqual(Object.keys(JSON.parse(lines[0] as string)), Object.keys(JSON.parse(lines[1] as string)))
    assert.equal('method' in JSON.parse(lines[0] as string), false)
  })

  it('does nothing at all when info lines are not logged', () => {
    const { logger } = capture('warn')
    assert.equal(accessLogOf(logger), undefined)
  })
})
