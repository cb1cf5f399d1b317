// The Redis tier's call deadlines: timers driven by node:test's mock timers, the clock by hand, so
// a timer can be made to fire late (as when a garbage collection holds the event loop).
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it, mock } from 'node:test'
import { Deadlines, GRACE_MS, LATE_MS, MAX_HELD_MS } from './deadlines.ts'

const TIMEOUT = 50

describe('redis call deadlines', () => {
  let now = 0
  let deadlines: Deadlines
  let expired: string[]
  const start = (name: string) => deadlines.start(() => expired.push(name))
  /** The clock moves by `clock` ms while the timers move by `timers` ms (less: they fire late). */
  const advance = (timers: number, clock = timers) => {
    now += clock
    mock.timers.tick(timers)
  }

  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout'] })
    now = 0
    expired = []
    deadlines = new Deadlines(TIMEOUT, () => now)
  })
  afterEach(() => mock.timers.reset())

  it('gives up a call that has not settled by its deadline, and only that one', () => {
    const slow = start('slow')
    advance(20)
    const quick = start('quick')
    advance(10)
    assert.equal(quick.settle(), true)
    advance(TIMEOUT - 30 - 1)
    assert.deepEqual(expired, [])
    advance(1)
    assert.deepEqual(expired, ['slow'])
    assert.equal(slow.settle(), false, 'a call given up cannot settle afterwards')
    assert.equal(deadlines.size, 0)
  })

  it('gives up later calls at their own deadlines', () => {
    start('a')
    advance(30)
    start('b')
    advance(TIMEOUT - 30)
    assert.deepEqual(expired, ['a'])
    advance(29)
    assert.deepEqual(expired, ['a'])
    advance(1)
    assert.deepEqual(expired, ['a', 'b'])
  })

  it('waits a grace period when its timer fires late, so an answer already there is read first', () => {
    const call = start('held')
    // The loop was held up 200 ms: the timer fires at 250 instead of 50.
    advance(TIMEOUT, TIMEOUT + 200)
    assert.deepEqual(expired, [], 'not given up by a late timer')
    // The reply, read in the loop's next poll phase, settles it.
    assert.equal(call.settle(), true)
    advance(GRACE_MS)
    assert.deepEqual(expired, [])
  })

  it('gives up a call still unsettled after an on-time grace period', () => {
    start('hung')
    advance(TIMEOUT, TIMEOUT + LATE_MS + 1)
    assert.deepEqual(expired, [])
    advance(GRACE_MS - 1)
    assert.deepEqual(expired, [])
    advance(1)
    assert.deepEqual(expired, ['hung'])
  })

  it('keeps a call while its timers keep firing late, but never past the cap', () => {
    start('hung')
    advance(TIMEOUT, TIMEOUT + 100)
    let waited = TIMEOUT + 100
    while (expired.length === 0 && waited < TIMEOUT + MAX_HELD_MS + 500) {
      advance(GRACE_MS, GRACE_MS + 100)
      waited += GRACE_MS + 100
    }
    assert.deepEqual(expired, ['hung'])
    assert.ok(waited >= TIMEOUT + MAX_HELD_MS, `given up after ${waited} ms, before the cap`)
    assert.ok(waited <= TIMEOUT + MAX_HELD_MS + GRACE_MS + 100, `given up after ${waited} ms`)
  })

  it('a timer within LATE_MS of its time is on time', () => {
    start('hung')
    advance(TIMEOUT, TIMEOUT + LATE_MS)
    assert.deepEqual(expired, ['hung'])
  })
})
