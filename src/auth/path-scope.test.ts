import assert from 'node:assert/strict'
import { it } from 'node:test'
import { keyInScope } from './path-scope.ts'

it('matches prefixes, single-segment and multi-segment globs, and exact keys', () => {
  assert.ok(keyInScope('videos/course-7/intro.mp4', 'videos/course-7/'))
  assert.ok(!keyInScope('videos/course-70/intro.mp4', 'videos/course-7/'))
  assert.ok(keyInScope('videos/course-7/intro.mp4', ['other/', 'videos/course-7/*.mp4']))
  assert.ok(!keyInScope('videos/course-7/sub/intro.mp4', 'videos/course-7/*.mp4'))
  assert.ok(keyInScope('reports/2026/q1/a.pdf', 'reports/**'))
  assert.ok(keyInScope('a.txt', 'a.txt'))
  assert.ok(!keyInScope('a.txt.bak', 'a.txt'))
  assert.ok(keyInScope('a(1).txt', 'a(*).txt'))
  assert.ok(!keyInScope('anything', undefined))
  assert.ok(!keyInScope('anything', [42, '']))
})
