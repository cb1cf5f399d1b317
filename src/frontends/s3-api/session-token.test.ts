import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { it } from 'node:test'
import { SessionSealer } from './session-token.ts'

const now = Math.floor(Date.now() / 1000)

it('opens what it sealed, with the same derived secret, and refuses any altered byte', () => {
  const sealer = new SessionSealer([randomBytes(32)])
  const sealed = sealer.seal({ sub: 'u', role: 'reader' }, now + 60, ['reports'])
  const opened = sealer.open(sealed.token)
  assert.deepEqual(opened, { ok: true, secret: sealed.secret, session: { accessKeyId: sealed.accessKeyId, expiresAt: now + 60, claims: { sub: 'u', role: 'reader' }, buckets: ['reports'] } })
  const bytes = Buffer.from(sealed.token, 'base64url')
  for (const at of [0, 1, 5, 20, bytes.length - 1]) {
    const altered = Buffer.from(bytes)
    altered[at] = (altered[at] as number) ^ 1
    assert.deepEqual(sealer.open(altered.toString('base64url')), { ok: false, reason: 'invalid' }, `byte ${at}`)
  }
  assert.deepEqual(sealer.open('not a token'), { ok: false, reason: 'invalid' })
})

it('opens tokens of every configured key (rotation) and refuses expired sessions', () => {
  const [current, previous] = [randomBytes(32), randomBytes(32)]
  const old = new SessionSealer([previous]).seal({}, now + 60, [])
  const rotated = new SessionSealer([current, previous])
  assert.equal(rotated.open(old.token).ok, true)
  assert.deepEqual(new SessionSealer([current]).open(old.token), { ok: false, reason: 'invalid' })
  assert.deepEqual(rotated.open(rotated.seal({}, now - 1, []).token), { ok: false, reason: 'expired' })
})
