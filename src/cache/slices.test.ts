// The slice cache's metadata records against real memory and disk tiers: a record being stored
// is found at once (never behind the disk write), and forgetting the object forgets it too. The
// origin here is a stand-in that answers HEAD only and counts it: these rules never read a body.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import type { CachedObject, ObjectSource } from '../ports.ts'
import type { ObjectMeta } from '../types.ts'
import { objectMeta } from '../../test/support/meta.ts'
import { DiskCache } from './disk.ts'
import { MemoryCache } from './memory.ts'
import { SliceCache } from './slices.ts'
import { TieredCache } from './tiered.ts'

const SLICE = 1024
const dirs: string[] = []
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

function metaOf(etag: string): ObjectMeta {
  return objectMeta({ size: 10 * SLICE, etag, contentType: 'video/mp4' })
}

/** An origin whose object is `current`; counts HEADs. */
function originWith(current: { meta: ObjectMeta }): ObjectSource & { heads: number } {
  const unused = () => Promise.reject(new Error('not used by these tests'))
  return {
    heads: 0,
    head() {
      this.heads++
      return Promise.resolve(current.meta)
    },
    get: unused,
    revalidate: unused,
    list: unused,
    probe: () => Promise.resolve(true),
    close() {},
  }
}

async function sliceCache(): Promise<SliceCache> {
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-slices-'))
  dirs.push(dir)
  const memory = new MemoryCache({ maxBytes: 1 << 20, maxItemBytes: 1 << 19, staleSeconds: 0 })
  const disk = await DiskCache.open({ dir, maxBytes: 1 << 22, maxItemBytes: 1 << 20, staleSeconds: 0 })
  const store = new TieredCache([memory, disk])
  return new SliceCache({ local: store.local, bulk: store.bulk, flights: new Map<string, Promise<CachedObject | undefined>>(), sliceBytes: SLICE, ttlSeconds: 60 })
}

describe('slice cache metadata records', () => {
  it('a record being stored is found at once, before the disk write ends', async () => {
    const slices = await sliceCache()
    const origin = originWith({ meta: metaOf('"v1"') })
    const remembering = slices.remember(origin, 'movie.mp4', 'b/movie.mp4', metaOf('"v1"'))
    // Found within microtasks: before the loop's next check phase, which any file I/O (the disk
    // write: open, write, fsync, rename) must go through first.
    const later = new Promise<'later'>((resolve) => setImmediate(resolve, 'later'))
    const found = await Promise.race([slices.lookup(origin, 'movie.mp4', 'b/movie.mp4'), later])
    assert.notEqual(found, 'later')
    assert.equal(found === 'later' ? undefined : found?.meta.etag, '"v1"')
    await remembering
    assert.equal((await slices.lookup(origin, 'movie.mp4', 'b/movie.mp4'))?.meta.etag, '"v1"')
    assert.equal(origin.heads, 0)
  })

  it('forgetting an object while its record is being stored makes the next discovery ask S3', async () => {
    const slices = await sliceCache()
    const current = { meta: metaOf('"v1"') }
    const origin = originWith(current)
    const remembering = slices.remember(origin, 'movie.mp4', 'b/movie.mp4', metaOf('"v1"'))
    // The object changed (a slice fetch saw another ETag): the restart must not reuse v1.
    current.meta = metaOf('"v2"')
    await slices.forget('b/movie.mp4')
    const found = await slices.discover(origin, 'movie.mp4', 'b/movie.mp4', SLICE, { signal: undefined })
    assert.equal(found?.meta.etag, '"v2"')
    assert.equal(origin.heads, 1)
    await remembering
  })
})
