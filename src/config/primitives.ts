// The value types config files are made of: numbers and booleans that may arrive as strings from
// `${VAR}` substitution, and human sizes.
import { z } from 'zod'

export const text = z.string().min(1, 'must not be empty')

/** Numbers may arrive as strings from `${VAR}` substitution. */
export const num = z.union([
  z.number(),
  z
    .string()
    .regex(/^-?\d+(\.\d+)?$/, 'must be a number')
    .transform(Number),
])
export const positive = num.pipe(z.number().positive('must be greater than 0'))
export const nonNegative = num.pipe(z.number().min(0, 'must not be negative'))
export const count = num.pipe(z.number().int('must be a whole number').positive('must be at least 1'))
export const bool = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])

export const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
}

/** Human sizes: a byte count, or `512KB`, `10MB`, `1.5GB` (binary multiples: 1 KB = 1024 B). */
export const size = z.union([
  // A string (from `${VAR}` too) is read by the branch below, so a bad one is named by its message.
  z.number().int('must be a whole number').positive('must be at least 1'),
  z.string().transform((text, ctx) => {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
    const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase() || 'b']
    if (match === null || unit === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not a size (use e.g. 512KB, 10MB, 1GB)` })
      return z.NEVER
    }
    return Math.floor(Number(match[1]) * unit)
  }),
])
export const megabytes = positive.transform((mb) => Math.floor(mb * 1024 * 1024))
