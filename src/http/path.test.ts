import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodeSegments, isSafeKey, rawPathOf } from './path.ts'

describe('request paths', () => {
  it('strips the query and fragment', () => {
    assert.equal(rawPathOf('/a/b?token=x#y'), '/a/b')
  })
  it('decodes each segment exactly once, keeping %2F inside its segment', () => {
    assert.deepEqual(decodeSegments('/pub/dir%2Ffile%20x.txt'), ['pub', 'dir/file x.txt'])
    assert.deepEqual(decodeSegments('/pub/100%2525'), ['pub', '100%25'])
    assert.deepEqual(decodeSegments('/a//b'), ['a', '', 'b'])
  })
  it('refuses malformed escapes', () => {
    assert.equal(decodeSegments('/pub/%zz'), undefined)
    assert.equal(decodeSegments('/pub/%C3'), undefined)
    assert.equal(decodeSegments('pub'), undefined)
  })
  it('judges keys by their decoded segments', () => {
    for (const key of ['a/b..c/.d', '...', '.a', 'a.', 'a//b', '', 'a/', '..a/b', 'a/..b']) assert.equal(isSafeKey(key), true, key)
    for (const key of ['../x', 'a/../b', './x', 'a/.', '.', '..', 'a/..', '../', 'a/./b', 'a\\b', 'a\0b']) {
      assert.equal(isSafeKey(key), false, key)
    }
  })
})
