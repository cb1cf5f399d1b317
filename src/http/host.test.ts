import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { hostProblem, isValidHost } from './host.ts'

describe('isValidHost', () => {
  it('accepts names, IPv4 addresses and bracketed IPv6 literals, with or without a port', () => {
    for (const host of [
      'localhost',
      'cdn.example.com',
      'CDN.Example.COM:443',
      '127.0.0.1:8080',
      '999.1.1.1', // not an IPv4 address, but a valid reg-name
      'a-b_c~d.e',
      "x!$&'()*+,;=y",
      'caf%C3%A9.example',
      '[::1]',
      '[::1]:8080',
      '[2001:db8::7]:65535',
      '[::ffff:192.0.2.1]',
      '[v1.fe80::a+en1]',
      'example.com:', // RFC 3986: port = *DIGIT
      'example.com:0',
    ]) {
      assert.equal(isValidHost(host), true, host)
    }
  })

  it('refuses what is not host[:port]', () => {
    for (const host of [
      '',
      ':8080',
      'a b',
      'ex.com:80:90',
      'ex.com:65536',
      'ex.com:123456',
      'ex.com:8o',
      'ex.com/path',
      'user@ex.com',
      'ex.com?x',
      'ex.com#x',
      'bad%zz',
      'bad%4',
      'caf\u00e9.example',
      'a\\b',
      '[::1',
      '::1',
      '[::1]x',
      '[::1]]',
      '[]',
      '[fe80::1%eth0]',
      '[fe80::1%25eth0]',
      '[1.2.3.4]',
      '[v1]',
      '[v1.]',
      '[vx.a]',
      '[::1]:99999',
    ]) {
      assert.equal(isValidHost(host), false, JSON.stringify(host))
    }
  })
})

describe('hostProblem', () => {
  it('passes one valid Host in any case of its name', () => {
    assert.equal(hostProblem(['Accept', '*/*', 'host', 'a:1'], true), undefined)
    assert.equal(hostProblem(['HOST', 'a'], true), undefined)
  })

  it('refuses two Host headers, even when both are valid and equal', () => {
    assert.equal(hostProblem(['Host', 'a', 'Accept', '*/*', 'host', 'a'], true), 'duplicate_host')
    assert.equal(hostProblem(['Host', 'a', 'Host', 'b'], false), 'duplicate_host')
  })

  it('requires a Host only when asked to (HTTP/1.1), and never an invalid one', () => {
    assert.equal(hostProblem(['Accept', '*/*', 'Hosts', 'a'], true), 'missing_host')
    assert.equal(hostProblem([], false), undefined)
    assert.equal(hostProblem(['Host', 'a b'], false), 'bad_host')
    assert.equal(hostProblem(['Host', ''], true), 'bad_host')
  })
})
