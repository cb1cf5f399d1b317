// Configuration of the representations the proxy makes of an object: image variants (with
// Yatagarasu's global `image_optimization` block accepted), watermarks and compressed text.
// Defaults are the safe ones: presets only, bounded inputs, bounded concurrency.
import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { bool, num, size, text } from './primitives.ts'

const int = (min: number, max: number) =>
  num.pipe(z.number().int('must be a whole number').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`))
export const IMAGE_FORMATS = ['avif', 'webp', 'jpeg', 'png'] as const
export type ImageFormat = (typeof IMAGE_FORMATS)[number]
export const IMAGE_FITS = ['cover', 'contain', 'fill', 'inside', 'outside'] as const
export type ImageFit = (typeof IMAGE_FITS)[number]

/** Yatagarasu's global block: the defaults every bucket's `images` starts from. */
export const imageOptimizationSchema = z.strictObject({
  enabled: bool.default(false),
  max_width: int(1, 16384).default(4096),
  max_height: int(1, 16384).default(4096),
  default_quality: int(1, 100).default(80),
})
export type ImageOptimizationConfig = z.output<typeof imageOptimizationSchema>

const presetSchema = z
  .strictObject({
    width: int(1, 16384).optional(),
    height: int(1, 16384).optional(),
    fit: z.enum(IMAGE_FITS).default('cover'),
    /** `auto` negotiates from Accept (AVIF, then WebP, then the source's format). */
    format: z.enum([...IMAGE_FORMATS, 'auto']).default('auto'),
    quality: int(1, 100).optional(),
    dpr: num.pipe(z.number().min(1, 'must be at least 1').max(4, 'must be at most 4')).optional(),
  })
  .refine((preset) => preset.width !== undefined || preset.height !== undefined || preset.format !== 'auto' || preset.quality !== undefined, {
    message: 'a preset needs at least one of width, height, format or quality',
  })
export type ImagePreset = z.output<typeof presetSchema>

/** Per bucket; every key left out comes from `image_optimization` or the default here. */
export const bucketImagesSchema = z.strictObject({
  enabled: bool.optional(),
  presets: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'preset names are letters, digits, _ and -'), presetSchema).default({}),
  /** False: only `preset=` requests, so nobody can make the proxy render every size. */
  allow_arbitrary: bool.default(false),
  max_width: int(1, 16384).optional(),
  max_height: int(1, 16384).optional(),
  default_quality: int(1, 100).optional(),
  max_input_pixels: int(1, 1_000_000_000).default(50_000_000),
  max_input_bytes: size.default(50 * 1024 * 1024),
  max_frames: int(1, 10_000).default(100),
  formats: z.array(z.enum(IMAGE_FORMATS)).min(1, 'at least one format').default([...IMAGE_FORMATS]),
  signing: z.strictObject({ keys: z.array(z.string().min(16, 'a signing key needs at least 16 characters')).min(1, 'at least one key') }).optional(),
  max_concurrent: int(1, 1024).optional(),
  max_queue: int(0, 100_000).optional(),
  render_timeout_seconds: num.pipe(z.number().positive('must be greater than 0').max(300, 'must be at most 300')).default(10),
  /** SVG input: off by default (libvips' SVG loader is a large attack surface). */
  svg: bool.default(false),
})

export const WATERMARK_POSITIONS = [
  'top-left',
  'top-center',
  'top-right',
  'center-left',
  'center',
  'center-right',
  'bottom-left',
  'bottom-center',
  'bottom-right',
  'tiled',
  'diagonal',
] as const
export type WatermarkPosition = (typeof WATERMARK_POSITIONS)[number]

const unit = num.pipe(z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1'))
const watermarkSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('text'),
    /** May hold {{jwt.<claim>}}, {{ip}}, {{header.<name>}}, {{date}}, {{datetime}}, {{path}}, {{bucket}}. */
    text,
    font_size: int(4, 512).default(24),
    color: z
      .string()
      .regex(/^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$/, 'must be a #rgb, #rrggbb or #rrggbbaa color')
      .default('#ffffff'),
    opacity: unit.default(0.5),
    position: z.enum(WATERMARK_POSITIONS).default('bottom-right'),
    margin: int(0, 4096).default(10),
    rotation: num.pipe(z.number().min(-360).max(360)).default(0),
    tile_spacing: int(0, 4096).default(100),
  }),
  z.strictObject({
    type: z.literal('image'),
    /** An object key in the same bucket (never a URL). */
    source: text.refine((key) => !/^[a-z][a-z0-9+.-]*:/i.test(key), 'must be an object key in the same bucket, not a URL'),
    width: int(1, 16384).optional(),
    height: int(1, 16384).optional(),
    opacity: unit.default(0.5),
    position: z.enum(WATERMARK_POSITIONS).default('bottom-right'),
    margin: int(0, 4096).default(10),
    rotation: num.pipe(z.number().min(-360).max(360)).default(0),
    tile_spacing: int(0, 4096).default(100),
  }),
])
export type WatermarkSpec = z.output<typeof watermarkSchema>

export const bucketWatermarkSchema = z.strictObject({
  enabled: bool.default(true),
  /** all: every image response matching a rule is marked, the original included; variants: only renders. */
  apply: z.enum(['all', 'variants']).default('all'),
  rules: z
    .array(
      z.strictObject({
        /** A glob on the object key (`*` within a segment, `**` across). */
        pattern: text,
        watermarks: z.array(watermarkSchema).min(1, 'at least one watermark'),
      })
    )
    .min(1, 'at least one rule'),
})
export type WatermarkConfig = z.output<typeof bucketWatermarkSchema>

export const COMPRESSION_ENCODINGS = ['br', 'zstd', 'gzip'] as const
export type CompressionEncoding = (typeof COMPRESSION_ENCODINGS)[number]
export const bucketCompressionSchema = z.strictObject({
  enabled: bool.default(true),
  /** Media types compressed; `text/*` matches every text type. */
  types: z
    .array(z.string().regex(/^[a-z0-9.+-]+\/(\*|[a-z0-9.+-]+)$/i, 'must be a media type like text/* or application/json'))
    .min(1)
    .default(['text/*', 'application/json', 'application/javascript', 'application/xml', 'image/svg+xml', 'application/wasm']),
  min_size: size.default(1024),
  /** In order of preference when Accept-Encoding gives them equal weight. */
  encodings: z.array(z.enum(COMPRESSION_ENCODINGS)).min(1, 'at least one encoding').default(['br', 'zstd', 'gzip']),
})
export type CompressionConfigFile = z.output<typeof bucketCompressionSchema>

/** One bucket's image settings after the global block and the defaults are applied. */
export interface ImagesConfig {
  presets: Record<string, ImagePreset>
  allow_arbitrary: boolean
  max_width: number
  max_height: number
  default_quality: number
  max_input_pixels: number
  max_input_bytes: number
  max_frames: number
  formats: ImageFormat[]
  /** Null: URLs need no signature. */
  signing_keys: string[] | null
  max_concurrent: number
  max_queue: number
  render_timeout_ms: number
  svg: boolean
}

export interface CompressionConfig {
  types: string[]
  min_size: number
  encodings: CompressionEncoding[]
}

/** Null when the bucket renders no images (neither its `images` nor `image_optimization` enables it). */
export function normalizeImages(
  bucket: z.output<typeof bucketImagesSchema> | undefined,
  global: ImageOptimizationConfig | undefined
): ImagesConfig | null {
  const enabled = bucket?.enabled ?? (bucket !== undefined ? true : (global?.enabled ?? false))
  if (!enabled) return null
  const defaults = bucketImagesSchema.parse({})
  const b = bucket ?? defaults
  const maxConcurrent = b.max_concurrent ?? availableParallelism()
  return {
    presets: b.presets,
    allow_arbitrary: b.allow_arbitrary,
    max_width: b.max_width ?? global?.max_width ?? 4096,
    max_height: b.max_height ?? global?.max_height ?? 4096,
    default_quality: b.default_quality ?? global?.default_quality ?? 80,
    max_input_pixels: b.max_input_pixels,
    max_input_bytes: b.max_input_bytes,
    max_frames: b.max_frames,
    formats: [...new Set(b.formats)],
    signing_keys: b.signing?.keys ?? null,
    max_concurrent: maxConcurrent,
    max_queue: b.max_queue ?? 4 * maxConcurrent,
    render_timeout_ms: Math.round(b.render_timeout_seconds * 1000),
    svg: b.svg,
  }
}

export function normalizeCompression(file: CompressionConfigFile | undefined): CompressionConfig | null {
  if (file === undefined || !file.enabled) return null
  return { types: file.types.map((t) => t.toLowerCase()), min_size: file.min_size, encodings: [...new Set(file.encodings)] }
}

export function normalizeWatermark(file: WatermarkConfig | undefined): WatermarkConfig | null {
  return file === undefined || !file.enabled ? null : file
}
