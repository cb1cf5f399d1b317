import assert from 'node:assert/strict'
import { it } from 'node:test'
import { rateKeyOf } from './admit.ts'

it('counts an IPv6 client by its /64 and an IPv4 client by its address', () => {
  assert.equal(rateKeyOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  assert.equal(rateKeyOf('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64')
  assert.equal(rateKeyOf('203.0.113.7'), '203.0.113.7')
  assert.equal(rateKeyOf('::ffff:203.0.113.7'), '203.0.113.7')
})
