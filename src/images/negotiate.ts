// Which image the proxy renders from (the source's Content-Type) and which format it answers in
// (fmt, or Accept for fmt=auto: RFC 9110 §12.5.1 with q-values). Pure.
//
// AVIF and WebP are chosen only when Accept names them (image/avif, image/webp) with q > 0: a
// wildcard says nothing about what a client can decode (curl, old browsers and most crawlers send
// `*/*`), so `*/*` alone gets the source's format. Wildcards do count when a fallback format is
// refused (`image/jpeg;q=0` moves to png).
import type { ImageFormat } from '../config/representations-schema.ts'

export type SourceFormat = 'jpeg' | 'png' | 'webp' | 'avif' | 'gif' | 'tiff' | 'svg'

const SOURCE_TYPES: Record<string, SourceFormat> = {
  'image/jpeg': 'jpeg',
  'image/jpg': 'jpeg',
  'image/pjpeg': 'jpeg',
  'image/png': 'png',
  'image/apng': 'png',
  'image/webp': 'webp',
  'image/avif': 'avif',
  'image/gif': 'gif',
  'image/tiff': 'tiff',
  'image/svg+xml': 'svg',
}

const CONTENT_TYPES: Record<ImageFormat, string> = {
  avif: 'image/avif',
  webp: 'image/webp',
  jpeg: 'image/jpeg',
  png: 'image/png',
}

/** Sources that may carry an alpha channel: their fallback is png, not jpeg. */
const MAY_HAVE_ALPHA: ReadonlySet<SourceFormat> = new Set(['png', 'gif', 'webp', 'avif', 'tiff', 'svg'])

/** The source's format from its Content-Type; undefined when it is not an image the proxy renders. */
export function sourceFormatOf(contentType: string | undefined, svgAllowed: boolean): SourceFormat | undefined {
  if (contentType === undefined) return undefined
  const type = (contentType.split(';', 1)[0] ?? '').trim().toLowerCase()
  const format = Object.hasOwn(SOURCE_TYPES, type) ? SOURCE_TYPES[type] : undefined
  if (format === 'svg' && !svgAllowed) return undefined
  return format
}

/**
 * The image format of an object's first bytes (its magic number), whatever its Content-Type says:
 * a format the proxy renders, `unknown-image` for another image format (BMP, ICO, HEIC, JPEG XL,
 * SVG when not allowed), undefined for anything else. 32 bytes are enough.
 */
export function sniffFormat(head: Uint8Array, svgAllowed: boolean): SourceFormat | 'unknown-image' | undefined {
  const ascii = Buffer.from(head.buffer, head.byteOffset, Math.min(head.byteLength, 32)).toString('latin1')
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'jpeg'
  if (ascii.startsWith('\x89PNG\r\n\x1a\n')) return 'png'
  if (ascii.startsWith('GIF87a') || ascii.startsWith('GIF89a')) return 'gif'
  if (ascii.startsWith('RIFF') && ascii.slice(8, 12) === 'WEBP') return 'webp'
  if (ascii.startsWith('II*\0') || ascii.startsWith('MM\0*')) return 'tiff'
  if (ascii.slice(4, 8) === 'ftyp') {
    // The major brand and the compatible ones: an AVIF may say mif1 first and avif after it.
    const brands = ascii.slice(8, 32)
    if (/avif|avis/.test(brands)) return 'avif'
    return /heic|heix|hevc|heim|heis|mif1|msf1/.test(brands) ? 'unknown-image' : undefined
  }
  const bmp = ascii.startsWith('BM') && head[6] === 0 && head[7] === 0 && head[8] === 0 && head[9] === 0
  if (bmp || ascii.startsWith('\0\0\x01\0') || ascii.startsWith('\xff\x0a') || ascii.slice(4, 12) === 'JXL \r\n\x87\n') return 'unknown-image'
  if (/^\s*(<\?xml[^>]*>\s*)?<svg[\s>]/i.test(ascii)) return svgAllowed ? 'svg' : 'unknown-image'
  return undefined
}

/**
 * For 'auto': AVIF when Accept names it with q > 0 and it is allowed, then WebP, else the source's
 * format (jpeg, png; webp and avif only when Accept names them), else png for a source that may
 * have alpha and jpeg otherwise, skipping what Accept refuses (q=0). `vary` is true whenever the
 * answer depends on Accept (auto with more than one allowed format). A fixed format: that one.
 */
export function outputFormat(
  requested: ImageFormat | 'auto',
  accept: string | undefined,
  source: SourceFormat,
  allowed: readonly ImageFormat[]
): { format: ImageFormat; vary: boolean } {
  if (requested !== 'auto') return { format: requested, vary: false }
  const vary = allowed.length > 1
  const ranges = parseAccept(accept ?? '*/*')
  for (const modern of ['avif', 'webp'] as const) {
    if (allowed.includes(modern) && (explicitQ(ranges, CONTENT_TYPES[modern]) ?? 0) > 0) return { format: modern, vary }
  }
  const alpha = MAY_HAVE_ALPHA.has(source)
  const candidates: ImageFormat[] = []
  if (source === 'jpeg' || source === 'png') candidates.push(source)
  candidates.push(alpha ? 'png' : 'jpeg', alpha ? 'jpeg' : 'png', 'webp', 'avif')
  const usable = candidates.filter((f) => allowed.includes(f))
  const accepted = usable.find((f) => acceptQ(ranges, CONTENT_TYPES[f]) > 0)
  // Nothing acceptable: answer anyway in the best fallback rather than 406 (what browsers expect).
  const format = accepted ?? usable[0] ?? allowed[0] ?? 'jpeg'
  return { format, vary }
}

export function contentTypeOf(format: ImageFormat): string {
  return CONTENT_TYPES[format]
}

interface MediaRange {
  type: string
  subtype: string
  q: number
}

/** Accept's media ranges; an unparsable q counts as 1 (lenient, as browsers send valid ones). */
export function parseAccept(header: string): MediaRange[] {
  const out: MediaRange[] = []
  for (const item of header.split(',')) {
    const [range = '', ...params] = item.split(';')
    const slash = range.indexOf('/')
    if (slash === -1) continue
    let q = 1
    for (const p of params) {
      const [k = '', v = ''] = p.split('=')
      if (k.trim().toLowerCase() !== 'q') continue
      const n = Number(v.trim())
      if (v.trim() !== '' && n >= 0 && n <= 1) q = n
    }
    out.push({ type: range.slice(0, slash).trim().toLowerCase(), subtype: range.slice(slash + 1).trim().toLowerCase(), q })
  }
  return out
}

/** The q of the most specific range matching `mediaType` (exact, then type/*, then * /*); 0 when none. */
function acceptQ(ranges: MediaRange[], mediaType: string): number {
  const exact = explicitQ(ranges, mediaType)
  if (exact !== undefined) return exact
  const [type] = mediaType.split('/')
  const typeWild = ranges.filter((r) => r.type === type && r.subtype === '*')
  if (typeWild.length > 0) return Math.max(...typeWild.map((r) => r.q))
  const any = ranges.filter((r) => r.type === '*' && r.subtype === '*')
  return any.length > 0 ? Math.max(...any.map((r) => r.q)) : 0
}

/** The q of a range naming `mediaType` exactly; undefined when Accept does not name it. */
function explicitQ(ranges: MediaRange[], mediaType: string): number | undefined {
  const [type, subtype] = mediaType.split('/')
  const exact = ranges.filter((r) => r.type === type && r.subtype === subtype)
  return exact.length > 0 ? Math.max(...exact.map((r) => r.q)) : undefined
}
