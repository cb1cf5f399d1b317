// docs/configuration.md documents every key of the config schema.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'node:test'
import { fileSchema } from '../../src/config/schema.ts'

interface Def {
  type: string
  shape?: Record<string, { _zod: { def: Def } }>
  innerType?: { _zod: { def: Def } }
  in?: { _zod: { def: Def } }
  element?: { _zod: { def: Def } }
  options?: Array<{ _zod: { def: Def } }>
}

function keysOf(def: Def, prefix: string, out: Set<string>): void {
  switch (def.type) {
    case 'object':
      for (const [key, child] of Object.entries(def.shape ?? {})) {
        const path = prefix === '' ? key : `${prefix}.${key}`
        out.add(path)
        keysOf(child._zod.def, path, out)
      }
      return
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
      return keysOf((def.innerType as { _zod: { def: Def } })._zod.def, prefix, out)
    case 'pipe':
      return keysOf((def.in as { _zod: { def: Def } })._zod.def, prefix, out)
    case 'array':
      return keysOf((def.element as { _zod: { def: Def } })._zod.def, `${prefix}[]`, out)
    case 'union':
      for (const option of def.options ?? []) keysOf(option._zod.def, prefix, out)
      return
  }
}

it('documents every configuration key', async () => {
  const doc = await readFile(join(import.meta.dirname, '../../docs/configuration.md'), 'utf8')
  const keys = new Set<string>()
  keysOf(fileSchema._zod.def as unknown as Def, '', keys)
  const documented = (key: string) =>
    doc.includes(`\`${key.replace(/^(?:buckets\[\]\.auth|s3_api\.sts)\.jwt\./, 'jwt.').replace(/^jwt\.claims\[\]/, 'jwt.claims_verification[]')}\``)
  assert.ok(keys.size > 60, `walked only ${keys.size} keys`)
  // A block (server.security_limits, buckets[].s3) is documented through its keys.
  const isBlock = (key: string) => [...keys].some((k) => k.startsWith(`${key}.`) || k.startsWith(`${key}[].`))
  assert.deepEqual([...keys].filter((k) => !isBlock(k) && !documented(k)), [])
})
