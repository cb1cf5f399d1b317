// S3 answers and transport failures as the proxy's error codes.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { answerError, ConnectTimeoutError, errorCodeOf, transportError } from './s3-errors.ts'

describe('errorCodeOf', () => {
  it('reads the Code of an S3 XML error', () => {
    const xml = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a</Key></Error>'
    assert.equal(errorCodeOf(xml), 'NoSuchKey')
  })

  it('finds nothing in a body that is not an S3 error', () => {
    assert.equal(errorCodeOf(''), undefined)
    assert.equal(errorCodeOf('<html>bad gateway</html>'), undefined)
    assert.equal(errorCodeOf('<Error><Code>'), undefined)
  })
})

describe('answerError', () => {
  const cases: Array<[number, string | undefined, string, string]> = [
    [404, 'NoSuchKey', 'ORIGIN_NOT_FOUND', 'NoSuchKey'],
    [404, undefined, 'ORIGIN_NOT_FOUND', 'NotFound'],
    [404, 'NoSuchBucket', 'ORIGIN_ERROR', 'NoSuchBucket'],
    [403, 'SignatureDoesNotMatch', 'ORIGIN_AUTH_FAILED', 'SignatureDoesNotMatch'],
    [403, undefined, 'ORIGIN_AUTH_FAILED', 'Forbidden'],
    [416, 'InvalidRange', 'ORIGIN_BAD_RESPONSE', 'InvalidRange'],
    [304, undefined, 'ORIGIN_BAD_RESPONSE', 'not_modified'],
    [503, 'SlowDown', 'ORIGIN_UNAVAILABLE', 'SlowDown'],
    [500, 'InternalError', 'ORIGIN_ERROR', '500 InternalError'],
    [502, undefined, 'ORIGIN_ERROR', '502 502'],
    [412, 'PreconditionFailed', 'ORIGIN_BAD_RESPONSE', '412 PreconditionFailed'],
    [301, 'PermanentRedirect', 'ORIGIN_BAD_RESPONSE', '301 PermanentRedirect'],
  ]
  for (const [status, code, expected, reason] of cases) {
    it(`maps ${status} ${code ?? '(no body)'} to ${expected}`, () => {
      const error = answerError(status, code)
      assert.equal(error.code, expected)
      assert.equal(error.reason, reason)
    })
  }

  it('asks the client to come back after a 503', () => {
    assert.equal(answerError(503, 'SlowDown').headers?.['retry-after'], '1')
  })
})

describe('transportError', () => {
  const failed = (code: string, message = code) => Object.assign(new Error(message), { code })

  for (const code of ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH']) {
    it(`maps ${code} to ORIGIN_UNREACHABLE`, () => {
      const error = transportError(failed(code))
      assert.equal(error.code, 'ORIGIN_UNREACHABLE')
      assert.equal(error.status, 502)
      assert.equal(error.reason, code)
    })
  }

  it('maps "socket hang up" (ECONNRESET) to ORIGIN_UNREACHABLE, not a timeout', () => {
    assert.equal(transportError(failed('ECONNRESET', 'socket hang up')).code, 'ORIGIN_UNREACHABLE')
  })

  it('reads the cause of an AggregateError (a host with several addresses)', () => {
    const error = transportError(new AggregateError([failed('ECONNREFUSED'), failed('ECONNREFUSED')]))
    assert.equal(error.code, 'ORIGIN_UNREACHABLE')
    assert.equal(error.reason, 'ECONNREFUSED')
  })

  it('maps the connect timeout to 504 ORIGIN_TIMEOUT', () => {
    const error = transportError(new ConnectTimeoutError(5000))
    assert.equal(error.code, 'ORIGIN_TIMEOUT')
    assert.equal(error.reason, 'connect_timeout')
  })

  it('maps anything else to ORIGIN_ERROR with its code or name', () => {
    assert.equal(transportError(failed('CERT_HAS_EXPIRED')).reason, 'CERT_HAS_EXPIRED')
    assert.equal(transportError(new TypeError('boom')).reason, 'TypeError')
  })
})
