// Claim rules (`claims_verification` per bucket, `claims` globally): every rule must pass.
// A claim path is dotted (`org.role`); a literal key containing a dot wins over nesting.
// A missing claim fails every operator except `exists`, which it also fails: rules fail closed.
import type { ClaimRule } from '../config/schema.ts'

export function claimAt(claims: Readonly<Record<string, unknown>>, path: string): unknown {
  if (path in claims) return claims[path]
  let node: unknown = claims
  for (const part of path.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined
    node = (node as Record<string, unknown>)[part]
  }
  return node
}

/** The first rule the claims fail, or undefined when all pass. */
export function failedRule(
  rules: readonly ClaimRule[],
  claims: Readonly<Record<string, unknown>>
): ClaimRule | undefined {
  return rules.find((rule) => !passes(rule, claimAt(claims, rule.claim)))
}

function passes(rule: ClaimRule, actual: unknown): boolean {
  if (actual === undefined || actual === null) return false
  const expected = rule.value
  switch (rule.operator) {
    case 'exists':
      return true
    case 'equals':
      return same(actual, expected)
    case 'not_equals':
      return !same(actual, expected)
    case 'in':
      return (expected as unknown[]).some((v) => same(actual, v))
    case 'not_in':
      return !(expected as unknown[]).some((v) => same(actual, v))
    case 'contains':
      return contains(actual, expected)
    case 'contains_any':
      return (expected as unknown[]).some((v) => contains(actual, v))
    case 'gt':
      return typeof actual === 'number' && actual > (expected as number)
    case 'gte':
      return typeof actual === 'number' && actual >= (expected as number)
    case 'lt':
      return typeof actual === 'number' && actual < (expected as number)
    case 'lte':
      return typeof actual === 'number' && actual <= (expected as number)
  }
}

function contains(actual: unknown, expected: unknown): boolean {
  if (Array.isArray(actual)) return actual.some((v) => same(v, expected))
  if (typeof actual === 'string' && typeof expected === 'string') return actual.includes(expected)
  return false
}

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a === 'object' && typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b)
  return false
}
