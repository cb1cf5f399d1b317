import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseContentRange, parseRange, resolveRange } from './range.ts'

describe('parseRange', () => {
  it('parses the three single-range forms', () => {
    assert.deepEqual(parseRange('bytes=0-99'), { kind: 'bounded', start: 0, end: 99 })
    assert.deepEqual(parseRange('bytes=10-'), { kind: 'from', start: 10 })
    assert.deepEqual(parseRange('bytes=-5'), { kind: 'suffix', length: 5 })
  })
  it('accepts a case-insensitive unit and spaces around list items', () => {
    assert.deepEqual(parseRange('Bytes= 0-1 '), { kind: 'bounded', start: 0, end: 1 })
  })
  it('reports a valid multi-range set as multiple', () => {
    assert.equal(parseRange('bytes=0-1, 4-5'), 'multiple')
  })
  it('never produces a number S3 cannot parse', () => {
    assert.deepEqual(parseRange('bytes=0-99999999999999999999999'), { kind: 'from', start: 0 })
    assert.equal(parseRange('bytes=99999999999999999999999-'), undefined)
    assert.deepEqual(parseRange('bytes=-99999999999999999999999'), { kind: 'suffix', length: Number.MAX_SAFE_INTEGER })
  })
  it('ignores invalid headers entirely', () => {
    for (const h of ['bytes=5-1', 'bytes=', 'items=0-1', 'bytes=a-b', 'bytes=0-1,x', 'bytes=--1']) {
      assert.equal(parseRange(h), undefined, h)
    }
  })
})

describe('resolveRange', () => {
  it('clamps the end to the last byte', () => {
    assert.deepEqual(resolveRange({ kind: 'bounded', start: 5, end: 500 }, 10), { start: 5, end: 9 })
  })
  it('selects the last n bytes, or all of a shorter object', () => {
    assert.deepEqual(resolveRange({ kind: 'suffix', length: 3 }, 10), { start: 7, end: 9 })
    assert.deepEqual(resolveRange({ kind: 'suffix', length: 30 }, 10), { start: 0, end: 9 })
  })
  it('is unsatisfiable past the end, for -0, and for an empty object', () => {
    assert.equal(resolveRange({ kind: 'from', start: 10 }, 10), undefined)
    assert.equal(resolveRange({ kind: 'suffix', length: 0 }, 10), undefined)
    assert.equal(resolveRange({ kind: 'from', start: 0 }, 0), undefined)
  })
})

describe('parseContentRange', () => {
  it('parses a 206 Content-Range and rejects anything else', () => {
    assert.deepEqual(parseContentRange('bytes 0-5/10'), { start: 0, end: 5, size: 10 })
    assert.equal(parseContentRange('bytes */10'), undefined)
    assert.equal(parseContentRange(undefined), undefined)
  })
})
