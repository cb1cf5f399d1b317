import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ImageFormat } from '../config/representations-schema.ts'
import { contentTypeOf, outputFormat, sourceFormatOf } from './negotiate.ts'

const ALL: ImageFormat[] = ['avif', 'webp', 'jpeg', 'png']
const CHROME = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8'
const SAFARI_15 = 'image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5'

describe('sourceFormatOf', () => {
  it('knows the image types the proxy renders, parameters and case ignored', () => {
    assert.equal(sourceFormatOf('image/jpeg', false), 'jpeg')
    assert.equal(sourceFormatOf('IMAGE/JPEG; charset=binary', false), 'jpeg')
    assert.equal(sourceFormatOf('image/png', false), 'png')
    assert.equal(sourceFormatOf('image/webp', false), 'webp')
    assert.equal(sourceFormatOf('image/avif', false), 'avif')
    assert.equal(sourceFormatOf('image/gif', false), 'gif')
    assert.equal(sourceFormatOf('image/tiff', false), 'tiff')
  })
  it('refuses SVG unless the bucket allows it, and everything that is not an image', () => {
    assert.equal(sourceFormatOf('image/svg+xml', false), undefined)
    assert.equal(sourceFormatOf('image/svg+xml', true), 'svg')
    for (const type of [undefined, '', 'application/octet-stream', 'text/html', 'image/x-icon', 'image/heic', 'image']) {
      assert.equal(sourceFormatOf(type, true), undefined, String(type))
    }
  })
})

describe('outputFormat', () => {
  it('picks AVIF for a browser that names it, with Vary', () => {
    assert.deepEqual(outputFormat('auto', 'image/avif,image/webp,*/*;q=0.8', 'jpeg', ALL), { format: 'avif', vary: true })
    assert.deepEqual(outputFormat('auto', CHROME, 'png', ALL), { format: 'avif', vary: true })
  })
  it('falls back to WebP when AVIF is refused or not allowed', () => {
    assert.equal(outputFormat('auto', 'image/avif;q=0,image/webp,*/*', 'jpeg', ALL).format, 'webp')
    assert.equal(outputFormat('auto', CHROME, 'jpeg', ['webp', 'jpeg']).format, 'webp')
    assert.equal(outputFormat('auto', SAFARI_15, 'jpeg', ALL).format, 'webp')
  })
  it('answers the source format when WebP has q=0', () => {
    assert.deepEqual(outputFormat('auto', 'image/webp;q=0', 'jpeg', ALL), { format: 'jpeg', vary: true })
    assert.deepEqual(outputFormat('auto', 'image/webp;q=0,*/*', 'png', ALL), { format: 'png', vary: true })
  })
  it('does not take a wildcard, or no Accept at all, as support for AVIF or WebP', () => {
    assert.deepEqual(outputFormat('auto', '*/*', 'jpeg', ALL), { format: 'jpeg', vary: true })
    assert.deepEqual(outputFormat('auto', 'image/*', 'png', ALL), { format: 'png', vary: true })
    assert.deepEqual(outputFormat('auto', undefined, 'jpeg', ALL), { format: 'jpeg', vary: true })
  })
  it('answers png for sources that may have alpha and jpeg for the rest', () => {
    assert.equal(outputFormat('auto', '*/*', 'gif', ALL).format, 'png')
    assert.equal(outputFormat('auto', '*/*', 'tiff', ALL).format, 'png')
    assert.equal(outputFormat('auto', '*/*', 'webp', ALL).format, 'png')
    assert.equal(outputFormat('auto', '*/*', 'avif', ALL).format, 'png')
    assert.equal(outputFormat('auto', '*/*', 'svg', ALL).format, 'png')
    assert.equal(outputFormat('auto', '*/*', 'png', ['avif', 'webp', 'jpeg']).format, 'jpeg')
  })
  it('honours q=0 on a fallback through the most specific range', () => {
    assert.equal(outputFormat('auto', 'image/jpeg;q=0,image/*', 'jpeg', ALL).format, 'png')
    assert.equal(outputFormat('auto', 'image/*;q=0,image/png', 'jpeg', ALL).format, 'png')
    assert.equal(outputFormat('auto', 'image/jpeg;q=0,image/png;q=0', 'jpeg', ['jpeg', 'png']).format, 'jpeg')
  })
  it('keeps the only allowed format without Vary', () => {
    assert.deepEqual(outputFormat('auto', CHROME, 'png', ['jpeg']), { format: 'jpeg', vary: false })
  })
  it('answers a fixed format as asked, without Vary', () => {
    assert.deepEqual(outputFormat('png', CHROME, 'jpeg', ALL), { format: 'png', vary: false })
    assert.deepEqual(outputFormat('avif', undefined, 'jpeg', ALL), { format: 'avif', vary: false })
  })
})

it('names the content type of each output format', () => {
  assert.deepEqual(ALL.map(contentTypeOf), ['image/avif', 'image/webp', 'image/jpeg', 'image/png'])
})
