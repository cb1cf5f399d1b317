import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { clientAddressResolver } from './client-address.ts'
import { ipFilterOf } from './ip-filter.ts'

const xff = (value: string) => ({ 'x-forwarded-for': value })

describe('client address', () => {
  it('is the socket peer when no proxy is trusted, whatever X-Forwarded-For says', () => {
    const of = clientAddressResolver([])
    assert.equal(of('198.51.100.9', xff('203.0.113.1')), '198.51.100.9')
    assert.equal(of('::ffff:198.51.100.9', undefined), '198.51.100.9')
  })

  it('ignores X-Forwarded-For from an untrusted peer (a spoofing client)', () => {
    const of = clientAddressResolver(['10.0.0.0/8'])
    assert.equal(of('198.51.100.9', xff('203.0.113.1')), '198.51.100.9')
  })

  it('walks X-Forwarded-For from the right past trusted hops to the first untrusted one', () => {
    const of = clientAddressResolver(['10.0.0.0/8', '2001:db8:ffff::/48'])
    // The client wrote "1.2.3.4" itself; the first proxy appended the address it saw.
    assert.equal(of('10.0.0.2', xff('1.2.3.4, 203.0.113.7, 10.0.0.1')), '203.0.113.7')
    assert.equal(of('::ffff:10.0.0.2', xff('2001:db8::1')), '2001:db8::1')
    assert.equal(of('2001:db8:ffff::5', xff('2001:0db8:0000::0002')), '2001:db8::2')
  })

  it('stops at a malformed hop and keeps the last address it could read', () => {
    const of = clientAddressResolver(['10.0.0.0/8'])
    assert.equal(of('10.0.0.2', xff('203.0.113.7, garbage, 10.0.0.1')), '10.0.0.1')
    assert.equal(of('10.0.0.2', undefined), '10.0.0.2')
  })
})

describe('ip filter', () => {
  it('denies the blocklist even when allowlisted, and admits only the allowlist when it is set', () => {
    const filter = ipFilterOf({ allowlist: ['10.0.0.0/8', '2001:db8::/32'], blocklist: ['10.6.6.0/24'] })
    assert.equal(filter?.admits('10.1.2.3'), true)
    assert.equal(filter?.admits('10.6.6.6'), false)
    assert.equal(filter?.admits('192.0.2.1'), false)
    assert.equal(filter?.admits('2001:db8::42'), true)
    assert.equal(filter?.admits('2001:db9::42'), false)
    assert.equal(filter?.admits('::ffff:10.1.2.3'), true, 'an IPv4-mapped peer matches IPv4 rules')
    assert.equal(filter?.admits('not-an-address'), false, 'fails closed')
  })

  it('never reads shorthand or octal IPv4 (10/8 would be 0.0.0.0/8, 010.0.0.1 would be 8.0.0.1)', async () => {
    const { parseRange } = await import('./ip-range.ts')
    for (const text of ['10/8', '192.168.1/24', '010.0.0.1', '10.0.0.1/33', '10.0.0.1/x', '1.2.3']) assert.equal(parseRange(text), undefined, text)
    assert.notEqual(parseRange('10.0.0.0/8'), undefined)
    assert.notEqual(parseRange('::ffff:10.0.0.0/104'), undefined)
    const of = clientAddressResolver(['127.0.0.1'])
    assert.equal(of('127.0.0.1', xff('010.0.0.1')), '127.0.0.1', 'a malformed hop is not believed')
  })

  it('admits everyone but the blocklist when no allowlist is set', () => {
    const filter = ipFilterOf({ allowlist: [], blocklist: ['2001:db8::/32', '192.0.2.7'] })
    assert.equal(filter?.admits('192.0.2.8'), true)
    assert.equal(filter?.admits('192.0.2.7'), false)
    assert.equal(filter?.admits('2001:db8:1::1'), false)
    assert.equal(ipFilterOf(null), null)
  })
})
