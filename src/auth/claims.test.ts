import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ClaimRule } from '../config/schema.ts'
import { claimAt, failedRule } from './claims.ts'

const claims = { sub: 'u1', role: 'editor', level: 5, groups: ['a', 'b'], org: { role: 'admin' }, 'x.y': 1, email: 'u1@example.com' }
const pass = (rule: ClaimRule) => failedRule([rule], claims) === undefined

describe('claim rules', () => {
  it('reads nested and dotted claim paths', () => {
    assert.equal(claimAt(claims, 'org.role'), 'admin')
    assert.equal(claimAt(claims, 'x.y'), 1)
    assert.equal(claimAt(claims, 'org.missing'), undefined)
  })
  it('applies every operator', () => {
    assert.ok(pass({ claim: 'role', operator: 'equals', value: 'editor' }))
    assert.ok(!pass({ claim: 'role', operator: 'equals', value: 'admin' }))
    assert.ok(pass({ claim: 'role', operator: 'not_equals', value: 'admin' }))
    assert.ok(pass({ claim: 'role', operator: 'in', value: ['admin', 'editor'] }))
    assert.ok(!pass({ claim: 'role', operator: 'not_in', value: ['editor'] }))
    assert.ok(pass({ claim: 'groups', operator: 'contains', value: 'b' }))
    assert.ok(pass({ claim: 'email', operator: 'contains', value: '@example.com' }))
    assert.ok(pass({ claim: 'groups', operator: 'contains_any', value: ['z', 'a'] }))
    assert.ok(!pass({ claim: 'groups', operator: 'contains_any', value: ['z'] }))
    assert.ok(pass({ claim: 'level', operator: 'gt', value: 4 }))
    assert.ok(pass({ claim: 'level', operator: 'gte', value: 5 }))
    assert.ok(pass({ claim: 'level', operator: 'lt', value: 6 }))
    assert.ok(!pass({ claim: 'level', operator: 'lte', value: 4 }))
    assert.ok(pass({ claim: 'org.role', operator: 'exists' }))
    assert.ok(pass({ claim: 'sub', operator: 'equals', value: 'u1' }))
  })
  it('fails closed when the claim is missing, whatever the operator', () => {
    for (const operator of ['not_equals', 'not_in', 'exists'] as const) {
      assert.ok(!pass({ claim: 'absent', operator, value: operator === 'not_in' ? ['x'] : 'x' }), operator)
    }
  })
  it('reports the first failing rule', () => {
    const rules: ClaimRule[] = [
      { claim: 'role', operator: 'equals', value: 'editor' },
      { claim: 'level', operator: 'gt', value: 9 },
    ]
    assert.equal(failedRule(rules, claims)?.claim, 'level')
  })
})
