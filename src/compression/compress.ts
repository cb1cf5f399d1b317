// Compresses an object's bytes into one content coding (br, zstd, gzip) with node:zlib's async
// one-shot functions, which run on libuv's threadpool: the event loop keeps serving while a large
// text is compressed. Levels are chosen for compress-once-serve-many (the result is cached as a
// variant and served until the object changes); bench/compression.ts measures them, and
// docs/caching.md gives the numbers.
import * as zlib from 'node:zlib'
import type { CompressionEncoding } from '../config/representations-schema.ts'

/**
 * The level per encoding: the knee of size against time on minified JS, JSON and prose. The top
 * levels save 3-11% more bytes at 20-95x the time (brotli 9 and 11 take over 100 ms for 100 KiB of
 * minified JS, brotli 11 about 1.5 s per MiB of text, zstd 19 about 0.3 s per MiB): time a cache
 * miss waits for and a threadpool thread (4 by default, shared with file I/O and DNS) is held for.
 * gzip 9 is no smaller than 6 on text. Measured table: docs/caching.md, bench/compression.ts.
 */
export const COMPRESSION_LEVELS: Readonly<Record<CompressionEncoding, number>> = { br: 5, zstd: 6, gzip: 6 }

/**
 * Compressions running at once: half of libuv's threadpool (4 threads by default), so disk-tier
 * reads and DNS lookups, which share it, never wait behind a burst of compressions.
 */
export const MAX_CONCURRENT_COMPRESSIONS = 2
let running = 0
const waiting: Array<() => void> = []

/** Compresses at the chosen level for the encoding, off the event loop, a bounded number at a time. */
export async function compress(bytes: Uint8Array, encoding: CompressionEncoding): Promise<Buffer> {
  if (running >= MAX_CONCURRENT_COMPRESSIONS) await new Promise<void>((resolve) => waiting.push(resolve))
  else running++
  try {
    return await compressAtLevel(bytes, encoding, COMPRESSION_LEVELS[encoding])
  } finally {
    // The slot goes straight to the next in line.
    const next = waiting.shift()
    if (next === undefined) running--
    else next()
  }
}

/** Compresses at a given level (brotli quality 0-11, gzip level 1-9, zstd level 1-22); the bench measures with it. */
export function compressAtLevel(bytes: Uint8Array, encoding: CompressionEncoding, level: number): Promise<Buffer> {
  const { promise, resolve, reject } = Promise.withResolvers<Buffer>()
  const done = (error: Error | null, result: Buffer) => (error === null ? resolve(result) : reject(error))
  switch (encoding) {
    case 'br':
      zlib.brotliCompress(
        bytes,
        { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level } },
        done
      )
      break
    case 'gzip':
      zlib.gzip(bytes, { level }, done)
      break
    case 'zstd':
      if (typeof zlib.zstdCompress !== 'function') {
        reject(new Error('zstd is not available in this runtime (node:zlib has no zstdCompress)'))
        break
      }
      // pledgedSrcSize writes the content size into the frame header, so decoders can allocate once.
      zlib.zstdCompress(
        bytes,
        { params: { [zlib.constants.ZSTD_c_compressionLevel]: level }, pledgedSrcSize: bytes.byteLength },
        done
      )
      break
  }
  return promise
}
