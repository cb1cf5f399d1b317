// The image parameters of a request (Yatagarasu's names: w, h, q, fmt/f, fit, dpr, preset) and
// their signature. Pure: the request target as sent in, validated parameters or a ProxyError out.
//
// Order of checks: a repeated parameter (400), then the signature when the bucket signs (403, so an
// unsigned URL learns nothing about the bucket's presets or limits), then the values (400).
//
// Signature: base64url (no padding) of HMAC-SHA256(key, path as sent + '?' + the image parameters
// other than sig, sorted by name, `name=value` as sent, joined by '&'). Any configured key verifies
// (rotation). Parameter names are matched as sent: `%77=320` is not `w`.
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { ImageFit, ImageFormat, ImagesConfig } from '../config/representations-schema.ts'
import { IMAGE_FITS } from '../config/representations-schema.ts'
import { ProxyError } from '../errors.ts'

export interface ImageParams {
  /** Output px, dpr already applied, <= max_width; undefined: follows height or keeps the size. */
  width: number | undefined
  height: number | undefined
  fit: ImageFit
  format: ImageFormat | 'auto'
  quality: number
  /** The preset name when `preset=` was used (explicit parameters may refine it, see below). */
  preset: string | undefined
}

const SIZE_NAMES = ['w', 'h', 'q', 'fmt', 'f', 'fit', 'dpr', 'preset'] as const
/** The parameter names that make a request an image request. */
export const IMAGE_PARAM_NAMES: ReadonlySet<string> = new Set([...SIZE_NAMES, 'sig'])

const WHOLE = /^[0-9]{1,6}$/
const DECIMAL = /^[0-9]{1,2}(\.[0-9]{1,3})?$/
const FORMAT_NAMES: Record<string, ImageFormat | 'auto'> = {
  auto: 'auto',
  avif: 'avif',
  webp: 'webp',
  jpeg: 'jpeg',
  jpg: 'jpeg',
  png: 'png',
}

const bad = (reason: string) => new ProxyError('IMAGE_BAD_PARAMS', { reason })

/**
 * The image parameters of a request target (`/prefix/key.jpg?w=320&x=1`, raw as sent); undefined
 * when it has none (other query parameters, e.g. cache busters, are ignored).
 * Throws ProxyError IMAGE_BAD_PARAMS (the reason names the parameter) and IMAGE_BAD_SIGNATURE.
 */
export function readImageParams(target: string, cfg: ImagesConfig): ImageParams | undefined {
  const q = target.indexOf('?')
  if (q === -1) return undefined
  const raw = rawImageParams(target.slice(q + 1))
  if (raw.size === 0) return undefined
  if (raw.size === 1 && raw.has('sig')) throw bad('sig: no image parameters to sign')
  if (raw.has('fmt') && raw.has('f')) throw bad('fmt: given twice (fmt and its alias f)')
  if (cfg.signing_keys !== null) verifySignature(target.slice(0, q), raw, cfg.signing_keys)

  const value = (name: string): string | undefined => {
    const v = raw.get(name)
    if (v === undefined) return undefined
    try {
      return decodeURIComponent(v)
    } catch {
      throw bad(`${name}: not valid percent-encoding`)
    }
  }
  const presetName = value('preset')
  const explicit = SIZE_NAMES.filter((n) => n !== 'preset' && raw.has(n))
  if (!cfg.allow_arbitrary) {
    if (presetName === undefined) throw bad(`${explicit[0]}: only presets are allowed on this bucket (use preset=<name>)`)
    if (explicit.length > 0) throw bad(`${explicit[0]}: only preset and sig are allowed on this bucket`)
  }

  let preset = undefined
  if (presetName !== undefined) {
    preset = Object.hasOwn(cfg.presets, presetName) ? cfg.presets[presetName] : undefined
    if (preset === undefined) throw bad(`preset: unknown preset '${presetName.slice(0, 64)}'`)
  }

  // Explicit parameters (only reachable with allow_arbitrary) refine a preset's values.
  const w = value('w')
  const h = value('h')
  const dprText = value('dpr')
  const dpr = dprText !== undefined ? parseDpr(dprText) : (preset?.dpr ?? 1)
  const baseWidth = w !== undefined ? parseWhole('w', w, 1, 16384) : preset?.width
  const baseHeight = h !== undefined ? parseWhole('h', h, 1, 16384) : preset?.height
  const width = scaled('w', baseWidth, dpr, cfg.max_width, 'max_width', presetName, w === undefined)
  const height = scaled('h', baseHeight, dpr, cfg.max_height, 'max_height', presetName, h === undefined)

  const fitText = value('fit')
  if (fitText !== undefined && !(IMAGE_FITS as readonly string[]).includes(fitText)) {
    throw bad(`fit: must be one of ${IMAGE_FITS.join(', ')}`)
  }
  const fit = (fitText as ImageFit | undefined) ?? preset?.fit ?? 'cover'

  const qText = value('q')
  const quality = qText !== undefined ? parseWhole('q', qText, 1, 100) : (preset?.quality ?? cfg.default_quality)

  const fmtName = raw.has('fmt') ? 'fmt' : 'f'
  const fmtText = value(fmtName)
  let format: ImageFormat | 'auto' = preset?.format ?? 'auto'
  if (fmtText !== undefined) {
    const f = Object.hasOwn(FORMAT_NAMES, fmtText.toLowerCase()) ? FORMAT_NAMES[fmtText.toLowerCase()] : undefined
    if (f === undefined) throw bad(`${fmtName}: must be one of auto, ${cfg.formats.join(', ')}`)
    format = f
  }
  if (format !== 'auto' && !cfg.formats.includes(format)) {
    const who = fmtText !== undefined ? fmtName : `preset ${presetName}`
    throw bad(`${who}: ${format} is not an output format of this bucket (${cfg.formats.join(', ')})`)
  }
  return { width, height, fit, format, quality, preset: presetName }
}

/** A stable, canonical text of the params and the chosen output format, for cache keys and logs. */
export function canonicalParams(params: ImageParams, format: ImageFormat): string {
  return `w=${params.width ?? 0},h=${params.height ?? 0},fit=${params.fit},q=${params.quality},fmt=${format}`
}

/** The `sig` for a path (as it will be sent, percent-encoded) and its image parameters (values as sent). */
export function signImagePath(path: string, params: Record<string, string>, key: string): string {
  const names = Object.keys(params)
    .filter((n) => n !== 'sig')
    .sort()
  return hmac(key, path + '?' + names.map((n) => `${n}=${params[n]}`).join('&'))
}

/** The image parameters of a query string, by name, with their values as sent. */
function rawImageParams(query: string): Map<string, string> {
  const out = new Map<string, string>()
  if (query === '') return out
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=')
    const name = eq === -1 ? pair : pair.slice(0, eq)
    if (!IMAGE_PARAM_NAMES.has(name)) continue
    if (out.has(name)) throw bad(`${name}: given more than once`)
    out.set(name, eq === -1 ? '' : pair.slice(eq + 1))
  }
  return out
}

function verifySignature(rawPath: string, raw: Map<string, string>, keys: readonly string[]): void {
  const given = raw.get('sig')
  if (given === undefined || given === '') throw new ProxyError('IMAGE_BAD_SIGNATURE', { reason: 'missing' })
  const signed = Object.fromEntries([...raw].filter(([n]) => n !== 'sig'))
  const givenBytes = Buffer.from(given, 'latin1')
  let ok = false
  for (const key of keys) {
    const expected = Buffer.from(signImagePath(rawPath, signed, key), 'latin1')
    // Lengths are public (a SHA-256 sig is always 43 characters); the bytes are compared in constant time.
    if (expected.length === givenBytes.length && timingSafeEqual(expected, givenBytes)) ok = true
  }
  if (!ok) throw new ProxyError('IMAGE_BAD_SIGNATURE', { reason: 'mismatch' })
}

function hmac(key: string, text: string): string {
  return createHmac('sha256', key).update(text, 'utf8').digest('base64url')
}

function parseWhole(name: string, text: string, min: number, max: number): number {
  if (!WHOLE.test(text)) throw bad(`${name}: must be a whole number from ${min} to ${max}`)
  const n = Number(text)
  if (n < min || n > max) throw bad(`${name}: must be a whole number from ${min} to ${max}`)
  return n
}

function parseDpr(text: string): number {
  const n = DECIMAL.test(text) ? Number(text) : NaN
  if (!(n >= 1 && n <= 4)) throw bad('dpr: must be a number from 1 to 4')
  return n
}

function scaled(
  name: string,
  base: number | undefined,
  dpr: number,
  max: number,
  maxName: string,
  preset: string | undefined,
  fromPreset: boolean
): number | undefined {
  if (base === undefined) return undefined
  const px = Math.round(base * dpr)
  if (px > max) {
    const who = fromPreset && preset !== undefined ? `preset ${preset}: ${name === 'w' ? 'width' : 'height'}` : name
    throw bad(`${who}: ${base}${dpr !== 1 ? ` x dpr ${dpr} = ${px}` : ''} is over this bucket's ${maxName} (${max})`)
  }
  return px
}
