import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import sharp from 'sharp'
import { bucketWatermarkSchema, type WatermarkConfig } from '../config/representations-schema.ts'
import {
  assertWatermarkFont,
  checkWatermarkTemplates,
  globToRegExp,
  MAX_TEMPLATE_VALUE,
  MAX_WATERMARK_TEXT,
  watermarkOverlays,
  watermarkPlan,
  type WatermarkContext,
  type WatermarkPlan,
} from './watermark.ts'

const config = (block: unknown): WatermarkConfig => bucketWatermarkSchema.parse(block)
const textRule = (text: string, extra: Record<string, unknown> = {}) =>
  config({ rules: [{ pattern: '**', watermarks: [{ type: 'text', text, ...extra }] }] })

function context(
  over: Partial<WatermarkContext> = {},
  headers: Record<string, string> = {}
): WatermarkContext {
  return {
    claims: { sub: 'alice', org: { team: { name: 'blue' } }, roles: ['a', 'b'], level: 3 },
    ip: '203.0.113.9',
    header: (name) => headers[name],
    path: '/media/a%20b/photo.jpg',
    bucket: 'media',
    now: new Date('2026-03-04T05:06:07.890Z'),
    ...over,
  }
}

function planOf(cfg: WatermarkConfig, ctx = context(), key = 'a/photo.jpg'): WatermarkPlan {
  const plan = watermarkPlan(cfg, key, ctx)
  assert.ok(plan, `a rule matches ${key}`)
  return plan
}
const textOf = (plan: WatermarkPlan) => {
  const mark = plan.marks[0]
  assert.equal(mark?.type, 'text')
  return mark.text
}
const resolve = (text: string, ctx = context()) => textOf(planOf(textRule(text), ctx))

describe('rule matching', () => {
  it('matches globs with * within a segment, ** across segments and ? for one character', () => {
    const cases: [string, string, boolean][] = [
      ['*.jpg', 'photo.jpg', true],
      ['*.jpg', 'a/photo.jpg', false],
      ['**/*.jpg', 'photo.jpg', true],
      ['**/*.jpg', 'a/b/c/photo.jpg', true],
      ['**/*.jpg', 'a/b/photo.png', false],
      ['photos/**', 'photos/2026/x.png', true],
      ['photos/**', 'photosx/a.png', false],
      ['photos/*/large/*', 'photos/2026/large/x.png', true],
      ['photos/*/large/*', 'photos/2026/03/large/x.png', false],
      ['/photos/*.png', 'photos/x.png', true],
      ['img-?.png', 'img-1.png', true],
      ['img-?.png', 'img-12.png', false],
      ['img-?.png', 'img-/.png', false],
      ['a.b(1)+[x].png', 'a.b(1)+[x].png', true],
      ['a.b(1)+[x].png', 'aXb(1)+[x].png', false],
    ]
    for (const [pattern, key, expected] of cases) {
      assert.equal(globToRegExp(pattern).test(key), expected, `${pattern} vs ${key}`)
    }
  })

  it('uses the first rule whose pattern matches, and none when no rule matches', () => {
    const cfg = config({
      rules: [
        { pattern: 'private/**', watermarks: [{ type: 'text', text: 'first' }] },
        { pattern: '**/*.jpg', watermarks: [{ type: 'text', text: 'second' }] },
      ],
    })
    assert.equal(textOf(planOf(cfg, context(), 'private/x.jpg')), 'first')
    assert.equal(textOf(planOf(cfg, context(), 'public/x.jpg')), 'second')
    assert.equal(watermarkPlan(cfg, 'public/x.png', context()), undefined)
  })

  it('marks nothing when the block is disabled', () => {
    const cfg = config({
      enabled: false,
      rules: [{ pattern: '**', watermarks: [{ type: 'text', text: 'x' }] }],
    })
    assert.equal(watermarkPlan(cfg, 'a.jpg', context()), undefined)
  })
})

describe('templates', () => {
  it('resolves every template', () => {
    assert.equal(resolve('{{jwt.sub}}'), 'alice')
    assert.equal(resolve('{{jwt.org.team.name}}'), 'blue')
    assert.equal(resolve('{{jwt.roles}} {{jwt.level}}'), 'a, b 3')
    assert.equal(resolve('{{ip}}'), '203.0.113.9')
    assert.equal(resolve('{{header.x-user}}', context({}, { 'x-user': 'bob' })), 'bob')
    assert.equal(resolve('{{header.X-User}}', context({}, { 'x-user': 'bob' })), 'bob')
    assert.equal(resolve('{{date}}'), '2026-03-04')
    assert.equal(resolve('{{datetime}}'), '2026-03-04T05:06:07Z')
    assert.equal(resolve('{{path}}'), '/media/a%20b/photo.jpg')
    assert.equal(resolve('{{bucket}}'), 'media')
    assert.equal(
      resolve('© {{ bucket }} for {{jwt.sub}} at {{ip}}'),
      '© media for alice at 203.0.113.9'
    )
  })

  it('resolves a missing claim, a missing header and a public bucket to empty text', () => {
    assert.equal(resolve('[{{jwt.email}}]'), '[]')
    assert.equal(resolve('[{{jwt.org.missing.deeper}}]'), '[]')
    assert.equal(resolve('[{{jwt.__proto__}}]'), '[]')
    assert.equal(resolve('[{{header.x-none}}]'), '[]')
    assert.equal(resolve('[{{jwt.sub}}]', context({ claims: undefined })), '[]')
  })

  it('does not expand templates that arrive inside a value', () => {
    assert.equal(resolve('{{header.x-user}}', context({}, { 'x-user': '{{ip}}' })), '{{ip}}')
  })

  it('strips control and direction characters and caps the length', () => {
    const evil = 'ev\u0000il\r\nname\u202etxt.exe\u0007'
    assert.equal(resolve('{{header.x-user}}', context({}, { 'x-user': evil })), 'evil nametxt.exe')
    const long = 'x'.repeat(5000)
    const capped = resolve('{{header.x-user}}', context({}, { 'x-user': long }))
    assert.equal([...capped].length, MAX_TEMPLATE_VALUE)
    assert.ok(capped.endsWith('…'))
    // Fixed text is capped as a whole; a value can never push it out.
    assert.equal(resolve('SAMPLE {{header.x-user}}', context({}, { 'x-user': long })).slice(0, 7), 'SAMPLE ')
    assert.ok(MAX_TEMPLATE_VALUE < MAX_WATERMARK_TEXT)
  })

  it('collapses padding in a value, so a requester cannot shrink the mark by sending spaces', () => {
    const padded = `bob${'\u2003'.repeat(190)}${' '.repeat(50)}x`
    assert.equal(resolve('SAMPLE {{header.x-user}}', context({}, { 'x-user': padded })), 'SAMPLE bob x')
  })

  it('refuses unknown and unclosed templates and over-long fixed text at config time', () => {
    const cfg = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            { type: 'image', source: 'logo.png' },
            { type: 'text', text: '{{user}} {{jwt.}} {{header.a b}}' },
          ],
        },
        {
          pattern: '**',
          watermarks: [
            { type: 'text', text: 'by {{ip' },
            { type: 'text', text: 'y'.repeat(201) },
          ],
        },
      ],
    })
    assert.deepEqual(checkWatermarkTemplates(cfg), [
      'rules[0].watermarks[1].text: unknown template "{{user}}" (known: {{jwt.<claim>}}, {{ip}}, {{header.<name>}}, {{date}}, {{datetime}}, {{path}}, {{bucket}})',
      'rules[0].watermarks[1].text: unknown template "{{jwt.}}" (known: {{jwt.<claim>}}, {{ip}}, {{header.<name>}}, {{date}}, {{datetime}}, {{path}}, {{bucket}})',
      'rules[0].watermarks[1].text: unknown template "{{header.a b}}" (known: {{jwt.<claim>}}, {{ip}}, {{header.<name>}}, {{date}}, {{datetime}}, {{path}}, {{bucket}})',
      'rules[1].watermarks[0].text: "{{" without a matching "}}" (templates look like {{ip}})',
      'rules[1].watermarks[1].text: 201 characters of fixed text; at most 200 are drawn',
    ])
    assert.deepEqual(
      checkWatermarkTemplates(
        textRule('{{jwt.sub}} {{ip}} {{header.x-a}} {{date}} {{datetime}} {{path}} {{bucket}}')
      ),
      []
    )
  })
})

describe('plan flags and fingerprint', () => {
  it('makes marks that depend on the requester personal, and {{datetime}} ones uncacheable', () => {
    for (const text of ['{{jwt.sub}}', '{{ip}}', '{{header.x-user}}']) {
      const plan = planOf(textRule(`for ${text}`))
      assert.deepEqual([plan.personal, plan.cacheable], [true, true], text)
    }
    for (const text of ['fixed', '{{date}}', '{{path}}', '{{bucket}}']) {
      const plan = planOf(textRule(text))
      assert.deepEqual([plan.personal, plan.cacheable], [false, true], text)
    }
    assert.deepEqual(
      [planOf(textRule('{{datetime}}')).personal, planOf(textRule('{{datetime}}')).cacheable],
      [false, false]
    )
    const mixed = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            { type: 'text', text: '{{datetime}}' },
            { type: 'text', text: '{{jwt.sub}}' },
          ],
        },
      ],
    })
    assert.deepEqual([planOf(mixed).personal, planOf(mixed).cacheable], [true, false])
  })

  it('changes the fingerprint with the resolved text and keeps it otherwise', () => {
    const personal = textRule('{{ip}}')
    const a = planOf(personal, context({ ip: '192.0.2.1' }))
    assert.equal(planOf(personal, context({ ip: '192.0.2.1' })).fingerprint, a.fingerprint)
    assert.notEqual(planOf(personal, context({ ip: '192.0.2.2' })).fingerprint, a.fingerprint)
    assert.match(a.fingerprint, /^[A-Za-z0-9_-]{22}$/)

    const fixed = textRule('© media')
    assert.equal(
      planOf(fixed, context({ ip: '192.0.2.1' })).fingerprint,
      planOf(fixed, context({ ip: '192.0.2.2' })).fingerprint
    )
    const daily = textRule('{{date}}')
    const day2 = context({ now: new Date('2026-03-05T00:00:00Z') })
    assert.notEqual(planOf(daily).fingerprint, planOf(daily, day2).fingerprint)
    // The rest of the mark counts too: another colour is another render.
    assert.notEqual(
      planOf(textRule('x', { color: '#000' })).fingerprint,
      planOf(textRule('x', { color: '#fff' })).fingerprint
    )
  })

  it('lists the image sources a plan draws', () => {
    const cfg = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            { type: 'image', source: 'marks/logo.png' },
            { type: 'text', text: 'x' },
            { type: 'image', source: 'marks/logo.png', position: 'tiled' },
          ],
        },
      ],
    })
    assert.deepEqual(planOf(cfg).sources, ['marks/logo.png'])
  })
})

// ---- pixels -----------------------------------------------------------------------------------

interface Pixels {
  data: Buffer
  width: number
  height: number
  channels: number
}

async function decode(image: Buffer, layers: sharp.OverlayOptions[] = []): Promise<Pixels> {
  let pipeline = sharp(image)
  if (layers.length > 0) pipeline = sharp(await pipeline.composite(layers).png().toBuffer())
  const { data, info } = await pipeline.removeAlpha().raw().toBuffer({ resolveWithObject: true })
  return { data, width: info.width, height: info.height, channels: info.channels }
}

/** Pixels in [x0, x1) x [y0, y1) that differ by more than 24 in some channel. */
function changed(
  a: Pixels,
  b: Pixels,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  accept?: (p: number[]) => boolean
): number {
  let count = 0
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const at = (y * a.width + x) * a.channels
      const pixel = [...b.data.subarray(at, at + b.channels)]
      if (
        pixel.some((v, c) => Math.abs(v - (a.data[at + c] as number)) > 24) &&
        (accept === undefined || accept(pixel))
      )
        count++
    }
  }
  return count
}

describe('watermark overlays', () => {
  let grey: Buffer
  let greyPixels: Pixels
  let small: Buffer
  let logo: Buffer
  const noSource = async (key: string): Promise<Uint8Array> => {
    throw new Error(`unexpected load of ${key}`)
  }
  const marked = async (
    cfg: WatermarkConfig,
    image: Buffer,
    loadSource = noSource,
    ctx = context()
  ) => {
    const { width, height } = await sharp(image).metadata()
    const layers = await watermarkOverlays(planOf(cfg, ctx), width, height, loadSource)
    return { layers, pixels: await decode(image, layers) }
  }

  before(async () => {
    grey = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer()
    greyPixels = await decode(grey)
    small = await sharp({ create: { width: 100, height: 80, channels: 3, background: '#808080' } })
      .png()
      .toBuffer()
    // 100 x 80: the left half opaque red, the right half fully transparent.
    const half = await sharp({
      create: { width: 50, height: 80, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 1 } },
    })
      .png()
      .toBuffer()
    logo = await sharp({
      create: { width: 100, height: 80, channels: 4, background: { r: 0, g: 0, b: 255, alpha: 0 } },
    })
      .composite([{ input: half, left: 0, top: 0 }])
      .png()
      .toBuffer()
  })

  it('finds a font that draws ink', async () => {
    await assertWatermarkFont()
  })

  it('draws a text mark in its corner of the grid and nowhere else', async () => {
    const corners = {
      'top-left': [0, 0],
      'top-right': [600, 0],
      'bottom-left': [0, 500],
      'bottom-right': [600, 500],
    } as const
    for (const [position, [x, y]] of Object.entries(corners)) {
      const { pixels } = await marked(
        textRule('© media', { position, font_size: 40, opacity: 1, margin: 20 }),
        grey
      )
      assert.ok(
        changed(greyPixels, pixels, x, y, x + 200, y + 100) > 100,
        `${position}: ink in its corner`
      )
      assert.equal(
        changed(greyPixels, pixels, 0, 0, 800, 600),
        changed(greyPixels, pixels, x, y, x + 200, y + 100),
        `${position}: ink only there`
      )
      // The margin stays clean.
      const edgeX = position.endsWith('left') ? 0 : 780
      const edgeY = position.startsWith('top') ? 0 : 580
      assert.equal(
        changed(greyPixels, pixels, edgeX, 0, edgeX + 20, 600),
        0,
        `${position}: left/right margin`
      )
      assert.equal(
        changed(greyPixels, pixels, 0, edgeY, 800, edgeY + 20),
        0,
        `${position}: top/bottom margin`
      )
    }
  })

  it('centres a center mark', async () => {
    const { pixels } = await marked(
      textRule('CENTRE', { position: 'center', font_size: 40, opacity: 1 }),
      grey
    )
    assert.ok(changed(greyPixels, pixels, 300, 260, 500, 340) > 100)
    assert.equal(changed(greyPixels, pixels, 0, 0, 800, 200), 0)
    assert.equal(changed(greyPixels, pixels, 0, 400, 800, 600), 0)
  })

  it('draws the text in its colour at its opacity', async () => {
    const opaque = await marked(
      textRule('MMMM', { position: 'center', font_size: 60, opacity: 1, color: '#00ff00' }),
      grey
    )
    const faint = await marked(
      textRule('MMMM', { position: 'center', font_size: 60, opacity: 0.3, color: '#00ff00' }),
      grey
    )
    const green = (p: number[]) => (p[1] as number) > 230 && (p[0] as number) < 40
    const blend = (p: number[]) =>
      Math.abs((p[1] as number) - (128 + 0.3 * 127)) < 12 &&
      Math.abs((p[0] as number) - 0.7 * 128) < 12
    assert.ok(changed(greyPixels, opaque.pixels, 0, 0, 800, 600, green) > 500, 'opaque green ink')
    assert.ok(changed(greyPixels, faint.pixels, 0, 0, 800, 600, blend) > 500, '30% green over grey')
    assert.equal(
      changed(greyPixels, faint.pixels, 0, 0, 800, 600, green),
      0,
      'never full strength at 30%'
    )
  })

  it('draws a header value with markup and & as plain text, never as markup', async () => {
    const value = '<span foreground="#ff0000" size="80000">x</span> & <b>y</b>'
    const ctx = context({}, { 'x-user': value })
    const cfg = textRule('{{header.x-user}}', {
      position: 'top-left',
      font_size: 20,
      opacity: 1,
      color: '#00ff00',
    })
    assert.equal(textOf(planOf(cfg, ctx)), value)
    const { layers, pixels } = await marked(cfg, grey, noSource, ctx)
    const red = (p: number[]) => (p[0] as number) > (p[1] as number)
    assert.ok(changed(greyPixels, pixels, 0, 0, 800, 600) > 200)
    assert.equal(changed(greyPixels, pixels, 0, 0, 800, 600, red), 0, 'no red ink')
    // Every character is drawn (markup would have left one small "x").
    const plain = await watermarkOverlays(
      planOf(textRule('x', { position: 'top-left', font_size: 20 })),
      800,
      600,
      noSource
    )
    assert.ok(
      (layers[0]?.raw?.width ?? 0) > 20 * (plain[0]?.raw?.width ?? 0),
      'the whole value drawn'
    )
    assert.ok((layers[0]?.raw?.height ?? 0) < 40, 'at 20 px, not at size="80000"')
  })

  it('tiles a mark over the whole output, with tile_spacing between the tiles', async () => {
    const cfg = textRule('tile', {
      position: 'tiled',
      font_size: 20,
      opacity: 1,
      tile_spacing: 150,
    })
    const { layers, pixels } = await marked(cfg, grey)
    const tileW = layers[0]?.raw?.width ?? 0
    const tileH = layers[0]?.raw?.height ?? 0
    const textW = tileW - 150
    const textH = tileH - 150
    assert.ok(textW > 20 && textH > 5, `a tile of ${tileW}x${tileH}`)
    for (let y = 0; y + textH <= 600; y += tileH) {
      for (let x = 0; x + textW <= 800; x += tileW) {
        assert.ok(
          changed(greyPixels, pixels, x, y, x + textW, y + textH) > 20,
          `a tile at ${x},${y}`
        )
        assert.equal(
          changed(
            greyPixels,
            pixels,
            x + textW + 2,
            y,
            Math.min(800, x + tileW - 2),
            y + tileH - 2
          ),
          0,
          `spacing right of ${x},${y}`
        )
      }
    }
  })

  it('draws a diagonal mark through the centre at -45 degrees, or at its rotation', async () => {
    const rising = await marked(
      textRule('CONFIDENTIAL DOCUMENT', { position: 'diagonal', opacity: 1 }),
      grey
    )
    assert.ok(changed(greyPixels, rising.pixels, 350, 250, 450, 350) > 100, 'centre')
    assert.ok(changed(greyPixels, rising.pixels, 150, 400, 300, 550) > 100, 'lower left')
    assert.ok(changed(greyPixels, rising.pixels, 500, 50, 650, 200) > 100, 'upper right')
    assert.equal(changed(greyPixels, rising.pixels, 0, 0, 250, 200), 0, 'upper left clean')
    assert.equal(changed(greyPixels, rising.pixels, 550, 400, 800, 600), 0, 'lower right clean')

    const falling = await marked(
      textRule('CONFIDENTIAL DOCUMENT', { position: 'diagonal', rotation: 45, opacity: 1 }),
      grey
    )
    assert.ok(changed(greyPixels, falling.pixels, 150, 50, 300, 200) > 100, 'upper left')
    assert.ok(changed(greyPixels, falling.pixels, 500, 400, 650, 550) > 100, 'lower right')
    assert.equal(changed(greyPixels, falling.pixels, 0, 400, 250, 600), 0, 'lower left clean')
    assert.equal(changed(greyPixels, falling.pixels, 550, 0, 800, 200), 0, 'upper right clean')
  })

  it('draws an image mark from a PNG with alpha: opaque where the source is, untouched where it is transparent', async () => {
    const loads: string[] = []
    const load = async (key: string) => {
      loads.push(key)
      return logo
    }
    const cfg = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            {
              type: 'image',
              source: 'marks/logo.png',
              position: 'top-left',
              margin: 10,
              opacity: 1,
            },
            {
              type: 'image',
              source: 'marks/logo.png',
              position: 'bottom-right',
              margin: 10,
              opacity: 0.5,
            },
          ],
        },
      ],
    })
    const { pixels } = await marked(cfg, grey, load)
    assert.deepEqual(loads, ['marks/logo.png'], 'one load for two marks')
    const red = (p: number[]) => (p[0] as number) > 230 && (p[1] as number) < 30
    assert.equal(
      changed(greyPixels, pixels, 10, 10, 60, 90, red),
      50 * 80,
      'the opaque half, full strength'
    )
    assert.equal(changed(greyPixels, pixels, 60, 10, 110, 90), 0, 'the transparent half')
    const half = (p: number[]) =>
      Math.abs((p[0] as number) - (128 + 127 / 2)) < 12 && Math.abs((p[1] as number) - 64) < 12
    assert.equal(
      changed(greyPixels, pixels, 690, 510, 740, 590, half),
      50 * 80,
      'the opaque half at 50%'
    )
    assert.equal(changed(greyPixels, pixels, 740, 510, 790, 590), 0)
    assert.equal(changed(greyPixels, pixels, 110, 0, 690, 600), 0, 'nothing between')
  })

  it('resizes an image mark to its width and height, keeping its aspect', async () => {
    const cfg = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            { type: 'image', source: 'l.png', width: 200, height: 400, position: 'top-left' },
          ],
        },
      ],
    })
    const layers = await watermarkOverlays(planOf(cfg), 800, 600, async () => logo)
    assert.deepEqual([layers[0]?.raw?.width, layers[0]?.raw?.height], [200, 160])
  })

  it('shrinks marks larger than the output to fit it, in every position', async () => {
    const { WATERMARK_POSITIONS } = await import('../config/representations-schema.ts')
    for (const position of WATERMARK_POSITIONS) {
      const cfg = config({
        rules: [
          {
            pattern: '**',
            watermarks: [
              {
                type: 'text',
                text: 'A very long watermark line at the largest size',
                font_size: 512,
                position,
                opacity: 1,
              },
              { type: 'image', source: 'l.png', width: 4000, position, rotation: 30, opacity: 1 },
            ],
          },
        ],
      })
      const { layers, pixels } = await marked(cfg, small, async () => logo)
      for (const layer of layers) {
        const w = layer.raw?.width ?? 0
        const h = layer.raw?.height ?? 0
        assert.ok(
          w <= 100 && h <= 80 && (layer.left ?? 0) + w <= 100 && (layer.top ?? 0) + h <= 80,
          `${position}: ${w}x${h} fits`
        )
      }
      assert.equal(layers.length, 2)
      assert.deepEqual([pixels.width, pixels.height], [100, 80])
    }
  })

  it('fits marks on the smallest outputs', async () => {
    const cfg = config({
      rules: [
        {
          pattern: '**',
          watermarks: [
            { type: 'text', text: 'Hello world', position: 'diagonal' },
            { type: 'text', text: 'Hello', position: 'tiled', margin: 50 },
            { type: 'text', text: 'Hello', position: 'top-left', margin: 50, rotation: 10 },
            { type: 'image', source: 'l.png', position: 'bottom-right', margin: 50 },
          ],
        },
      ],
    })
    for (const [width, height] of [
      [1, 1],
      [3, 200],
      [5000, 2],
    ] as const) {
      const image = await sharp({ create: { width, height, channels: 3, background: '#808080' } })
        .png()
        .toBuffer()
      const { layers, pixels } = await marked(cfg, image, async () => logo)
      assert.equal(layers.length, 4, `${width}x${height}`)
      assert.deepEqual([pixels.width, pixels.height], [width, height])
    }
  })

  it('draws nothing for text that resolves to nothing or to invisible characters', async () => {
    assert.deepEqual(
      await watermarkOverlays(planOf(textRule('{{jwt.email}}')), 800, 600, noSource),
      []
    )
    const ctx = context({}, { 'x-user': '\u200b\u2060 \u200d' })
    assert.deepEqual(
      await watermarkOverlays(planOf(textRule('{{header.x-user}}'), ctx), 800, 600, noSource),
      []
    )
  })

  it('fails the render when a source cannot be loaded or is not a raster image', async () => {
    const cfg = config({
      rules: [{ pattern: '**', watermarks: [{ type: 'image', source: 'marks/logo.svg' }] }],
    })
    await assert.rejects(
      watermarkOverlays(planOf(cfg), 800, 600, async () => {
        throw new Error('ORIGIN_NOT_FOUND')
      }),
      /ORIGIN_NOT_FOUND/
    )
    const svg = Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    )
    await assert.rejects(
      watermarkOverlays(planOf(cfg), 800, 600, async () => svg),
      /marks\/logo\.svg" is svg/
    )
    await assert.rejects(
      watermarkOverlays(planOf(cfg), 800, 600, async () => Buffer.from('not an image'))
    )
  })
})
