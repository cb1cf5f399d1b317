// The circuit breaker state machine, driven by a fake clock.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CircuitBreaker, type BreakerState } from './breaker.ts'

function breaker(overrides: Partial<{ failureThreshold: number; successThreshold: number; halfOpenMaxRequests: number }> = {}) {
  let now = 1_000
  const changes: Array<[BreakerState, BreakerState]> = []
  const b = new CircuitBreaker({
    failureThreshold: 3,
    successThreshold: 2,
    openMs: 10_000,
    halfOpenMaxRequests: 1,
    ...overrides,
    now: () => now,
    onChange: (from, to) => changes.push([from, to]),
  })
  return { b, changes, advance: (ms: number) => (now += ms) }
}

describe('circuit breaker', () => {
  it('opens after failure_threshold consecutive failures, not before', () => {
    const { b } = breaker()
    b.failure(b.acquire() ?? assert.fail('refused'))
    b.failure(b.acquire() ?? assert.fail('refused'))
    assert.equal(b.state, 'closed')
    b.failure(b.acquire() ?? assert.fail('refused'))
    assert.equal(b.state, 'open')
    assert.equal(b.acquire(), undefined)
  })

  it('counts only consecutive failures: a success in between resets the count', () => {
    const { b } = breaker()
    b.failure(b.acquire() ?? assert.fail('refused'))
    b.failure(b.acquire() ?? assert.fail('refused'))
    b.success(b.acquire() ?? assert.fail('refused'))
    b.failure(b.acquire() ?? assert.fail('refused'))
    b.failure(b.acquire() ?? assert.fail('refused'))
    assert.equal(b.state, 'closed')
  })

  it('turns half-open after timeout_seconds and admits only half_open_max_requests trials at once', () => {
    const { b, advance } = breaker({ halfOpenMaxRequests: 2 })
    for (let i = 0; i < 3; i++) b.failure(b.acquire() ?? assert.fail('refused'))
    advance(9_999)
    assert.equal(b.state, 'open')
    assert.equal(b.retryAfterMs(), 1)
    advance(1)
    assert.equal(b.state, 'half-open')
    const first = b.acquire()
    assert.equal(first?.kind, 'trial')
    assert.equal(b.acquire()?.kind, 'trial')
    assert.equal(b.acquire(), undefined)
    b.release(first ?? assert.fail('no trial'))
    assert.equal(b.acquire()?.kind, 'trial')
  })

  it('closes after success_threshold trial successes', () => {
    const { b, advance, changes } = breaker()
    for (let i = 0; i < 3; i++) b.failure(b.acquire() ?? assert.fail('refused'))
    advance(10_000)
    b.success(b.acquire() ?? assert.fail('no trial'))
    assert.equal(b.state, 'half-open')
    b.success(b.acquire() ?? assert.fail('no trial'))
    assert.equal(b.state, 'closed')
    assert.deepEqual(changes, [
      ['closed', 'open'],
      ['open', 'half-open'],
      ['half-open', 'closed'],
    ])
  })

  it('re-opens on any trial failure, and waits the full timeout again', () => {
    const { b, advance } = breaker()
    for (let i = 0; i < 3; i++) b.failure(b.acquire() ?? assert.fail('refused'))
    advance(10_000)
    b.failure(b.acquire() ?? assert.fail('no trial'))
    assert.equal(b.state, 'open')
    advance(5_000)
    assert.equal(b.state, 'open')
    advance(5_000)
    assert.equal(b.state, 'half-open')
  })

  it('ignores a late failure of a request admitted before the breaker went half-open', () => {
    const { b, advance } = breaker()
    const early = b.acquire() ?? assert.fail('closed breaker refused')
    for (let i = 0; i < 3; i++) b.failure(b.acquire() ?? assert.fail('refused'))
    advance(10_000)
    assert.equal(b.state, 'half-open')
    b.failure(early)
    assert.equal(b.state, 'half-open', 'an old timeout does not re-open it')
  })

  it('does not count a late success of a request admitted before the breaker opened as a trial', () => {
    const { b, advance } = breaker()
    const early = b.acquire() ?? assert.fail('closed breaker refused')
    for (let i = 0; i < 3; i++) b.failure(b.acquire() ?? assert.fail('refused'))
    advance(10_000)
    assert.equal(b.state, 'half-open')
    b.success(early)
    b.success(early)
    assert.equal(b.state, 'half-open')
  })
})
