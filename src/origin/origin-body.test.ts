// OriginBody's flow control, driven by hand: what the connection is told (pause, resume, abort)
// for each thing a consumer does, in pull and in flowing mode.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OriginBody, type BodyConsumer, type Transfer } from './origin-body.ts'

function recorded(): { transfer: Transfer; calls: string[] } {
  const calls: string[] = []
  return {
    calls,
    transfer: {
      pause: () => calls.push('pause'),
      resume: () => calls.push('resume'),
      abort: (reason) => calls.push(`abort:${reason.message}`),
    },
  }
}

const kib = (n: number, fill = 0) => Buffer.alloc(n * 1024, fill)

describe('an origin body read by pulling', () => {
  it('pauses the connection once 256 KiB wait, resumes when read below, and ends after the last read', () => {
    const { transfer, calls } = recorded()
    const body = new OriginBody(transfer)
    for (let i = 0; i < 3; i++) body.push(kib(64))
    assert.deepEqual(calls, [])
    body.push(kib(64))
    assert.deepEqual(calls, ['pause'])
    let ended = false
    body.consume({ end: () => (ended = true), error: assert.fail }, false)
    assert.equal(body.read()?.length, 64 * 1024)
    assert.deepEqual(calls, ['pause', 'resume'])
    body.finish()
    for (let i = 0; i < 3; i++) assert.ok(body.read() !== null)
    assert.equal(ended, false, 'not before the reader asked past the last chunk')
    assert.equal(body.read(), null)
    assert.equal(ended, true)
  })

  it('wakes the reader when a chunk arrives after none waited', () => {
    const { transfer } = recorded()
    const body = new OriginBody(transfer)
    let wakes = 0
    body.consume({ readable: () => wakes++, end: assert.fail, error: assert.fail }, false)
    assert.equal(body.read(), null)
    body.push(kib(1))
    body.push(kib(1))
    assert.equal(wakes, 1)
  })
})

describe('an origin body that flows', () => {
  it('hands over what waited, in order, until the consumer pauses; the rest and the end on resume', () => {
    const { transfer, calls } = recorded()
    const body = new OriginBody(transfer)
    body.push(kib(1, 1))
    body.push(kib(1, 2))
    body.push(kib(1, 3))
    const got: number[] = []
    let ended = false
    const consumer: BodyConsumer = {
      data(chunk) {
        got.push(chunk[0] as number)
        if (got.length === 1) body.pause()
      },
      end: () => (ended = true),
      error: assert.fail,
    }
    body.consume(consumer, true)
    assert.deepEqual(got, [1])
    assert.deepEqual(calls, ['pause'])
    // A chunk the connection still delivers as it pauses waits behind the others.
    body.push(kib(1, 4))
    body.finish()
    assert.equal(ended, false)
    body.resume()
    assert.deepEqual(got, [1, 2, 3, 4])
    assert.equal(ended, true)
  })
})

describe('destroying an origin body', () => {
  it('aborts the transfer unless every byte arrived, and tells the consumer nothing', () => {
    const partial = recorded()
    const cut = new OriginBody(partial.transfer)
    cut.consume({ data: () => undefined, end: assert.fail, error: assert.fail }, true)
    cut.push(kib(1))
    cut.destroy(new Error('client gone'))
    cut.fail(new Error('late failure'))
    assert.deepEqual(partial.calls, ['abort:client gone'])

    const whole = recorded()
    const done = new OriginBody(whole.transfer)
    done.push(kib(1))
    done.finish()
    done.destroy()
    assert.deepEqual(whole.calls, [])
  })

  it('reports a failure that came before the consumer as soon as it consumes', () => {
    const body = new OriginBody(recorded().transfer)
    body.push(kib(1))
    body.fail(new Error('reset'))
    let failure: Error | undefined
    body.consume({ end: assert.fail, error: (err) => (failure = err) }, false)
    assert.equal(failure?.message, 'reset')
  })
})
