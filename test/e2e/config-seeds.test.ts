// Every configuration example of Yatagarasu's README (test/support/fixtures/config/seeds/, one file
// per YAML block, the README itself beside them) is accepted: a complete one by the real
// `yatagarasu --check`, a fragment once merged into a minimal valid config. A README block without
// its fixture, or a fixture the table below does not check, fails the run.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { generate } from 'selfsigned'
import { parse } from 'yaml'
import { ConfigError, loadConfig, type Env } from '../../src/config/load.ts'
import type { Config } from '../../src/config/schema.ts'

const ROOT = join(import.meta.dirname, '../..')
const SEEDS = join(ROOT, 'test/support/fixtures/config/seeds')
const README = join(SEEDS, 'yatagarasu-README.md')
const HEADER = "# From Yatagarasu's README, unchanged."
const GiB = 1024 ** 3

type Doc = Record<string, unknown>

/**
 * How a fixture is checked. `complete`: as it is, through `--check`. The others are merged into a
 * minimal config: `top-level` keys into the document, `buckets` into minimal buckets (each gets an
 * s3 block under its own keys), `bucket` into one minimal bucket that requires a JWT.
 */
interface Seed {
  kind: 'complete' | 'top-level' | 'buckets' | 'bucket'
  /** Extra top-level keys of the minimal config (a global jwt a fragment's bucket relies on). */
  base?: Doc
  /** What the loaded config must show. */
  check(config: Config): void
}

const SECRET = 'seed-jwt-secret-long-enough-for-hs256-0123456789'
const minimalBucket = (name: string): Doc => ({ name, path_prefix: `/${name}`, s3: { bucket: `${name}-bucket`, region: 'us-east-1' } })

const SEEDS_CHECKED: Record<string, Seed> = {
  'basic-public-and-private.yaml': {
    kind: 'complete',
    check(config) {
      assert.deepEqual(config.buckets.map((b) => [b.path_prefix, b.auth === null]), [['/products', true], ['/private', false]])
      assert.deepEqual(config.buckets[1]?.auth?.token_sources, [{ type: 'bearer' }])
      assert.deepEqual(config.metrics, { enabled: true, port: 9090 })
    },
  },
  'ha-replicas-circuit-breaker.yaml': {
    kind: 'complete',
    check(config) {
      assert.equal(config.server.workers, 4)
      const backend = config.buckets[0]?.backend
      assert.deepEqual(backend?.replicas.map((r) => [r.name, r.timeout]), [['primary-us-west', 5], ['backup-us-east', 5], ['backup-eu-central', 10]])
      assert.equal(backend?.replicas[2]?.endpoint, 'https://s3.eu-central-1.amazonaws.com')
      assert.equal(backend?.circuit_breaker?.failure_threshold, 5)
    },
  },
  'bucket-reference.yaml': {
    kind: 'complete',
    check(config) {
      const bucket = config.buckets[0]
      assert.deepEqual(bucket?.auth?.token_sources, [{ type: 'bearer' }, { type: 'query', name: 'token' }, { type: 'header', name: 'x-auth-token' }])
      assert.deepEqual(bucket?.auth?.claims, [{ claim: 'role', operator: 'equals', value: 'admin' }])
      assert.equal(bucket?.cache?.ttl_seconds, 3600)
      // `max_size: "1GB"` is this bucket's budget in the memory tier (256 MiB by default: it may
      // fill it, which the config warns about).
      assert.equal(bucket?.cache?.max_bytes, GiB)
      assert.deepEqual(config.cache?.budgets, { 'bucket-name': GiB })
      assert.deepEqual(config.warnings.map((w) => w.path), ['buckets[0](bucket-name).cache.max_size'])
    },
  },
  'opa-remote-authorization.yaml': {
    kind: 'complete',
    check(config) {
      assert.deepEqual(config.buckets[0]?.authorization, {
        kind: 'remote',
        url: 'http://localhost:8181',
        policy_path: 'yatagarasu/authz/allow',
        timeout_ms: 100,
        fail_mode: 'closed',
        cache_ttl_seconds: 60,
        cache_size: 10000,
      })
    },
  },
  'use-case-team-buckets.yaml': {
    kind: 'buckets',
    check(config) {
      assert.deepEqual(config.buckets.map((b) => [b.path_prefix, b.backend.replicas[0]?.bucket]), [['/team-a', 'team-a-bucket'], ['/team-b', 'team-b-bucket']])
    },
  },
  'use-case-public-and-private.yaml': {
    kind: 'buckets',
    // `auth: { enabled: true }` alone needs the global jwt block.
    base: { jwt: { secret: SECRET } },
    check(config) {
      assert.deepEqual(config.buckets.map((b) => [b.path_prefix, b.auth === null]), [['/assets', true], ['/users', false]])
    },
  },
  'use-case-claims-verification.yaml': {
    kind: 'bucket',
    check(config) {
      assert.deepEqual(config.buckets[0]?.auth?.claims, [
        { claim: 'tenant', operator: 'equals', value: 'acme-corp' },
        { claim: 'role', operator: 'equals', value: 'admin' },
      ])
    },
  },
  'server-https.yaml': {
    kind: 'top-level',
    check(config) {
      assert.equal(config.server.port, 8080)
      assert.equal(config.server.tls?.min_version, 'TLSv1.2')
      assert.match(config.server.tls?.cert ?? '', /BEGIN CERTIFICATE/)
    },
  },
  'global-jwt-token-sources.yaml': {
    kind: 'top-level',
    // A bucket that uses the global block, so it is verified, not just parsed.
    base: { buckets: [{ ...minimalBucket('private'), auth: { enabled: true } }] },
    check(config) {
      assert.deepEqual(config.buckets[0]?.auth?.token_sources, [
        { type: 'bearer' },
        { type: 'header', name: 'x-auth-token', prefix: 'Token ' },
        { type: 'query', name: 'token' },
      ])
      assert.deepEqual(config.buckets[0]?.auth?.claims, [{ claim: 'role', operator: 'equals', value: 'admin' }])
    },
  },
  'logging.yaml': {
    kind: 'top-level',
    check(config) {
      assert.deepEqual(config.logging, { level: 'info', format: 'json' })
    },
  },
  'metrics.yaml': {
    kind: 'top-level',
    check(config) {
      assert.deepEqual(config.metrics, { enabled: true, port: 9090 })
    },
  },
}

let dir: string
let tls: { cert: string; key: string }

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-seeds-'))
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' })
  tls = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }
  await writeFile(tls.cert, pems.cert)
  await writeFile(tls.key, pems.private)
})

after(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

/** A value for every `${VAR}` the text references (long enough to be an HMAC secret). */
function envFor(text: string): Env {
  const names = [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1] as string)
  return Object.fromEntries(names.map((name) => [name, `${name.toLowerCase()}-value-long-enough-for-hs256-0123456789`]))
}

async function seedText(file: string): Promise<string> {
  return readFile(join(SEEDS, file), 'utf8')
}

function check(args: string[], env: Env) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  )
}

const isDoc = (value: unknown): value is Doc => value !== null && typeof value === 'object' && !Array.isArray(value)

/** `over` wins; mappings merge key by key; the README's `...` (an elided rest) is dropped. */
function merge(under: Doc, over: Doc): Doc {
  const out: Doc = { ...under }
  for (const [key, value] of Object.entries(over)) {
    if (key === '...') continue
    const below = out[key]
    out[key] = isDoc(below) && isDoc(value) ? merge(below, value) : isDoc(value) ? merge({}, value) : value
  }
  return out
}

/** The fragment inside a minimal valid config. */
function embed(seed: Seed, fragment: Doc): Doc {
  const base: Doc = { buckets: [minimalBucket('base')], ...seed.base }
  if (seed.kind === 'top-level') return merge(base, fragment)
  if (seed.kind === 'bucket') {
    const bucket = merge({ ...minimalBucket('base'), auth: { enabled: true, jwt: { secret: SECRET } } }, fragment)
    return { ...base, buckets: [bucket] }
  }
  const buckets = (fragment.buckets as Doc[]).map((b) => merge(minimalBucket(String(b.name)), b))
  return { ...base, buckets }
}

describe("Yatagarasu's README examples", () => {
  it('has a fixture for every YAML block of the README, and checks every fixture', async () => {
    const readme = await readFile(README, 'utf8')
    const blocks = [...readme.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1] as string)
    const fixtures = (await readdir(SEEDS)).filter((f) => f.endsWith('.yaml')).sort()
    const bodies = new Map<string, string>()
    for (const file of fixtures) {
      const [header, ...rest] = (await seedText(file)).split('\n')
      assert.ok(header?.startsWith(HEADER), `${file} starts with "${HEADER}"`)
      bodies.set(rest.join('\n'), file)
    }
    assert.equal(blocks.length, 11)
    const missing = blocks.filter((block) => !bodies.has(block))
    assert.deepEqual(missing, [], 'README blocks without a fixture (a fixture is the block, byte for byte, after its header line)')
    assert.equal(fixtures.length, blocks.length, 'one fixture per block')
    assert.deepEqual(fixtures, Object.keys(SEEDS_CHECKED).sort(), 'every fixture is checked below')
  })

  for (const [file, seed] of Object.entries(SEEDS_CHECKED)) {
    if (seed.kind === 'complete') {
      it(`${file}: yatagarasu --check accepts it as it is`, async () => {
        const env = envFor(await seedText(file))
        const { code, stdout, stderr } = await check(['--check', '--config', join(SEEDS, file)], env)
        assert.equal(code, 0, stderr)
        assert.match(stdout, new RegExp(`${file.replace(/\./g, '\\.')} is valid`))
        const config = await loadConfig(join(SEEDS, file), env)
        // Warnings reach --check's output, one line each, naming the file and key.
        assert.deepEqual(
          stderr.split('\n').filter((line) => line !== ''),
          config.warnings.map((w) => `warning in ${join(SEEDS, file)}: ${w.path}: ${w.message}`)
        )
        seed.check(config)
      })
    } else {
      it(`${file}: accepted inside a minimal config`, async () => {
        const text = await seedText(file)
        let doc = embed(seed, parse(text) as Doc)
        if (file === 'server-https.yaml') {
          // The README's placeholder paths are refused by name (fail closed), then real files load.
          const written = join(dir, `placeholder-${file}`)
          await writeFile(written, JSON.stringify(doc))
          await assert.rejects(loadConfig(written, envFor(text)), (err: unknown) => {
            assert.ok(err instanceof ConfigError)
            assert.deepEqual(err.problems.map((p) => p.path), ['server.https.cert_path', 'server.https.key_path'])
            assert.match(err.message, /cannot read \/path\/to\/cert\.pem \(no such file\)/)
            return true
          })
          doc = merge(doc, { server: { https: { cert_path: tls.cert, key_path: tls.key } } })
        }
        const written = join(dir, file)
        await writeFile(written, JSON.stringify(doc))
        seed.check(await loadConfig(written, envFor(text)))
      })
    }
  }
})
