import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PurgeLog } from './purge-log.ts'

describe('purge log', () => {
  it('knows which copies a purge covers: by prefix, by time fetched, by point in the log', () => {
    const log = new PurgeLog()
    const seq = log.seq
    log.purged('b/videos/', 1_000)
    assert.equal(log.purgedAfter('b/videos/a.mp4', 999), true, 'fetched before the purge')
    assert.equal(log.purgedAfter('b/videos/a.mp4', 1_000), true, 'the same millisecond counts')
    assert.equal(log.purgedAfter('b/videos/a.mp4', 1_001), false, 'fetched after it')
    assert.equal(log.purgedAfter('b/images/a.png', 999), false, 'another prefix')
    assert.equal(log.purgedSince('b/videos/a.mp4', seq), true)
    assert.equal(log.purgedSince('b/videos/a.mp4', log.seq), false)
  })

  it('a delete covers its key and the entries derived from it, not keys that merely start with it', () => {
    const log = new PurgeLog()
    log.deleted('b/a', 1_000)
    assert.equal(log.purgedAfter('b/a', 999), true)
    assert.equal(log.purgedAfter('b/a\0slice:"e":3', 999), true, 'its slices')
    assert.equal(log.purgedAfter('b/a.json', 999), false)
    assert.equal(log.purgedAfter('b/a/x', 999), false)
  })

  it('forgets purges after an hour, and a read from before a forgotten purge is not trusted', () => {
    const log = new PurgeLog()
    const seq = log.seq
    log.purged('b/x', 0)
    log.purged('b/y', 2 * 60 * 60 * 1000)
    assert.equal(log.purgedAfter('b/x', 0), false, 'the hour-old purge is forgotten')
    assert.equal(log.purgedSince('b/z', seq), true)
  })

  it('keeps at most 10,000 purges; a copy from before the ones it forgot is taken as purged', () => {
    const log = new PurgeLog()
    const seq = log.seq
    for (let i = 0; i < 10_001; i++) log.deleted(`b/${i}`, 1_000 + i)
    assert.equal(log.purgedAfter('b/unrelated', 1_000), true, 'from before what was forgotten: not trusted')
    assert.equal(log.purgedAfter('b/unrelated', 20_000), false, 'fetched after every purge')
    assert.equal(log.purgedAfter('b/10000', 11_000), true, 'the newest is kept')
    assert.equal(log.purgedSince('b/unrelated', seq), true)
    assert.equal(log.purgedSince('b/unrelated', log.seq - 1), false)
  })
})
