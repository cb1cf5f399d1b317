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
    b.failure('normal')
    b.failure('normal')
    assert.equal(b.state, 'closed')
    b.failure('normal')
    assert.equal(b.state, 'open')
    assert.equal(b.acquire(), undefined)
  })

  it('counts only consecutive failures: a success in between resets the count', () => {
    const { b } = breaker()
    b.failure('normal')
    b.failure('normal')
    b.success('normal')
    b.failure('normal')
    b.failure('normal')
    assert.equal(b.state, 'closed')
  })

  it('turns half-open after timeout_seconds and admits only half_open_max_requests trials at once', () => {
    const { b, advance } = breaker({ halfOpenMaxRequests: 2 })
    for (let i = 0; i < 3; i++) b.failure('normal')
    advance(9_999)
    assert.equal(b.state, 'open')
    assert.equal(b.retryAfterMs(), 1)
    advance(1)
    assert.equal(b.state, 'half-open')
    assert.equal(b.acquire(), 'trial')
    assert.equal(b.acquire(), 'trial')
    assert.equal(b.acquire(), undefined)
    b.release('trial')
    assert.equal(b.acquire(), 'trial')
  })

  it('closes after success_threshold trial successes', () => {
    const { b, advance, changes } = breaker()
    for (let i = 0; i < 3; i++) b.failure('normal')
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
    for (let i = 0; i < 3; i++) b.failure('normal')
    advance(10_000)
    b.failure(b.acquire() ?? assert.fail('no trial'))
    assert.equal(b.state, 'open')
    advance(5_000)
    assert.equal(b.state, 'open')
    advance(5_000)
    assert.equal(b.state, 'half-open')
  })

  it('does not count a late success of a request admitted before the breaker opened as a trial', () => {
    const { b, advance } = breaker()
    const early = b.acquire() ?? assert.fail('closed breaker refused')
    for (let i = 0; i < 3; i++) b.failure('normal')
    advance(10_000)
    assert.equal(b.state, 'half-open')
    b.success(early)
    b.success(early)
    assert.equal(b.state, 'half-open')
  })
})
