// OriginBody's flow control, driven by hand: what the connection is told (pause, resume, abort)
// for each thing a consumer does, in pull and in flowing mode.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OriginBody, type BodyConsumer, type Transfer } from './origin-body.ts'
import { ReadBuffer, readBufferCounts } from './read-buffers.ts'

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

describe('an origin body of lent chunks (pooled read buffers)', () => {
  /** A read of `fill` bytes into a pooled buffer, as the connection lends it. */
  const lentRead = (fill: number) => {
    const from = ReadBuffer.take()
    from.bytes.fill(fill)
    return { from, chunk: from.bytes.subarray(0, 32 * 1024) }
  }

  it('holds the buffer of a waiting chunk, and gives it away to a pulling reader', () => {
    const body = new OriginBody(recorded().transfer)
    const { from, chunk } = lentRead(1)
    const before = readBufferCounts().free
    body.push(chunk, from)
    assert.ok(from.held, 'a waiting chunk keeps its buffer from being read into')
    body.consume({ end: () => undefined, error: assert.fail }, false)
    assert.equal(body.read(), chunk)
    // The reader may keep it: the buffer is never read into or pooled again.
    from.retire()
    assert.ok(from.held)
    assert.equal(readBufferCounts().free, before)
  })

  it('lends a waiting chunk on to a flowing consumer for the call, then lets its buffer go', () => {
    const body = new OriginBody(recorded().transfer)
    const { from, chunk } = lentRead(1)
    body.push(chunk, from)
    let lentTo: unknown
    let heldDuringCall = false
    body.consume({ data: (_, lent) => ((lentTo = lent), (heldDuringCall = from.held)), end: () => undefined, error: assert.fail }, true)
    assert.equal(lentTo, from)
    assert.ok(heldDuringCall)
    assert.ok(!from.held, 'released once the consumer returned')
  })

  it('drains a complete body chunk by chunk, each lent for the call, the last one flagged', () => {
    const { transfer, calls } = recorded()
    const body = new OriginBody(transfer)
    const first = lentRead(1)
    const second = lentRead(2)
    body.push(first.chunk, first.from)
    body.push(kib(1, 3))
    body.push(second.chunk, second.from)
    body.finish()
    const taken: string[] = []
    body.drain((chunk, from, last) => {
      assert.ok(from === undefined || from.held, 'held during the call')
      taken.push(`${chunk[0]}:${from !== undefined}:${last}`)
    })
    assert.deepEqual(taken, ['1:true:false', '3:false:false', '2:true:true'])
    assert.ok(!first.from.held && !second.from.held, 'released after the calls')
    body.destroy()
    assert.deepEqual(calls, [], 'a drained body is over: nothing to abort')
    assert.throws(() => body.drain(() => undefined))
  })

  it('lets the buffers of waiting chunks go when the body is destroyed or fails', () => {
    const destroyed = new OriginBody(recorded().transfer)
    const first = lentRead(1)
    destroyed.push(first.chunk, first.from)
    destroyed.destroy()
    assert.ok(!first.from.held)
    const failed = new OriginBody(recorded().transfer)
    const second = lentRead(1)
    failed.push(second.chunk, second.from)
    failed.fail(new Error('cut'))
    assert.ok(!second.from.held)
  })
})
