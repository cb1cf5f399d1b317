// The pool of origin read buffers: a buffer something holds never goes back to the pool, and one
// goes back once the connection moved on and the last hold ended.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ReadBuffer, readBufferCounts } from './read-buffers.ts'

describe('origin read buffers', () => {
  it('goes back to the pool only after the connection moved on and every hold was released', () => {
    const buffer = ReadBuffer.take()
    const before = readBufferCounts().free
    buffer.hold()
    buffer.hold()
    buffer.retire()
    assert.equal(readBufferCounts().free, before, 'held: not back yet')
    buffer.release()
    assert.ok(buffer.held)
    assert.equal(readBufferCounts().free, before)
    buffer.release()
    assert.ok(!buffer.held)
    assert.equal(readBufferCounts().free, before + 1)
    // A stray release changes nothing, and the buffer is not given out twice.
    buffer.release()
    assert.equal(readBufferCounts().free, before + 1)
    assert.equal(ReadBuffer.take(), buffer)
    assert.notEqual(ReadBuffer.take(), buffer)
  })

  it('stays with its connection while released before it moved on', () => {
    const buffer = ReadBuffer.take()
    const before = readBufferCounts().free
    buffer.hold()
    buffer.release()
    assert.equal(readBufferCounts().free, before, 'still the connection’s')
    buffer.retire()
    buffer.retire()
    assert.equal(readBufferCounts().free, before + 1)
  })

  it('never takes back a buffer given away', () => {
    const buffer = ReadBuffer.take()
    const before = readBufferCounts().free
    buffer.hold()
    buffer.donate()
    buffer.release()
    buffer.retire()
    assert.ok(buffer.held)
    assert.equal(readBufferCounts().free, before)
  })

  it('keeps at most 64 buffers waiting', () => {
    const taken = Array.from({ length: 100 }, () => ReadBuffer.take())
    for (const buffer of taken) buffer.retire()
    assert.equal(readBufferCounts().free, 64)
  })
})
