import assert from 'node:assert/strict'
import { it } from 'node:test'
import { outgoingCacheControl, storagePolicy } from './freshness.ts'

it('never stores no-store or private objects', () => {
  assert.equal(storagePolicy('no-store', 60).store, false)
  assert.equal(storagePolicy('private, max-age=60', 60).store, false)
})

it('caps the bucket TTL with s-maxage or max-age, and revalidates no-cache every time', () => {
  assert.equal(storagePolicy(undefined, 60).freshMs, 60_000)
  assert.equal(storagePolicy('public, max-age=10', 60).freshMs, 10_000)
  assert.equal(storagePolicy('max-age=600, s-maxage=5', 60).freshMs, 5000)
  assert.equal(storagePolicy('max-age=600', 60).freshMs, 60_000)
  assert.deepEqual(storagePolicy('no-cache', 60), { store: true, freshMs: 0 })
})

it('marks responses of auth buckets private unless the bucket says otherwise', () => {
  assert.equal(outgoingCacheControl('public, max-age=60, s-maxage=600', true, undefined), 'private, max-age=60')
  assert.equal(outgoingCacheControl(undefined, true, undefined), 'private')
  assert.equal(outgoingCacheControl('public, max-age=60', false, undefined), 'public, max-age=60')
  assert.equal(outgoingCacheControl('public, max-age=60', true, 'public, max-age=5'), 'public, max-age=5')
})
