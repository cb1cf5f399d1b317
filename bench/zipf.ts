// Hit ratio of the memory tier (MemoryCache, as configured in production) on a Zipf(1.0) request
// stream over 10,000 objects of 1 KiB, with room for 10% of them.
import { MemoryCache } from '../src/cache/memory.ts'

export async function zipfHitRatio(objects = 10_000, requests = 200_000, seed = 42): Promise<number> {
  const weights = Array.from({ length: objects }, (_, i) => 1 / (i + 1))
  const total = weights.reduce((a, b) => a + b, 0)
  const cdf: number[] = []
  let acc = 0
  for (const w of weights) cdf.push((acc += w / total))
  let state = seed
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const pick = () => {
    const r = random()
    let lo = 0
    let hi = objects - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if ((cdf[mid] as number) < r) lo = mid + 1
      else hi = mid
    }
    return lo
  }
  const body = Buffer.alloc(1024)
  const perEntry = body.length + 512 // the tier's size accounting
  const cache = new MemoryCache({ maxBytes: (objects / 10) * perEntry, maxItemBytes: 1 << 20, staleSeconds: 0 })
  const meta = { size: 1024, etag: undefined, lastModified: undefined, contentType: undefined, cacheControl: undefined, contentDisposition: undefined, contentEncoding: undefined, contentLanguage: undefined, expires: undefined, userMetadata: {} }
  let hits = 0
  for (let i = 0; i < requests; i++) {
    const key = `b/${pick()}`
    if ((await cache.get(key)) !== undefined) hits++
    else await cache.set(key, { meta, body, storedAt: 0, freshUntil: Date.now() + 3_600_000 })
  }
  return hits / requests
}
