// The images, watermark and compression blocks: accepted in Yatagarasu's shape, normalized with
// the global image_optimization block, and refused (naming the key and the reason) when a value is
// out of range or cannot work.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError, parseConfig } from './load.ts'

const FILE = '/etc/yatagarasu/config.yaml'

function bucket(extra: string): string {
  return `
image_optimization: { enabled: false, max_width: 2000, max_height: 1500, default_quality: 70 }
buckets:
  - name: photos
    path_prefix: /photos
    s3: { bucket: photos, region: us-east-1, access_key: a, secret_key: b }
${extra}`
}

async function problems(yaml: string): Promise<string> {
  try {
    await parseConfig(yaml, FILE, {})
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.message
  }
  assert.fail('the configuration should not load')
}

describe('image, watermark and compression config', () => {
  it('normalizes a bucket block over the global image_optimization defaults', async () => {
    const config = await parseConfig(
      bucket(`    images:
      presets: { thumb: { width: 320, height: 320, quality: 75 } }
      max_input_bytes: 20MB
      signing: { keys: ["0123456789abcdef0123"] }
      max_concurrent: 2
    compression: { encodings: [gzip, br] }`),
      FILE,
      {}
    )
    const b = config.buckets[0]
    assert.equal(b?.images?.max_width, 2000)
    assert.equal(b?.images?.max_height, 1500)
    assert.equal(b?.images?.default_quality, 70)
    assert.equal(b?.images?.max_input_bytes, 20 * 1024 * 1024)
    assert.equal(b?.images?.max_queue, 8)
    assert.equal(b?.images?.allow_arbitrary, false)
    assert.deepEqual(b?.images?.presets.thumb, { width: 320, height: 320, fit: 'cover', format: 'auto', quality: 75 })
    assert.deepEqual(b?.images?.signing_keys, ['0123456789abcdef0123'])
    assert.deepEqual(b?.compression?.encodings, ['gzip', 'br'])
    assert.equal(b?.compression?.min_size, 1024)
    assert.equal(b?.watermark, null)
  })

  it('turns images on for every bucket with image_optimization.enabled (presets only, with a warning)', async () => {
    const config = await parseConfig(bucket('').replace('enabled: false', 'enabled: true'), FILE, {})
    assert.equal(config.buckets[0]?.images?.allow_arbitrary, false)
    assert.ok(config.warnings.some((w) => w.path === 'buckets[0](photos).images' && /no presets/.test(w.message)))
  })

  const REFUSED: Array<[string, string, RegExp]> = [
    ['a quality of 500', `    images: { presets: { a: { width: 10, quality: 500 } } }`, /buckets\[0\]\(photos\)\.images\.presets\.a\.quality: must be at most 100/],
    ['an unknown format', `    images: { formats: [avif, bmp] }`, /buckets\[0\]\(photos\)\.images\.formats\[1\]/],
    ['an unknown fit', `    images: { presets: { a: { width: 10, fit: stretch } } }`, /images\.presets\.a\.fit/],
    ['a preset wider than max_width', `    images: { max_width: 500, presets: { a: { width: 300, dpr: 2 } } }`, /images\.presets\.a\.width: 300 x dpr 2 is over max_width 500/],
    ['a preset format the bucket does not allow', `    images: { formats: [webp], presets: { a: { width: 10, format: png } } }`, /images\.presets\.a\.format: "png" is not in images\.formats/],
    ['a short signing key', `    images: { signing: { keys: [short] } }`, /images\.signing\.keys\[0\]: a signing key needs at least 16 characters/],
    ['an unknown key', `    images: { max_pixels: 5 }`, /images\.max_pixels: unknown key/],
    [
      'a watermark without images',
      `    watermark: { rules: [{ pattern: "*", watermarks: [{ type: text, text: hi }] }] }`,
      /buckets\[0\]\(photos\)\.watermark: a watermark needs images enabled/,
    ],
    [
      'an unknown watermark template',
      `    images: { enabled: true }
    watermark: { rules: [{ pattern: "*", watermarks: [{ type: text, text: "{{user}}" }] }] }`,
      /watermark: rules\[0\]\.watermarks\[0\]\.text: unknown template "\{\{user\}\}"/,
    ],
    [
      'a watermark image from a URL',
      `    images: { enabled: true }
    watermark: { rules: [{ pattern: "*", watermarks: [{ type: image, source: "https://evil.example/logo.png" }] }] }`,
      /source: must be an object key in the same bucket, not a URL/,
    ],
    ['an opacity over 1', `    images: { enabled: true }
    watermark: { rules: [{ pattern: "*", watermarks: [{ type: text, text: x, opacity: 2 }] }] }`, /opacity: must be between 0 and 1/],
    ['an unknown encoding', `    compression: { encodings: [br, deflate] }`, /compression\.encodings\[1\]/],
  ]
  for (const [what, extra, expected] of REFUSED) {
    it(`refuses ${what}, naming the file and key`, async () => {
      const message = await problems(bucket(extra))
      assert.ok(message.startsWith(`invalid configuration in ${FILE}:`), message)
      assert.match(message, expected)
    })
  }
})
