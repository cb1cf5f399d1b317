import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { evaluatePreconditions, ifRangeAllows, quoteEtag, splitEntityTags, type ConditionalHeaders } from './conditional.ts'

const validators = { etag: '"abc"', lastModified: new Date('2026-01-01T10:00:00.500Z') }
const none: ConditionalHeaders = { ifMatch: undefined, ifNoneMatch: undefined, ifModifiedSince: undefined, ifUnmodifiedSince: undefined }
const at = (iso: string) => new Date(iso).toUTCString()

describe('evaluatePreconditions', () => {
  it('proceeds without conditions', () => {
    assert.equal(evaluatePreconditions(none, validators), 'proceed')
  })
  it('uses weak comparison for If-None-Match', () => {
    assert.equal(evaluatePreconditions({ ...none, ifNoneMatch: 'W/"abc"' }, validators), 'not-modified')
    assert.equal(evaluatePreconditions({ ...none, ifNoneMatch: '"x", "abc"' }, validators), 'not-modified')
    assert.equal(evaluatePreconditions({ ...none, ifNoneMatch: '"x"' }, validators), 'proceed')
  })
  it('ignores If-Modified-Since when If-None-Match is present', () => {
    const h = { ...none, ifNoneMatch: '"x"', ifModifiedSince: at('2027-01-01T00:00:00Z') }
    assert.equal(evaluatePreconditions(h, validators), 'proceed')
  })
  it('compares If-Modified-Since at whole seconds', () => {
    assert.equal(evaluatePreconditions({ ...none, ifModifiedSince: at('2026-01-01T10:00:00Z') }, validators), 'not-modified')
    assert.equal(evaluatePreconditions({ ...none, ifModifiedSince: at('2026-01-01T09:59:59Z') }, validators), 'proceed')
    assert.equal(evaluatePreconditions({ ...none, ifModifiedSince: 'not a date' }, validators), 'proceed')
  })
  it('uses strong comparison for If-Match and fails on mismatch', () => {
    assert.equal(evaluatePreconditions({ ...none, ifMatch: '"abc"' }, validators), 'proceed')
    assert.equal(evaluatePreconditions({ ...none, ifMatch: 'W/"abc"' }, validators), 'failed')
    assert.equal(evaluatePreconditions({ ...none, ifMatch: '*' }, validators), 'proceed')
  })
  it('fails If-Unmodified-Since when the object changed after it', () => {
    assert.equal(evaluatePreconditions({ ...none, ifUnmodifiedSince: at('2025-12-31T00:00:00Z') }, validators), 'failed')
    assert.equal(evaluatePreconditions({ ...none, ifUnmodifiedSince: at('2026-01-02T00:00:00Z') }, validators), 'proceed')
  })
})

describe('ifRangeAllows', () => {
  it('matches a strong ETag or the exact Last-Modified date', () => {
    assert.equal(ifRangeAllows(undefined, validators), true)
    assert.equal(ifRangeAllows('"abc"', validators), true)
    assert.equal(ifRangeAllows('W/"abc"', validators), false)
    assert.equal(ifRangeAllows(at('2026-01-01T10:00:00Z'), validators), true)
    assert.equal(ifRangeAllows(at('2026-01-01T11:00:00Z'), validators), false)
  })
})

describe('entity tags', () => {
  it('splits lists without breaking quoted commas and quotes bare ETags', () => {
    assert.deepEqual(splitEntityTags('"a,b", W/"c" ,"d"'), ['"a,b"', 'W/"c"', '"d"'])
    assert.equal(quoteEtag('abc'), '"abc"')
    assert.equal(quoteEtag('"abc"'), '"abc"')
    assert.equal(quoteEtag(''), undefined)
  })
})
