import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { CompressionConfig, CompressionEncoding } from '../config/representations-schema.ts'
import { chooseEncoding, compressible, parseAcceptEncoding, supportedEncodings, ZSTD_AVAILABLE } from './negotiate.ts'

const ALL: CompressionEncoding[] = ['br', 'zstd', 'gzip']

describe('chooseEncoding', () => {
  it('picks the configured first of equal codings from browser Accept-Encoding strings', () => {
    const chromeAndFirefox = 'gzip, deflate, br, zstd'
    assert.equal(chooseEncoding(chromeAndFirefox, ALL), 'br')
    assert.equal(chooseEncoding(chromeAndFirefox, ['zstd', 'br', 'gzip']), 'zstd')
    assert.equal(chooseEncoding(chromeAndFirefox, ['gzip']), 'gzip')
    const safari = 'gzip, deflate, br'
    assert.equal(chooseEncoding(safari, ALL), 'br')
    assert.equal(chooseEncoding(safari, ['zstd', 'gzip']), 'gzip')
    assert.equal(chooseEncoding(safari, ['zstd']), undefined)
  })
  it('picks br for curl --compressed and for CDNs forwarding a normalized value', () => {
    assert.equal(chooseEncoding('deflate, gzip, br, zstd', ALL), 'br')
    assert.equal(chooseEncoding('br,gzip', ALL), 'br') // CloudFront with Brotli on
    assert.equal(chooseEncoding('gzip', ALL), 'gzip') // Fastly's normalized gzip-only value
  })
  it('lets a higher q win over the configured order', () => {
    assert.equal(chooseEncoding('gzip;q=1.0, br;q=0.9', ALL), 'gzip')
    assert.equal(chooseEncoding('gzip;q=0.5, zstd;q=0.8, br;q=0.7', ALL), 'zstd')
    assert.equal(chooseEncoding('gzip ; q=0.5 , br;Q=0.6', ALL), 'br')
  })
  it('never picks a coding refused with q=0', () => {
    assert.equal(chooseEncoding('br;q=0, gzip', ALL), 'gzip')
    assert.equal(chooseEncoding('br;q=0, gzip;q=0.000', ALL), undefined)
    assert.equal(chooseEncoding('br;q=0, gzip', ['br']), undefined)
  })
  it('gives * its weight for every coding not named', () => {
    assert.equal(chooseEncoding('*;q=0.5, gzip;q=0', ALL), 'br')
    assert.equal(chooseEncoding('*;q=0.5, gzip;q=0', ['gzip']), undefined)
    assert.equal(chooseEncoding('*;q=0.5, gzip;q=0', ['gzip', 'zstd']), 'zstd')
    assert.equal(chooseEncoding('*', ALL), 'br')
    assert.equal(chooseEncoding('gzip;q=0.4, *;q=0.6', ALL), 'br')
    assert.equal(chooseEncoding('gzip;q=0.4, *;q=0.6', ['gzip']), undefined) // identity gets *'s 0.6
  })
  it('answers identity when only identity is asked for or everything is refused', () => {
    assert.equal(chooseEncoding('identity', ALL), undefined)
    assert.equal(chooseEncoding('*;q=0', ALL), undefined)
    assert.equal(chooseEncoding('*;q=0, identity', ALL), undefined)
  })
  it('answers identity when the client weighs it above every offered coding', () => {
    assert.equal(chooseEncoding('gzip;q=0.5, identity', ALL), undefined)
    assert.equal(chooseEncoding('gzip;q=0.5, *;q=0.8', ['gzip']), undefined) // identity gets *'s 0.8
    assert.equal(chooseEncoding('gzip, identity;q=0.5', ALL), 'gzip')
    assert.equal(chooseEncoding('br;q=0.5, identity;q=0.5', ALL), 'br') // a tie goes to the coding
    assert.equal(chooseEncoding('gzip, identity;q=0', ALL), 'gzip')
  })
  it('answers identity without Accept-Encoding and for an empty one', () => {
    assert.equal(chooseEncoding(undefined, ALL), undefined)
    assert.equal(chooseEncoding('', ALL), undefined)
    assert.equal(chooseEncoding('  ', ALL), undefined)
  })
  it('answers identity for garbage and ignores elements it cannot read', () => {
    for (const garbage of [';;;, ,=,q=1', 'gzip;q=2', 'br;q=abc', 'br;q=0.5000', 'br;q=', 'br;q', 'b r', 'gz\u0000ip', '\u00e9', ',,,,', 'q=1;gzip']) {
      assert.equal(chooseEncoding(garbage, ALL), undefined, garbage)
    }
    assert.equal(chooseEncoding('br;q=abc, gzip', ALL), 'gzip')
    assert.equal(chooseEncoding('x'.repeat(10_000), ALL), undefined)
  })
  it('reads codings case-insensitively and x-gzip as gzip', () => {
    assert.equal(chooseEncoding('GZIP, BR', ALL), 'br')
    assert.equal(chooseEncoding('x-gzip', ALL), 'gzip')
  })
  it('offers nothing when no encoding is offered', () => {
    assert.equal(chooseEncoding('gzip, br', []), undefined)
  })
  it('answers the same for a value seen many times (parse cache) and after many distinct values', () => {
    for (let i = 0; i < 2000; i++) {
      const q = `0.${String(i % 1000).padStart(3, '0')}`
      assert.equal(chooseEncoding(`gzip;q=${q}, br;q=1, x-${i}`, ALL), 'br')
      assert.equal(chooseEncoding(`gzip;q=${q}, br;q=1, x-${i}`, ['zstd', 'gzip']), i % 1000 === 0 ? undefined : 'gzip')
    }
    assert.equal(chooseEncoding('gzip, deflate, br, zstd', ['gzip', 'br']), 'gzip')
  })
})

describe('parseAcceptEncoding', () => {
  it('keeps the first element naming a coding and the q of *', () => {
    const parsed = parseAcceptEncoding('gzip;q=0.3, br, gzip;q=1, *;q=0.1, identity;q=0')
    assert.deepEqual([...parsed.codings], [['gzip', 0.3], ['br', 1], ['identity', 0]])
    assert.equal(parsed.star, 0.1)
  })
  it('ignores parameters other than q', () => {
    assert.deepEqual([...parseAcceptEncoding('br;level=5;q=0.5').codings], [['br', 0.5]])
  })
})

describe('supportedEncodings', () => {
  it('keeps the configured order and drops zstd only where node:zlib lacks it', () => {
    assert.deepEqual(supportedEncodings(['gzip', 'zstd', 'br']), ZSTD_AVAILABLE ? ['gzip', 'zstd', 'br'] : ['gzip', 'br'])
    assert.deepEqual(supportedEncodings(['gzip']), ['gzip'])
  })
  it('knows Node 24 has zstd', { skip: Number(process.versions.node.split('.')[0]) < 24 }, () => {
    assert.equal(ZSTD_AVAILABLE, true)
  })
})

describe('compressible', () => {
  const cfg: CompressionConfig = { types: ['text/*', 'application/json', 'image/svg+xml'], min_size: 1024, encodings: ALL }
  const meta = (contentType: string | undefined, size = 4096, contentEncoding: string | undefined = undefined) => ({
    contentType,
    size,
    contentEncoding,
  })

  it('compresses listed types, text/* wildcards included, whatever their parameters and case', () => {
    assert.equal(compressible(cfg, meta('text/html')), true)
    assert.equal(compressible(cfg, meta('text/html; charset=utf-8')), true)
    assert.equal(compressible(cfg, meta('Text/CSS;charset=UTF-8')), true)
    assert.equal(compressible(cfg, meta('application/json;charset=utf-8')), true)
    assert.equal(compressible(cfg, meta(' image/svg+xml ')), true)
  })
  it('leaves other types alone', () => {
    assert.equal(compressible(cfg, meta('application/javascript')), false)
    assert.equal(compressible(cfg, meta('application/json-seq')), false)
    assert.equal(compressible(cfg, meta('application/octet-stream')), false)
    assert.equal(compressible(cfg, meta('image/png')), false)
    assert.equal(compressible(cfg, meta('texts/plain')), false)
    assert.equal(compressible(cfg, meta(undefined)), false)
    assert.equal(compressible(cfg, meta('')), false)
    assert.equal(compressible(cfg, meta('text')), false)
    assert.equal(compressible(cfg, meta('text/')), false)
  })
  it('compresses from min_size up', () => {
    assert.equal(compressible(cfg, meta('text/plain', 1023)), false)
    assert.equal(compressible(cfg, meta('text/plain', 1024)), true)
    assert.equal(compressible({ ...cfg, min_size: 0 }, meta('text/plain', 0)), true)
  })
  it('leaves an object with its own Content-Encoding alone', () => {
    assert.equal(compressible(cfg, meta('text/plain', 4096, 'gzip')), false)
    assert.equal(compressible(cfg, meta('application/json', 4096, 'br')), false)
    assert.equal(compressible(cfg, meta('text/plain', 4096, 'aws-chunked')), false)
    assert.equal(compressible(cfg, meta('text/plain', 4096, 'identity')), true)
    assert.equal(compressible(cfg, meta('text/plain', 4096, '')), true)
  })
})
