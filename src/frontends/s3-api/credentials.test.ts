import assert from 'node:assert/strict'
import { it } from 'node:test'
import { CredentialTable, mayListPrefix, mayReadBucket, mayReadKey } from './credentials.ts'

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+x'
const table = new CredentialTable([
  { access_key_id: 'ALL', secret_access_key: SECRET, buckets: ['media'], prefixes: [], claims: {} },
  { access_key_id: 'TEAM', secret_access_key: `${SECRET}2`, buckets: ['media', 'docs'], prefixes: ['team/a/', 'shared/'], claims: { role: 'viewer' } },
])

it('gives the secret of a static key, never for an unknown id or with a session token', () => {
  assert.equal(table.secretOf('ALL', undefined), SECRET)
  assert.equal(table.secretOf('NOPE', undefined), undefined)
  assert.equal(table.secretOf('ALL', 'some-session-token'), undefined)
})

it('scopes a key to its buckets and prefixes', () => {
  const team = table.identity('TEAM')
  assert.ok(team !== undefined)
  assert.deepEqual(team.claims, { role: 'viewer' })
  assert.ok(mayReadBucket(team, 'docs'))
  assert.ok(!mayReadBucket(team, 'private'))
  assert.ok(mayReadKey(team, 'team/a/x.txt'))
  assert.ok(!mayReadKey(team, 'team/b/x.txt'))
  assert.ok(!mayReadKey(team, 'team/a'))
  assert.ok(mayListPrefix(team, ''))
  assert.ok(mayListPrefix(team, 'team/'))
  assert.ok(mayListPrefix(team, 'team/a/deep/'))
  assert.ok(!mayListPrefix(team, 'team/b'))
  const all = table.identity('ALL')
  assert.ok(all !== undefined && mayReadKey(all, 'anything') && mayListPrefix(all, 'x'))
})
