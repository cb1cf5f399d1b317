// The dependency rule of ../shared/DESIGN.md, read from the imports in src/: leaves import only
// leaves; capability folders import leaves (and their npm clients), never each other; a pipeline
// stage imports leaves and port types, never another stage or an adapter; only runtime.ts (and the
// process edge that starts it) knows concrete adapters.
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { it } from 'node:test'

const SRC = join(import.meta.dirname, '../src')
// images/ and compression/ import only leaves and libraries (sharp, node:zlib); the sharp-backed
// modules (images/render.ts, images/watermark.ts) are loaded by runtime.ts only when configured.
const LEAVES = [
  'types.ts',
  'errors.ts',
  'ports.ts',
  'version.ts',
  'store-breaker.ts',
  'config/schema.ts',
  'config/primitives.ts',
  'config/representations-schema.ts',
  'cache/derived-keys.ts',
  'http/',
  'telemetry/',
  'images/',
  'compression/',
]
const CAPABILITIES = ['auth/', 'security/', 'cache/', 'origin/']
const isLeaf = (file: string) => LEAVES.some((l) => (l.endsWith('/') ? file.startsWith(l) : file === l))
const capabilityOf = (file: string) => CAPABILITIES.find((c) => file.startsWith(c))

async function sources(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await sources(path)))
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(path)
  }
  return out
}

function forbidden(from: string, to: string): string | undefined {
  if (isLeaf(from)) return isLeaf(to) ? undefined : 'a leaf imports only leaves'
  const capability = capabilityOf(from)
  if (capability !== undefined) {
    return isLeaf(to) || to.startsWith(capability) ? undefined : 'a capability imports only leaves and itself'
  }
  if (from.startsWith('pipeline/')) {
    if (isLeaf(to) || to === 'pipeline/exchange.ts') return undefined
    return 'a stage imports leaves and port types only'
  }
  if (capabilityOf(to) !== undefined && !['runtime.ts'].includes(from)) return 'only runtime.ts knows concrete adapters'
  return undefined
}

it('keeps every import in src/ inside the dependency rule', async () => {
  const violations: string[] = []
  for (const path of await sources(SRC)) {
    const from = relative(SRC, path)
    const text = await readFile(path, 'utf8')
    for (const match of text.matchAll(/^import[^'"]*['"](\.{1,2}\/[^'"]+)['"]/gm)) {
      const to = relative(SRC, resolve(dirname(path), match[1] as string))
      const why = forbidden(from, to)
      if (why !== undefined) violations.push(`${from} -> ${to}: ${why}`)
    }
  }
  assert.deepEqual(violations, [])
})
