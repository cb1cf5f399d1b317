import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { describe, it } from 'node:test'
import type { ImagesConfig } from '../config/representations-schema.ts'
import { ProxyError } from '../errors.ts'
import { canonicalParams, IMAGE_PARAM_NAMES, readImageParams, signImagePath } from './params.ts'

function config(overrides: Partial<ImagesConfig> = {}): ImagesConfig {
  return {
    presets: {
      thumb: { width: 320, height: 320, fit: 'cover', format: 'auto', quality: 75 },
      retina: { width: 400, fit: 'inside', format: 'webp', dpr: 2 },
      hero: { width: 3000, fit: 'inside', format: 'auto', dpr: 2 },
    },
    allow_arbitrary: true,
    max_width: 4096,
    max_height: 4096,
    default_quality: 80,
    max_input_pixels: 50_000_000,
    max_input_bytes: 50 * 1024 * 1024,
    max_frames: 100,
    formats: ['avif', 'webp', 'jpeg', 'png'],
    signing_keys: null,
    max_concurrent: 2,
    max_queue: 8,
    render_timeout_ms: 10_000,
    svg: false,
    ...overrides,
  }
}

function refusal(fn: () => unknown, code: string, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProxyError, String(err))
    assert.equal(err.code, code)
    assert.match(err.reason ?? '', reason)
    return true
  })
}

describe('readImageParams', () => {
  it('has no image parameters without a query or with only other parameters', () => {
    assert.equal(readImageParams('/img/a.jpg', config()), undefined)
    assert.equal(readImageParams('/img/a.jpg?', config()), undefined)
    assert.equal(readImageParams('/img/a.jpg?v=3&cb=123', config()), undefined)
    assert.equal(readImageParams('/img/a.jpg?width=320', config()), undefined)
  })
  it('reads explicit parameters with their defaults and ignores cache busters', () => {
    assert.deepEqual(readImageParams('/img/a.jpg?w=320&v=7', config()), {
      width: 320,
      height: undefined,
      fit: 'cover',
      format: 'auto',
      quality: 80,
      preset: undefined,
    })
    assert.deepEqual(readImageParams('/img/a.jpg?w=100&h=50&q=60&fmt=webp&fit=contain', config()), {
      width: 100,
      height: 50,
      fit: 'contain',
      format: 'webp',
      quality: 60,
      preset: undefined,
    })
  })
  it('accepts f as an alias of fmt and jpg for jpeg', () => {
    assert.equal(readImageParams('/a.png?w=10&f=jpg', config())?.format, 'jpeg')
    assert.equal(readImageParams('/a.png?w=10&fmt=JPEG', config())?.format, 'jpeg')
    assert.equal(readImageParams('/a.png?w=10&fmt=auto', config())?.format, 'auto')
  })
  it('applies dpr to width and height', () => {
    const p = readImageParams('/a.jpg?w=320&h=200&dpr=2', config())
    assert.equal(p?.width, 640)
    assert.equal(p?.height, 400)
    assert.equal(readImageParams('/a.jpg?w=333&dpr=1.5', config())?.width, 500)
  })
  it('refuses out-of-range and malformed values with 400 naming the parameter', () => {
    const cases: Array<[string, RegExp]> = [
      ['w=0', /^w: /],
      ['w=-5', /^w: /],
      ['w=12.5', /^w: /],
      ['w=abc', /^w: /],
      ['w=', /^w: /],
      ['w=5000', /^w: 5000 is over this bucket's max_width \(4096\)/],
      ['w=3000&dpr=2', /^w: 3000 x dpr 2 = 6000 is over this bucket's max_width/],
      ['h=4097', /^h: .*max_height/],
      ['q=0', /^q: /],
      ['q=101', /^q: /],
      ['w=10&dpr=0.5', /^dpr: /],
      ['w=10&dpr=5', /^dpr: /],
      ['w=10&dpr=x', /^dpr: /],
      ['w=10&fit=stretch', /^fit: must be one of cover, contain, fill, inside, outside/],
      ['w=10&fmt=gif', /^fmt: must be one of auto, avif, webp, jpeg, png/],
      ['w=10&f=bmp', /^f: /],
      ['w=%ZZ', /^w: not valid percent-encoding/],
    ]
    for (const [query, reason] of cases) {
      refusal(() => readImageParams(`/a.jpg?${query}`, config()), 'IMAGE_BAD_PARAMS', reason)
    }
  })
  it('refuses a format the bucket does not output', () => {
    refusal(() => readImageParams('/a.jpg?w=10&fmt=avif', config({ formats: ['webp', 'jpeg'] })), 'IMAGE_BAD_PARAMS', /^fmt: avif is not an output format of this bucket \(webp, jpeg\)/)
  })
  it('refuses a repeated parameter and fmt given with its alias', () => {
    refusal(() => readImageParams('/a.jpg?w=10&w=20', config()), 'IMAGE_BAD_PARAMS', /^w: given more than once/)
    refusal(() => readImageParams('/a.jpg?w=10&fmt=png&f=webp', config()), 'IMAGE_BAD_PARAMS', /^fmt: given twice/)
    // Other parameters may repeat: they are not the proxy's.
    assert.equal(readImageParams('/a.jpg?w=10&v=1&v=2', config())?.width, 10)
  })
  it('refuses sig without anything to sign', () => {
    refusal(() => readImageParams('/a.jpg?sig=abc', config()), 'IMAGE_BAD_PARAMS', /^sig: /)
  })
  it('resolves a preset, with its dpr and quality, or the default quality', () => {
    assert.deepEqual(readImageParams('/a.jpg?preset=thumb', config()), {
      width: 320,
      height: 320,
      fit: 'cover',
      format: 'auto',
      quality: 75,
      preset: 'thumb',
    })
    assert.deepEqual(readImageParams('/a.jpg?preset=retina', config({ default_quality: 70 })), {
      width: 800,
      height: undefined,
      fit: 'inside',
      format: 'webp',
      quality: 70,
      preset: 'retina',
    })
  })
  it('lets explicit parameters refine a preset when arbitrary parameters are allowed', () => {
    const p = readImageParams('/a.jpg?preset=thumb&q=50&dpr=2', config())
    assert.deepEqual([p?.width, p?.height, p?.quality, p?.preset], [640, 640, 50, 'thumb'])
  })
  it('refuses an unknown preset, and a preset over the bucket limits', () => {
    refusal(() => readImageParams('/a.jpg?preset=huge', config()), 'IMAGE_BAD_PARAMS', /^preset: unknown preset 'huge'/)
    refusal(() => readImageParams('/a.jpg?preset=toString', config()), 'IMAGE_BAD_PARAMS', /^preset: unknown preset/)
    refusal(() => readImageParams('/a.jpg?preset=hero', config()), 'IMAGE_BAD_PARAMS', /^preset hero: width: 3000 x dpr 2 = 6000 is over/)
    refusal(() => readImageParams('/a.jpg?preset=retina', config({ formats: ['jpeg'] })), 'IMAGE_BAD_PARAMS', /^preset retina: webp is not an output format/)
  })
})

describe('presets-only mode (allow_arbitrary false)', () => {
  const only = config({ allow_arbitrary: false })
  it('serves presets', () => {
    assert.equal(readImageParams('/a.jpg?preset=thumb&v=2', only)?.width, 320)
  })
  it('refuses every other image parameter, alone or beside a preset', () => {
    for (const query of ['w=320', 'h=10', 'q=50', 'fmt=webp', 'f=png', 'fit=fill', 'dpr=2']) {
      const name = query.split('=')[0] as string
      refusal(() => readImageParams(`/a.jpg?${query}`, only), 'IMAGE_BAD_PARAMS', new RegExp(`^${name}: only presets are allowed`))
      refusal(() => readImageParams(`/a.jpg?preset=thumb&${query}`, only), 'IMAGE_BAD_PARAMS', new RegExp(`^${name}: only preset and sig are allowed`))
    }
  })
})

describe('signed URLs', () => {
  const key1 = 'first-signing-key-0123456789'
  const key2 = 'second-signing-key-abcdefghij'
  const signed = config({ signing_keys: [key1, key2] })

  it('signs the raw path, ? and the sorted name=value pairs as sent (base64url, no padding)', () => {
    const expected = createHmac('sha256', key1).update('/img/a%20b.jpg?fmt=webp&q=70&w=320').digest('base64url')
    assert.equal(signImagePath('/img/a%20b.jpg', { w: '320', q: '70', fmt: 'webp' }, key1), expected)
    assert.doesNotMatch(expected, /[=+/]/)
    assert.equal(expected.length, 43)
  })
  it('accepts a right signature in any parameter order, cache busters left out', () => {
    const sig = signImagePath('/img/a%20b.jpg', { w: '320', fmt: 'webp' }, key1)
    assert.equal(readImageParams(`/img/a%20b.jpg?fmt=webp&cb=9&sig=${sig}&w=320`, signed)?.width, 320)
  })
  it('accepts a signature made with the second key (rotation)', () => {
    const sig = signImagePath('/img/a.jpg', { preset: 'thumb' }, key2)
    assert.equal(readImageParams(`/img/a.jpg?preset=thumb&sig=${sig}`, signed)?.preset, 'thumb')
  })
  it('refuses a missing, wrong, or foreign-key signature with 403', () => {
    refusal(() => readImageParams('/img/a.jpg?w=320', signed), 'IMAGE_BAD_SIGNATURE', /missing/)
    refusal(() => readImageParams('/img/a.jpg?w=320&sig=', signed), 'IMAGE_BAD_SIGNATURE', /missing/)
    refusal(() => readImageParams('/img/a.jpg?w=320&sig=AAAA', signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
    const foreign = signImagePath('/img/a.jpg', { w: '320' }, 'another-key-not-configured')
    refusal(() => readImageParams(`/img/a.jpg?w=320&sig=${foreign}`, signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
  })
  it('refuses a tampered parameter, path, or added image parameter', () => {
    const sig = signImagePath('/img/a.jpg', { w: '320' }, key1)
    refusal(() => readImageParams(`/img/a.jpg?w=3200&sig=${sig}`, signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
    refusal(() => readImageParams(`/img/b.jpg?w=320&sig=${sig}`, signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
    refusal(() => readImageParams(`/img/a.jpg?w=320&q=100&sig=${sig}`, signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
  })
  it('verifies values as sent: web%70 and webp are different URLs', () => {
    const sig = signImagePath('/img/a.jpg', { w: '320', fmt: 'web%70' }, key1)
    assert.equal(readImageParams(`/img/a.jpg?w=320&fmt=web%70&sig=${sig}`, signed)?.format, 'webp')
    refusal(() => readImageParams(`/img/a.jpg?w=320&fmt=webp&sig=${sig}`, signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
  })
  it('checks the signature before the values, so unsigned URLs learn nothing about the limits', () => {
    refusal(() => readImageParams('/img/a.jpg?w=999999', signed), 'IMAGE_BAD_SIGNATURE', /missing/)
    refusal(() => readImageParams('/img/a.jpg?preset=nope&sig=x', signed), 'IMAGE_BAD_SIGNATURE', /mismatch/)
  })
})

describe('canonicalParams', () => {
  it('is one stable text per output, whatever the spelling of the request', () => {
    const a = readImageParams('/a.jpg?w=320&fmt=webp&q=75', config()) as NonNullable<ReturnType<typeof readImageParams>>
    const b = readImageParams('/a.jpg?q=75&f=webp&w=160&dpr=2&v=1', config()) as NonNullable<ReturnType<typeof readImageParams>>
    assert.equal(canonicalParams(a, 'webp'), 'w=320,h=0,fit=cover,q=75,fmt=webp')
    assert.equal(canonicalParams(b, 'webp'), canonicalParams(a, 'webp'))
  })
})

it('names the image parameters', () => {
  assert.deepEqual([...IMAGE_PARAM_NAMES].sort(), ['dpr', 'f', 'fit', 'fmt', 'h', 'preset', 'q', 'sig', 'w'])
})
