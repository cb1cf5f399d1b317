// The primary's claims of keys being fetched: one fetch at a time, the waiters told when it is
// stored, and each fetching on its own when it was not (failed, not kept, its worker died).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type ClaimNews, FillClaims } from './fill-claims.ts'

function claims() {
  const told: Array<[string, number, ClaimNews<string>]> = []
  return { told, claims: new FillClaims<string, string>((worker, id, answer) => told.push([worker, id, answer])) }
}

describe('fill claims', () => {
  it('lets the first worker fetch and tells the others, once it stored the key, to read it', () => {
    const { told, claims: c } = claims()
    assert.equal(c.claim('a', 1, 'k'), 'fetch')
    assert.equal(c.claim('b', 7, 'k'), 'wait')
    assert.equal(c.claim('c', 3, 'k'), 'wait')
    assert.equal(c.claim('b', 8, 'other'), 'fetch', 'another key is fetched at once')
    assert.deepEqual(told, [])
    c.release('a', 'k', true)
    assert.deepEqual(told, [
      ['b', 7, 'stored'],
      ['c', 3, 'stored'],
    ])
    assert.equal(c.claim('c', 4, 'k'), 'fetch', 'the key is free again')
  })

  it('lets every waiter fetch on its own when the fetch was not stored', () => {
    const { told, claims: c } = claims()
    c.claim('a', 1, 'k')
    c.claim('b', 2, 'k')
    c.claim('c', 3, 'k')
    c.release('b', 'k', true)
    assert.deepEqual(told, [], 'a release by a worker that does not hold the key changes nothing')
    c.release('a', 'k', false)
    assert.deepEqual(told, [
      ['b', 2, 'fetch'],
      ['c', 3, 'fetch'],
    ])
    assert.equal(c.size, 0, 'nobody holds the key: the waiters fetch at once, each on its own')
    assert.equal(c.claim('a', 4, 'k'), 'fetch')
  })

  it('lets the waiters of a dead worker’s fetch fetch on their own, and forgets its waits', () => {
    const { told, claims: c } = claims()
    c.claim('a', 1, 'k')
    c.claim('b', 2, 'k')
    c.claim('b', 3, 'j')
    c.claim('a', 4, 'j')
    c.claim('c', 5, 'j')
    c.leave('a')
    assert.deepEqual(told, [['b', 2, 'fetch']], 'k: b fetches; a no longer waits for j')
    c.release('b', 'j', true)
    assert.deepEqual(told.slice(1), [['c', 5, 'stored']])
    assert.equal(c.size, 0)
  })

  it('tells every waiter, and each later claim at once, where the fetch grows; then its end', () => {
    const { told, claims: c } = claims()
    c.claim('a', 1, 'k')
    c.claim('b', 2, 'k')
    c.grows('b', 'k', '/dir/other.tmp')
    assert.deepEqual(told, [], 'only the holder says where its fetch grows')
    c.grows('a', 'k', '/dir/k.tmp')
    c.grows('a', 'k', '/dir/again.tmp')
    assert.deepEqual(told, [['b', 2, { growing: '/dir/k.tmp' }]], 'told once')
    assert.deepEqual(c.claim('c', 3, 'k'), { growing: '/dir/k.tmp' }, 'a later claim reads it at once')
    c.release('a', 'k', true)
    assert.deepEqual(told.slice(1), [
      ['b', 2, 'stored'],
      ['c', 3, 'stored'],
    ])
    c.claim('a', 4, 'j')
    c.claim('b', 5, 'j')
    c.grows('a', 'j', '/dir/j.tmp')
    c.leave('a')
    assert.deepEqual(told.slice(3), [
      ['b', 5, { growing: '/dir/j.tmp' }],
      ['b', 5, 'fetch'],
    ], 'its worker died: the reader goes on from the origin')
  })
})
