// Range requests (RFC 9110 §14). Parsed before the object's size is known, so a range can be sent
// to the backend on the first request; resolved against the size once it is.
import type { ByteRange, RangeSpec } from '../types.ts'

export type RangeRequest = RangeSpec | 'multiple'

const SINGLE = /^(\d+)-(\d*)$/
const SUFFIX = /^-(\d+)$/

/**
 * One range, `'multiple'` for a valid multi-range set (answered with the whole object), or
 * undefined when there is no header or it is not a valid bytes range (which RFC 9110 says to ignore).
 */
export function parseRange(header: string | undefined): RangeRequest | undefined {
  if (header === undefined) return undefined
  const eq = header.indexOf('=')
  if (eq === -1 || header.slice(0, eq).trim().toLowerCase() !== 'bytes') return undefined
  const specs: RangeSpec[] = []
  for (const part of header.slice(eq + 1).split(',')) {
    const item = part.trim()
    if (item === '') continue
    const spec = parseOne(item)
    if (spec === undefined) return undefined
    specs.push(spec)
  }
  if (specs.length === 0) return undefined
  return specs.length === 1 ? specs[0] : 'multiple'
}

function parseOne(item: string): RangeSpec | undefined {
  const single = SINGLE.exec(item)
  if (single !== null) {
    const start = Number(single[1])
    // No object is 2^53 bytes long: a start past that is ignored, an end past it means "to the end".
    if (!Number.isSafeInteger(start)) return undefined
    if (single[2] === '') return { kind: 'from', start }
    const end = Number(single[2])
    if (!Number.isSafeInteger(end)) return { kind: 'from', start }
    return end < start ? undefined : { kind: 'bounded', start, end }
  }
  const suffix = SUFFIX.exec(item)
  if (suffix !== null) {
    const length = Number(suffix[1])
    return { kind: 'suffix', length: Number.isSafeInteger(length) ? length : Number.MAX_SAFE_INTEGER }
  }
  return undefined
}

/** The bytes a range selects in an object of `size` bytes, or undefined when unsatisfiable. */
export function resolveRange(spec: RangeSpec, size: number): ByteRange | undefined {
  switch (spec.kind) {
    case 'bounded':
    case 'from': {
      if (spec.start >= size) return undefined
      const end = spec.kind === 'bounded' ? Math.min(spec.end, size - 1) : size - 1
      return { start: spec.start, end }
    }
    case 'suffix':
      if (spec.length === 0 || size === 0) return undefined
      return { start: Math.max(0, size - spec.length), end: size - 1 }
  }
}

/** The `Range` header value that asks for exactly this spec. */
export function formatRange(spec: RangeSpec): string {
  switch (spec.kind) {
    case 'bounded':
      return `bytes=${spec.start}-${spec.end}`
    case 'from':
      return `bytes=${spec.start}-`
    case 'suffix':
      return `bytes=-${spec.length}`
  }
}

export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`
}

export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`
}

/** Parses `bytes start-end/size` (Content-Range of a 206). */
export function parseContentRange(value: string | undefined): (ByteRange & { size: number }) | undefined {
  if (value === undefined) return undefined
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(value.trim())
  if (match === null) return undefined
  return { start: Number(match[1]), end: Number(match[2]), size: Number(match[3]) }
}
