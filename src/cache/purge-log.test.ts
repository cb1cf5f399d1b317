import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PurgeLog } from './purge-log.ts'

describe('purge log', () => {
  it('knows which copies a purge covers: by prefix, by time fetched, by point in the log', () => {
    const log = new PurgeLog()
    const seq = log.seq
    log.record('b/videos/', 1_000)
    assert.equal(log.purgedAfter('b/videos/a.mp4', 999), true, 'fetched before the purge')
    assert.equal(log.purgedAfter('b/videos/a.mp4', 1_000), true, 'the same millisecond counts')
    assert.equal(log.purgedAfter('b/videos/a.mp4', 1_001), false, 'fetched after it')
    assert.equal(log.purgedAfter('b/images/a.png', 999), false, 'another prefix')
    assert.equal(log.purgedSince('b/videos/a.mp4', seq), true)
    assert.equal(log.purgedSince('b/videos/a.mp4', log.seq), false)
  })

  it('forgets purges after an hour, and a point before what it forgot counts as purged', () => {
    const log = new PurgeLog()
    const seq = log.seq
    log.record('b/x', 0)
    log.record('b/y', 2 * 60 * 60 * 1000)
    assert.equal(log.purgedAfter('b/x', 0), false, 'the hour-old purge is forgotten')
    assert.equal(log.purgedSince('b/z', seq), true, 'a read from before a forgotten purge is not trusted')
  })

  it('keeps at most 10,000 purges, forgetting the oldest', () => {
    const log = new PurgeLog()
    const seq = log.seq
    for (let i = 0; i < 10_001; i++) log.record(`b/${i}`, 1_000)
    assert.equal(log.purgedAfter('b/0', 1_000), false, 'the oldest is forgotten')
    assert.equal(log.purgedAfter('b/10000', 1_000), true, 'the newest is kept')
    assert.equal(log.purgedSince('b/unrelated', seq), true, 'a read from before what was forgotten is not trusted')
    assert.equal(log.purgedSince('b/unrelated', log.seq - 1), false)
  })
})
