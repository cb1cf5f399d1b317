// Watermarks: which rule of a bucket's `watermark` block applies to an object key, its templates
// resolved for one request (sanitized, flagged personal or uncacheable, fingerprinted for the
// variant's cache key), and the composite layers that draw it on an output of a given size.
//
// Text is drawn with sharp's `text` input (Pango through libvips' own fontconfig), not an SVG:
// Pango measures the text, so every position is placed and fitted from real extents; the stamp is
// only as large as the text (cheap to composite); and it does not depend on libvips' SVG loader,
// which the image stage may refuse for untrusted inputs. The text is used only as a coverage mask
// (escaped, so a header value cannot inject markup); the colour and opacity are applied to that
// mask afterwards.
//
// Sizes are pixels of the output: `font_size`, `margin`, `tile_spacing`, an image mark's
// `width`/`height`. `diagonal` is the exception: the mark is sized to run across the image.
// Every layer fits inside the output (sharp refuses a larger one): a mark too large is shrunk.
import { createHash } from 'node:crypto'
import sharp from 'sharp'
import type { WatermarkConfig, WatermarkSpec } from '../config/representations-schema.ts'

export interface WatermarkContext {
  /** The verified token's claims; undefined on a public bucket. */
  claims: Readonly<Record<string, unknown>> | undefined
  /** The client address after trusted_proxies (never a raw X-Forwarded-For). */
  ip: string
  header(lowerCaseName: string): string | undefined
  /** The request path as sent (without the query). */
  path: string
  bucket: string
  now: Date
}

/** A configured watermark with its text's templates resolved and sanitized. */
export type ResolvedWatermark = WatermarkSpec

export interface WatermarkPlan {
  /** The rule's watermarks with every template resolved. */
  marks: ResolvedWatermark[]
  /** Depends on who asks ({{jwt.*}}, {{ip}}, {{header.*}}): the answer must be Cache-Control: private. */
  personal: boolean
  /** False when the text changes with every request ({{datetime}}): the render must not be cached. */
  cacheable: boolean
  /** A stable text identifying the resolved marks (hash), for the variant's cache key. */
  fingerprint: string
  /** The object keys image marks draw (in the same bucket); their bytes are not in `fingerprint`. */
  sources: string[]
}

/** The longest resolved text drawn, in code points; the rest is cut. */
export const MAX_WATERMARK_TEXT = 200
/** The font text marks are drawn in (Debian's fonts-dejavu-core); fontconfig substitutes if missing. */
export const WATERMARK_FONT = 'DejaVu Sans,sans-serif'
/** Raised when the way marks are drawn changes, so cached marked renders are not reused. */
const RENDER_VERSION = 1
/** Decoding bound for an image mark's source object. */
const MAX_SOURCE_PIXELS = 50_000_000
const SOURCE_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'heif', 'avif', 'tiff'])
/** Share of the output a `diagonal` mark spans. */
const DIAGONAL_SPAN = 0.9
const DEFAULT_DIAGONAL_ANGLE = -45
/** Text is measured at this size first, then drawn once at the size that fits. */
const MEASURE_PX = 32

// ---- templates --------------------------------------------------------------------------------

type Template =
  | { kind: 'jwt'; claim: string[] }
  | { kind: 'header'; name: string }
  | { kind: 'ip' | 'date' | 'datetime' | 'path' | 'bucket' }
type Part = string | Template

const TEMPLATE = /\{\{\s*([^{}]*?)\s*\}\}/g
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const KNOWN =
  '{{jwt.<claim>}}, {{ip}}, {{header.<name>}}, {{date}}, {{datetime}}, {{path}}, {{bucket}}'

function parseTemplate(name: string): Template | undefined {
  if (
    name === 'ip' ||
    name === 'date' ||
    name === 'datetime' ||
    name === 'path' ||
    name === 'bucket'
  ) {
    return { kind: name }
  }
  if (name.startsWith('jwt.')) {
    const claim = name.slice(4).split('.')
    return claim.every((segment) => segment !== '') ? { kind: 'jwt', claim } : undefined
  }
  if (name.startsWith('header.')) {
    const header = name.slice(7)
    return HEADER_NAME.test(header) ? { kind: 'header', name: header.toLowerCase() } : undefined
  }
  return undefined
}

/** Literal text and templates, in order; an unknown template stays literal (the config check refuses it). */
function parseText(text: string): Part[] {
  const parts: Part[] = []
  let last = 0
  for (const match of text.matchAll(TEMPLATE)) {
    const template = parseTemplate(match[1] ?? '')
    if (template === undefined) continue
    if (match.index > last) parts.push(text.slice(last, match.index))
    parts.push(template)
    last = match.index + match[0].length
  }
  if (last < text.length) parts.push(text.slice(last))
  return parts
}

/**
 * What is wrong with a `watermark` block that its schema cannot see: unknown or unclosed templates,
 * fixed text longer than the cap. Each problem starts with its key path inside the block
 * (`rules[0].watermarks[1].text: ...`); an empty list means the block is usable.
 */
export function checkWatermarkTemplates(cfg: WatermarkConfig): string[] {
  const problems: string[] = []
  cfg.rules.forEach((rule, r) => {
    rule.watermarks.forEach((mark, m) => {
      if (mark.type !== 'text') return
      const at = `rules[${r}].watermarks[${m}].text`
      for (const match of mark.text.matchAll(TEMPLATE)) {
        if (parseTemplate(match[1] ?? '') === undefined) {
          problems.push(`${at}: unknown template "${match[0]}" (known: ${KNOWN})`)
        }
      }
      const rest = mark.text.replace(TEMPLATE, '')
      if (rest.includes('{{') || rest.includes('}}')) {
        problems.push(`${at}: "{{" without a matching "}}" (templates look like {{ip}})`)
      }
      const fixed = [...clean(rest)].length
      if (fixed > MAX_WATERMARK_TEXT) {
        problems.push(
          `${at}: ${fixed} characters of fixed text; at most ${MAX_WATERMARK_TEXT} are drawn`
        )
      }
    })
  })
  return problems
}

// Controls, zero-width characters, and the bidirectional overrides that could make a header value
// read backwards.
const INVISIBLE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g

const clean = (text: string) =>
  text
    .replace(/[\t\n\r\v\f]+/g, ' ')
    .replace(INVISIBLE, '')
    .toWellFormed()

/** Plain text safe to draw: no control or direction characters, well-formed, capped. */
export function sanitize(text: string): string {
  const points = [...clean(text)]
  return points.slice(0, MAX_WATERMARK_TEXT).join('').trim()
}

function claimText(value: unknown): string {
  if (value === undefined || value === null) return ''
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value)
  if (Array.isArray(value)) return value.map(claimText).join(', ')
  return JSON.stringify(value) ?? ''
}

function claimAt(claims: Readonly<Record<string, unknown>> | undefined, path: string[]): unknown {
  let value: unknown = claims
  for (const segment of path) {
    // Own properties only: `{{jwt.__proto__}}` reads nothing.
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, segment))
      return undefined
    value = (value as Record<string, unknown>)[segment]
  }
  return value
}

/** The longest a template's value is drawn: a requester must not shrink the mark by padding it. */
export const MAX_TEMPLATE_VALUE = 64

/**
 * A template's value as drawn: cleaned, whitespace runs (any Unicode space) as one space, at most
 * MAX_TEMPLATE_VALUE characters (cut with an ellipsis).
 */
function valueOf(template: Template, ctx: WatermarkContext): string {
  const points = [...clean(rawValueOf(template, ctx)).replace(/\s+/gu, ' ').trim()]
  return points.length <= MAX_TEMPLATE_VALUE ? points.join('') : `${points.slice(0, MAX_TEMPLATE_VALUE - 1).join('')}…`
}

function rawValueOf(template: Template, ctx: WatermarkContext): string {
  switch (template.kind) {
    case 'jwt':
      return claimText(claimAt(ctx.claims, template.claim))
    case 'header':
      return ctx.header(template.name) ?? ''
    case 'ip':
      return ctx.ip
    case 'date':
      return ctx.now.toISOString().slice(0, 10)
    case 'datetime':
      return `${ctx.now.toISOString().slice(0, 19)}Z`
    case 'path':
      return ctx.path
    case 'bucket':
      return ctx.bucket
  }
}

// ---- rules ------------------------------------------------------------------------------------

/** A glob on an object key: `*` and `?` stay within a segment, `**` crosses them (`**\/` may match none). */
export function globToRegExp(pattern: string): RegExp {
  const glob = pattern.replace(/^\/+/, '')
  let source = ''
  for (let i = 0; i < glob.length;) {
    if (glob.startsWith('**', i)) {
      let end = i + 2
      while (glob[end] === '*') end++
      if (glob[end] === '/') {
        source += '(?:.*/)?'
        end++
      } else source += '.*'
      i = end
    } else if (glob[i] === '*') {
      source += '[^/]*'
      i++
    } else if (glob[i] === '?') {
      source += '[^/]'
      i++
    } else {
      source += (glob[i] as string).replace(/[\\^$.|+()[\]{}]/g, '\\$&')
      i++
    }
  }
  return new RegExp(`^${source}$`, 's')
}

interface CompiledMark {
  spec: WatermarkSpec
  parts: Part[] | undefined
}
interface CompiledRule {
  match: RegExp
  marks: CompiledMark[]
  personal: boolean
  cacheable: boolean
}

// Configs are frozen after loading: compile each once.
const compiled = new WeakMap<WatermarkConfig, CompiledRule[]>()

function compile(cfg: WatermarkConfig): CompiledRule[] {
  let rules = compiled.get(cfg)
  if (rules !== undefined) return rules
  rules = cfg.rules.map((rule) => {
    const marks = rule.watermarks.map((spec) => ({
      spec,
      parts: spec.type === 'text' ? parseText(spec.text) : undefined,
    }))
    const templates = marks.flatMap((m) =>
      (m.parts ?? []).filter((p): p is Template => typeof p !== 'string')
    )
    return {
      match: globToRegExp(rule.pattern),
      marks,
      personal: templates.some((t) => t.kind === 'jwt' || t.kind === 'ip' || t.kind === 'header'),
      cacheable: !templates.some((t) => t.kind === 'datetime'),
    }
  })
  compiled.set(cfg, rules)
  return rules
}

/** The first rule whose glob `pattern` matches the object key (`*` within a segment, `**` across, `?`), resolved; undefined when none matches. */
export function watermarkPlan(
  cfg: WatermarkConfig,
  key: string,
  ctx: WatermarkContext
): WatermarkPlan | undefined {
  if (!cfg.enabled) return undefined
  const rule = compile(cfg).find((r) => r.match.test(key))
  if (rule === undefined) return undefined
  const marks = rule.marks.map(({ spec, parts }): ResolvedWatermark => {
    if (spec.type !== 'text' || parts === undefined) return spec
    const text = sanitize(parts.map((p) => (typeof p === 'string' ? p : valueOf(p, ctx))).join(''))
    return { ...spec, text }
  })
  const sources = [...new Set(marks.flatMap((m) => (m.type === 'image' ? [m.source] : [])))]
  const fingerprint = createHash('sha256')
    .update(JSON.stringify([RENDER_VERSION, WATERMARK_FONT, marks]))
    .digest('base64url')
    .slice(0, 22)
  return { marks, personal: rule.personal, cacheable: rule.cacheable, fingerprint, sources }
}

// ---- drawing ----------------------------------------------------------------------------------

interface Raster {
  data: Buffer
  width: number
  height: number
  channels: 1 | 4
}

function raster(data: Buffer, info: sharp.OutputInfo, channels: 1 | 4): Raster {
  if (info.channels !== channels)
    throw new Error(`watermark: expected ${channels} channels, got ${info.channels}`)
  return { data, width: info.width, height: info.height, channels }
}
const rawOf = (r: Raster) => ({ raw: { width: r.width, height: r.height, channels: r.channels } })

/** The box a w x h rectangle needs once turned by `degrees`. */
function turned(w: number, h: number, degrees: number): { w: number; h: number } {
  const rad = (degrees * Math.PI) / 180
  const cos = Math.abs(Math.cos(rad))
  const sin = Math.abs(Math.sin(rad))
  return { w: w * cos + h * sin, h: w * sin + h * cos }
}

/** The room a mark may take: inside the margins when there are any left, the whole output otherwise. */
function room(spec: WatermarkSpec, width: number, height: number): { w: number; h: number } {
  if (spec.position === 'diagonal') return { w: width * DIAGONAL_SPAN, h: height * DIAGONAL_SPAN }
  if (spec.position === 'tiled') return { w: width, h: height }
  return {
    w: width - 2 * spec.margin >= 1 ? width - 2 * spec.margin : width,
    h: height - 2 * spec.margin >= 1 ? height - 2 * spec.margin : height,
  }
}

const angleOf = (spec: WatermarkSpec) =>
  spec.position === 'diagonal' && spec.rotation === 0 ? DEFAULT_DIAGONAL_ANGLE : spec.rotation

const ENTITIES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&apos;',
}
/** Pango reads its text as markup: every character that could start markup is escaped. */
function escapeMarkup(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c] as string)
}

/** The text's coverage (one band, 255 = ink) at `px`; undefined when the text has no ink at all. */
async function textMask(text: string, px: number): Promise<Raster | undefined> {
  try {
    const { data, info } = await sharp({
      text: { text: escapeMarkup(text), font: `${WATERMARK_FONT} ${px}px`, dpi: 72 },
    })
      .extractChannel(0)
      .raw()
      .toBuffer({ resolveWithObject: true })
    return raster(data, info, 1)
  } catch (error) {
    // libvips' answer for text that lays out to nothing (only invisible characters).
    if (error instanceof Error && error.message.includes('no text to render')) return undefined
    throw error
  }
}

function parseColor(color: string): { r: number; g: number; b: number; alpha: number } {
  let hex = color.slice(1)
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join('')
  const byte = (i: number) => Number.parseInt(hex.slice(i, i + 2), 16)
  return { r: byte(0), g: byte(2), b: byte(4), alpha: hex.length === 8 ? byte(6) / 255 : 1 }
}

/** Shrinks (never enlarges) a raster to fit w x h, keeping its aspect. */
async function fitInside(r: Raster, w: number, h: number): Promise<Raster> {
  if (r.width <= w && r.height <= h) return r
  let image = sharp(r.data, rawOf(r)).resize({
    width: Math.max(1, Math.floor(w)),
    height: Math.max(1, Math.floor(h)),
    fit: 'inside',
  })
  if (r.channels === 1) image = image.extractChannel(0)
  const { data, info } = await image.raw().toBuffer({ resolveWithObject: true })
  return raster(data, info, r.channels)
}

async function rotate(r: Raster, degrees: number): Promise<Raster> {
  if (degrees % 360 === 0) return r
  const background = r.channels === 1 ? '#000000' : { r: 0, g: 0, b: 0, alpha: 0 }
  let image = sharp(r.data, rawOf(r)).rotate(degrees, { background })
  if (r.channels === 1) image = image.extractChannel(0)
  const { data, info } = await image.raw().toBuffer({ resolveWithObject: true })
  return raster(data, info, r.channels)
}

/** A text mark as RGBA: the mask, turned and fitted, in the mark's colour at its opacity. */
async function textStamp(
  spec: Extract<WatermarkSpec, { type: 'text' }>,
  width: number,
  height: number
): Promise<Raster | undefined> {
  if (spec.text === '') return undefined
  const angle = angleOf(spec)
  const space = room(spec, width, height)
  // Measure small, then draw once at the size that fits (text width grows with the font size):
  // a long text at a large font_size is never rasterized far beyond the output.
  const probe = await textMask(spec.text, MEASURE_PX)
  if (probe === undefined) return undefined
  const box = turned(probe.width, probe.height, angle)
  const fits = Math.floor(MEASURE_PX * Math.min(space.w / box.w, space.h / box.h))
  const px = Math.max(1, spec.position === 'diagonal' ? fits : Math.min(spec.font_size, fits))
  const drawn = px === MEASURE_PX ? probe : await textMask(spec.text, px)
  if (drawn === undefined) return undefined
  const mask = await fitInside(await rotate(drawn, angle), width, height)
  const { r, g, b, alpha } = parseColor(spec.color)
  const opacity = spec.opacity * alpha
  const { data: coverage } = await sharp(mask.data, rawOf(mask))
    .linear(opacity, 0)
    .extractChannel(0)
    .raw()
    .toBuffer({ resolveWithObject: true })
  const { data, info } = await sharp({
    create: { width: mask.width, height: mask.height, channels: 3, background: { r, g, b } },
  })
    .joinChannel(coverage, rawOf(mask))
    .raw()
    .toBuffer({ resolveWithObject: true })
  return raster(data, info, 4)
}

/** An image mark as RGBA: the source oriented, sized, turned, fitted, at its opacity. */
async function imageStamp(
  spec: Extract<WatermarkSpec, { type: 'image' }>,
  bytes: Uint8Array,
  width: number,
  height: number
): Promise<Raster> {
  const input = () => sharp(bytes, { limitInputPixels: MAX_SOURCE_PIXELS })
  const meta = await input().metadata()
  if (meta.format === undefined || !SOURCE_FORMATS.has(meta.format)) {
    throw new Error(
      `watermark source "${spec.source}" is ${meta.format ?? 'not an image'}; use PNG, WebP, JPEG, AVIF, GIF or TIFF`
    )
  }
  // The size is settled before decoding, so the source is resized once (shrink-on-load for a large
  // one) and a mark far larger than the output is never rasterized at its configured size.
  const upright = (meta.orientation ?? 1) >= 5
  const w0 = (upright ? meta.height : meta.width) ?? 1
  const h0 = (upright ? meta.width : meta.height) ?? 1
  const wanted =
    spec.width !== undefined && spec.height !== undefined
      ? Math.min(spec.width / w0, spec.height / h0)
      : spec.width !== undefined
        ? spec.width / w0
        : spec.height !== undefined
          ? spec.height / h0
          : 1
  const angle = angleOf(spec)
  const space = room(spec, width, height)
  const box = turned(w0 * wanted, h0 * wanted, angle)
  const fit = Math.min(space.w / box.w, space.h / box.h)
  const scale = wanted * (spec.position === 'diagonal' ? fit : Math.min(1, fit))
  const decoded = await input()
    .autoOrient()
    .resize({
      width: Math.max(1, Math.round(w0 * scale)),
      height: Math.max(1, Math.round(h0 * scale)),
      fit: 'fill',
    })
    .ensureAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true })
  let stamp = await fitInside(
    await rotate(raster(decoded.data, decoded.info, 4), angle),
    width,
    height
  )
  if (spec.opacity < 1) {
    const { data, info } = await sharp(stamp.data, rawOf(stamp))
      .linear([1, 1, 1, spec.opacity], [0, 0, 0, 0])
      .raw()
      .toBuffer({ resolveWithObject: true })
    stamp = raster(data, info, 4)
  }
  return stamp
}

function place(
  spec: WatermarkSpec,
  stamp: Raster,
  width: number,
  height: number
): sharp.OverlayOptions {
  if (spec.position === 'tiled') {
    // Each tile carries its spacing as transparent border, clipped so one tile still fits.
    const right = Math.max(0, Math.min(spec.tile_spacing, width - stamp.width))
    const bottom = Math.max(0, Math.min(spec.tile_spacing, height - stamp.height))
    return { ...spacedTile(stamp, right, bottom), tile: true, gravity: 'northwest' }
  }
  const free = (outer: number, inner: number, where: 'start' | 'center' | 'end') => {
    const margin = outer - inner >= 2 * spec.margin ? spec.margin : 0
    const at =
      where === 'start'
        ? margin
        : where === 'end'
          ? outer - inner - margin
          : Math.round((outer - inner) / 2)
    return Math.max(0, Math.min(outer - inner, at))
  }
  const [vertical, horizontal] =
    spec.position === 'center' || spec.position === 'diagonal'
      ? ['center', 'center']
      : spec.position.split('-')
  const x = horizontal === 'left' ? 'start' : horizontal === 'right' ? 'end' : 'center'
  const y = vertical === 'top' ? 'start' : vertical === 'bottom' ? 'end' : 'center'
  return {
    input: stamp.data,
    ...rawOf(stamp),
    left: free(width, stamp.width, x),
    top: free(height, stamp.height, y),
  }
}

/** The stamp with transparent space on its right and bottom, as an overlay's input. */
function spacedTile(
  stamp: Raster,
  right: number,
  bottom: number
): Pick<sharp.OverlayOptions, 'input' | 'raw'> {
  if (right === 0 && bottom === 0) return { input: stamp.data, ...rawOf(stamp) }
  const width = stamp.width + right
  const height = stamp.height + bottom
  const data = Buffer.alloc(width * height * 4)
  for (let row = 0; row < stamp.height; row++) {
    stamp.data.copy(data, row * width * 4, row * stamp.width * 4, (row + 1) * stamp.width * 4)
  }
  return { input: data, raw: { width, height, channels: 4 } }
}

/** The composite layers for an output of width x height; image marks load their source object (a key in the same bucket) through `loadSource`. */
export async function watermarkOverlays(
  plan: WatermarkPlan,
  width: number,
  height: number,
  loadSource: (key: string) => Promise<Uint8Array>
): Promise<sharp.OverlayOptions[]> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`watermark: output size ${width}x${height} is not a positive whole size`)
  }
  // A source drawn by several marks is loaded once; a failed load fails the render (never unmarked bytes).
  const loads = new Map<string, Promise<Uint8Array>>()
  const load = (key: string) => {
    let bytes = loads.get(key)
    if (bytes === undefined) loads.set(key, (bytes = loadSource(key)))
    return bytes
  }
  const layers = await Promise.all(
    plan.marks.map(async (spec) => {
      const stamp =
        spec.type === 'text'
          ? await textStamp(spec, width, height)
          : await imageStamp(spec, await load(spec.source), width, height)
      return stamp === undefined ? undefined : place(spec, stamp, width, height)
    })
  )
  return layers.filter((layer) => layer !== undefined)
}

/**
 * Draws a sample text and fails when no ink comes out (no font fontconfig can find): watermarks
 * that render as nothing would serve clean images. Call it once when a config has text marks.
 */
export async function assertWatermarkFont(): Promise<void> {
  const mask = await textMask('Wm', MEASURE_PX)
  if (mask === undefined || !mask.data.some((v) => v > 128)) {
    throw new Error(
      `watermark text draws nothing: no usable font (install ${WATERMARK_FONT.split(',')[0]}, Debian's fonts-dejavu-core)`
    )
  }
}
