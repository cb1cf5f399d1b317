// The Redis node breaker's state machine, driven by a fake clock.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FAILURES_TO_OPEN, NodeBreaker, OPEN_MS, type Permit } from './store-breaker.ts'

function breaker() {
  let now = 1_000
  return { b: new NodeBreaker(() => now), advance: (ms: number) => (now += ms) }
}

const granted = (b: NodeBreaker): Permit => b.acquire() ?? assert.fail('the call was refused')

function open(b: NodeBreaker): void {
  for (let i = 0; i < FAILURES_TO_OPEN; i++) b.report(granted(b), false)
  assert.equal(b.state, 'open')
}

describe('redis node breaker', () => {
  it('opens after three consecutive failures, not before, and then refuses calls', () => {
    const { b } = breaker()
    b.report(granted(b), false)
    b.report(granted(b), false)
    assert.equal(b.state, 'closed')
    b.report(granted(b), false)
    assert.equal(b.state, 'open')
    assert.equal(b.acquire(), undefined)
  })

  it('counts only consecutive failures: a success in between resets the count', () => {
    const { b } = breaker()
    b.report(granted(b), false)
    b.report(granted(b), false)
    b.report(granted(b), true)
    b.report(granted(b), false)
    b.report(granted(b), false)
    assert.equal(b.state, 'closed')
  })

  it('stays open for the whole open period', () => {
    const { b, advance } = breaker()
    open(b)
    advance(OPEN_MS - 1)
    assert.equal(b.acquire(), undefined)
  })

  it('lets exactly one probe through after the open period, however many calls arrive at once', () => {
    const { b, advance } = breaker()
    open(b)
    advance(OPEN_MS)
    const permits = Array.from({ length: 50 }, () => b.acquire())
    assert.deepEqual(
      permits.filter((p) => p !== undefined),
      ['probe']
    )
    assert.equal(b.state, 'half-open')
    advance(60_000)
    assert.equal(b.acquire(), undefined, 'still one probe while it has not reported, however long it takes')
  })

  it('closes when the probe succeeds', () => {
    const { b, advance } = breaker()
    open(b)
    advance(OPEN_MS)
    b.report(granted(b), true)
    assert.equal(b.state, 'closed')
    assert.equal(b.acquire(), 'call')
    b.report('call', false)
    b.report('call', false)
    assert.equal(b.state, 'closed', 'a fresh count of failures after closing')
  })

  it('opens again for a whole period when the probe fails', () => {
    const { b, advance } = breaker()
    open(b)
    advance(OPEN_MS)
    b.report(granted(b), false)
    assert.equal(b.state, 'open')
    advance(OPEN_MS - 1)
    assert.equal(b.acquire(), undefined)
    advance(1)
    assert.equal(b.acquire(), 'probe')
  })

  it('ignores the outcome of calls admitted before it opened', () => {
    const { b, advance } = breaker()
    const late = granted(b)
    open(b)
    b.report(late, true)
    assert.equal(b.state, 'open', 'a slow success from before does not close it')
    advance(OPEN_MS)
    const probe = granted(b)
    b.report(late, false)
    assert.equal(b.state, 'half-open', 'nor does a late failure decide for the probe')
    b.report(probe, true)
    assert.equal(b.state, 'closed')
  })
})
