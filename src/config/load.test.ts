import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError, loadConfig, parseConfig, type Env } from './load.ts'

const FIXTURES = join(import.meta.dirname, '../../test/support/fixtures/config')
const fixture = (name: string) => join(FIXTURES, name)

async function problemsOf(name: string, env: Env = {}): Promise<string> {
  try {
    await loadConfig(fixture(name), env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`)
    assert.ok(err.message.startsWith(`invalid configuration in ${fixture(name)}:`), err.message)
    return err.message
  }
  assert.fail(`${name} should not load`)
}

async function problemsFromText(yaml: string): Promise<string> {
  try {
    await parseConfig(yaml, '/etc/yatagarasu/config.yaml', {})
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`)
    return err.message
  }
  assert.fail('the configuration should not load')
}

describe('loadConfig', () => {
  it('loads Yatagarasu’s basic example and normalizes its bearer header spelling', async () => {
    const config = await loadConfig(fixture('yatagarasu-basic.yaml'), {
      AWS_ACCESS_KEY_PRODUCTS: 'AKIA1',
      AWS_SECRET_KEY_PRODUCTS: 'secret1',
      AWS_ACCESS_KEY_PRIVATE: 'AKIA2',
      AWS_SECRET_KEY_PRIVATE: 'secret2',
      JWT_SECRET: 'a-very-long-secret-of-at-least-32-bytes',
    })
    assert.equal(config.server.host, '0.0.0.0')
    assert.equal(config.server.port, 8080)
    assert.deepEqual(config.buckets.map((b) => b.path_prefix), ['/products', '/private'])
    assert.equal(config.buckets[0]?.auth, null)
    const auth = config.buckets[1]?.auth
    assert.deepEqual(auth?.token_sources, [{ type: 'bearer' }])
    assert.deepEqual(auth?.algorithms, ['HS256'])
    assert.deepEqual(auth?.claims, [{ claim: 'role', operator: 'equals', value: 'admin' }])
    assert.equal(config.buckets[1]?.backend.replicas[0]?.secret_key, 'secret2')
    assert.ok(Object.isFrozen(config.buckets[1]))
  })

  it('substitutes ${VAR:-default}, coerces numbers and normalizes a trailing slash', async () => {
    const config = await loadConfig(fixture('env-defaults.yaml'), {
      SHUTDOWN_SECONDS: '7',
      MEDIA_SECRET: 'pa:ss#word: {not yaml}',
    })
    assert.equal(config.server.host, '127.0.0.1')
    assert.equal(config.server.port, 9000)
    assert.equal(config.server.shutdown_timeout_seconds, 7)
    assert.equal(config.buckets[0]?.backend.replicas[0]?.bucket, 'media-default')
    assert.equal(config.buckets[0]?.backend.replicas[0]?.secret_key, 'pa:ss#word: {not yaml}')
    assert.equal(config.buckets[0]?.path_prefix, '/media')
  })

  it('lets the global jwt block apply to a bucket without its own', async () => {
    const config = await loadConfig(fixture('global-jwt.yaml'))
    const auth = config.buckets[0]?.auth
    assert.deepEqual(auth?.algorithms, ['HS384'])
    assert.deepEqual(auth?.token_sources, [{ type: 'bearer' }, { type: 'query', name: 'token' }])
    assert.equal(auth?.claims[0]?.operator, 'in')
  })

  it('names an unknown key with its full path', async () => {
    assert.match(await problemsOf('unknown-key.yaml'), /buckets\[0\]\(media\)\.s3\.regoin: unknown key/)
  })

  it('names a missing environment variable and the key that needs it', async () => {
    assert.match(
      await problemsOf('missing-env.yaml'),
      /buckets\[0\]\(media\)\.s3\.secret_key: environment variable MEDIA_SECRET_KEY is not set/
    )
  })

  it('rejects a duplicate prefix, naming both buckets', async () => {
    assert.match(
      await problemsOf('duplicate-prefix.yaml'),
      /buckets\[1\]\(two\)\.path_prefix: "\/media" is already used by buckets\[0\]/
    )
  })

  it('rejects a prefix without a leading slash', async () => {
    assert.match(await problemsOf('bad-prefix.yaml'), /path_prefix: "media" must start with "\/"/)
  })

  it('rejects a prefix that collides with the proxy’s own endpoints', async () => {
    assert.match(await problemsOf('reserved-prefix.yaml'), /collides with the proxy's own endpoint \/health/)
  })

  it('rejects an HMAC secret shorter than 32 bytes', async () => {
    assert.match(await problemsOf('short-hs-secret.yaml'), /auth\.jwt\.secret: must be at least 32 bytes/)
  })

  it('refuses auth.enabled without any verifier (never fails open)', async () => {
    assert.match(await problemsOf('auth-without-verifier.yaml'), /buckets\[0\]\(private\)\.auth: auth\.enabled is true but/)
  })

  it('names every malformed address in trusted_proxies and ip_filter lists', async () => {
    const problems = await problemsOf('bad-cidr.yaml')
    assert.match(problems, /server\.trusted_proxies\[1\]: "not-an-ip" is not an IP address or CIDR range/)
    assert.match(problems, /ip_filter\.allowlist\[0\]: "10\.0\.0\.0\/33" is not an IP address or CIDR range/)
  })

  it('loads the traffic limits in Yatagarasu’s spelling (s3.rate_limit, burst defaulting to the rate)', async () => {
    const config = await loadConfig(fixture('operations.yaml'))
    assert.deepEqual(config.server.rate_limit, {
      global: { requests_per_second: 1000, burst: 1000 },
      per_ip: { requests_per_second: 10, burst: 20 },
      per_user: { requests_per_second: 5, burst: 5 },
    })
    assert.deepEqual(config.server.trusted_proxies, ['10.0.0.0/8', 'fd00::/8'])
    assert.equal(config.server.max_concurrent_requests, 500)
    assert.deepEqual(config.server.ip_filter, { allowlist: [], blocklist: ['192.0.2.0/24'] })
    const bucket = config.buckets[0]
    assert.deepEqual(bucket?.rate_limit, { requests_per_second: 500, burst: 500 })
    assert.deepEqual(bucket?.ip_filter, { allowlist: ['2001:db8::/32', '203.0.113.7'], blocklist: [] })
    assert.equal(bucket?.force_download, true)
  })

  it('refuses https without readable certificate files, naming the key', async () => {
    const problems = await problemsFromText(`server:\n  https: { enabled: true, cert_path: /nonexistent/cert.pem }\nbuckets:\n  - { name: a, path_prefix: /a, s3: { bucket: a } }\n`)
    assert.match(problems, /server\.https\.cert_path: cannot read \/nonexistent\/cert\.pem \(no such file\)/)
    assert.match(problems, /server\.https\.key_path: is required when https\.enabled is true/)
  })

  it('loads Yatagarasu’s High Availability example: replicas in priority order, breaker settings', async () => {
    const env = Object.fromEntries(
      ['AWS_ACCESS_KEY', 'AWS_SECRET_KEY', 'AWS_ACCESS_KEY_US_WEST', 'AWS_SECRET_KEY_US_WEST', 'AWS_ACCESS_KEY_EU', 'AWS_SECRET_KEY_EU', 'AWS_ACCESS_KEY_US_EAST', 'AWS_SECRET_KEY_US_EAST'].map((k) => [k, `v-${k}`])
    )
    const config = await loadConfig(fixture('yatagarasu-ha.yaml'), env)
    const backend = config.buckets[0]?.backend
    assert.deepEqual(backend?.replicas.map((r) => [r.name, r.bucket, r.region, r.timeout]), [
      ['primary-us-west', 'products-us-west', 'us-west-2', 5],
      ['backup-us-east', 'products-us-east', 'us-east-1', 5],
      ['backup-eu-central', 'products-eu', 'eu-central-1', 10],
    ])
    assert.equal(backend?.replicas[1]?.secret_key, 'v-AWS_SECRET_KEY_US_EAST')
    assert.deepEqual(backend?.circuit_breaker, { failure_threshold: 5, success_threshold: 2, timeout_seconds: 30, half_open_max_requests: 1 })
    assert.equal(backend?.health_check.interval_seconds, 10)
  })

  it('fills a replica’s missing fields from the bucket’s s3 block, and a single backend is one replica', async () => {
    const config = await parseConfig(
      `buckets:
  - name: a
    path_prefix: /a
    s3:
      bucket: shared
      region: eu-west-1
      access_key: AK
      secret_key: SK
      timeout: 12
      replicas:
        - { name: one, priority: 1, endpoint: "http://one.test" }
        - { name: two, priority: 2, bucket: other, access_key: AK2, secret_key: SK2 }
  - name: b
    path_prefix: /b
    s3: { bucket: solo }
`,
      'inline.yaml'
    )
    const [one, two] = config.buckets[0]?.backend.replicas ?? []
    assert.deepEqual([one?.bucket, one?.region, one?.access_key, one?.endpoint, one?.timeout, one?.max_attempts], ['shared', 'eu-west-1', 'AK', 'http://one.test', 12, 1])
    assert.deepEqual([two?.bucket, two?.access_key, two?.secret_key, two?.endpoint], ['other', 'AK2', 'SK2', undefined])
    assert.equal(config.buckets[0]?.backend.circuit_breaker?.failure_threshold, 5, 'a replica set always has breakers')
    const solo = config.buckets[1]?.backend
    assert.deepEqual(solo?.replicas.map((r) => r.name), ['primary'])
    assert.equal(solo?.circuit_breaker, null, 'a single backend without circuit_breaker is always tried')
  })

  it('names the key of a bad replica set', async () => {
    const problems = async (s3: string) => {
      try {
        await parseConfig(`buckets:\n  - name: a\n    path_prefix: /a\n    s3:\n${s3}`, 'inline.yaml')
      } catch (err) {
        return String((err as Error).message)
      }
      assert.fail('should not load')
    }
    assert.match(
      await problems('      bucket: x\n      replicas:\n        - { name: r, priority: 1 }\n        - { name: r, priority: 2 }\n'),
      /buckets\[0\]\(a\)\.s3\.replicas\[1\]\.name: "r" is already used by replicas\[0\]/
    )
    assert.match(
      await problems('      bucket: x\n      replicas:\n        - { name: r1, priority: 1 }\n        - { name: r2, priority: 1 }\n'),
      /buckets\[0\]\(a\)\.s3\.replicas\[1\]\.priority: 1 is already used by replicas\[0\]/
    )
    assert.match(await problems('      replicas:\n        - { name: r1, priority: 1 }\n'), /buckets\[0\]\(a\)\.s3\.replicas\[0\]\.bucket: is required/)
    assert.match(await problems('      bucket: x\n      hedge_after_ms: 50\n'), /buckets\[0\]\(a\)\.s3\.hedge_after_ms: needs at least two replicas/)
  })

  it('rejects a document that is not a mapping', async () => {
    assert.match(await problemsOf('not-a-mapping.yaml'), /the document must be a mapping/)
  })

  it('names the file when it cannot be read', async () => {
    await assert.rejects(loadConfig(fixture('does-not-exist.yaml')), /cannot read the file \(no such file\)/)
  })

  it('reports YAML syntax errors', async () => {
    await assert.rejects(parseConfig('buckets: [\n', 'broken.yaml'), /invalid configuration in broken\.yaml:\n  YAML:/)
  })
})

describe('per-bucket cache budgets (buckets[].cache.max_size)', () => {
  const yaml = (buckets: string, cache = 'cache: { enabled: true, memory: { max_size: 64MB }, disk: { dir: /var/cache/y, max_size: 1GB } }') =>
    `${cache}\nbuckets:\n${buckets}`
  const bucket = (name: string, cache = '') =>
    `  - name: ${name}\n    path_prefix: /${name.replace(/\//g, '-')}\n    s3: { bucket: ${name.replace(/\//g, '-')} }\n${cache === '' ? '' : `    cache: ${cache}\n`}`
  const load = (text: string) => parseConfig(text, '/etc/yatagarasu/config.yaml', {})

  it('reads a human size into the bucket and the cache budgets, with no warning when it fits', async () => {
    const config = await load(yaml(bucket('media', '{ max_size: 16MB }') + bucket('docs')))
    assert.equal(config.buckets[0]?.cache?.max_bytes, 16 * 1024 ** 2)
    assert.equal(config.buckets[1]?.cache?.max_bytes, null)
    assert.deepEqual(config.cache?.budgets, { media: 16 * 1024 ** 2 })
    assert.deepEqual(config.warnings, [])
  })

  it('warns when a budget is not below a tier, and names the buckets left without room', async () => {
    const config = await load(yaml(bucket('media', '{ max_size: "1GB" }') + bucket('docs')))
    assert.deepEqual(config.warnings, [
      {
        path: 'buckets[0](media).cache.max_size',
        message: '1 GiB is not less than cache.memory.max_size (64 MiB): in the memory tier this bucket may take all of it',
      },
      {
        path: 'cache.memory.max_size',
        message: "the buckets' cache.max_size budgets take all of it; docs (without a budget) get no room in the memory tier",
      },
      {
        path: 'buckets[0](media).cache.max_size',
        message: '1 GiB is not less than cache.disk.max_size (1 GiB): in the disk tier this bucket may take all of it',
      },
      {
        path: 'cache.disk.max_size',
        message: "the buckets' cache.max_size budgets take all of it; docs (without a budget) get no room in the disk tier",
      },
    ])
  })

  it('warns when the budgets add up to more than a tier (budgeted buckets then evict each other)', async () => {
    const config = await load(yaml(bucket('media', '{ max_size: 40MB }') + bucket('docs', '{ max_size: 30MB }')))
    assert.deepEqual(config.warnings, [
      {
        path: 'cache.memory.max_size',
        message: "the buckets' cache.max_size budgets add up to 70 MiB, more than 64 MiB: budgeted buckets can evict each other's entries in the memory tier",
      },
    ])
  })

  it('warns when a budget cannot apply: the bucket does not cache, or there is only a Redis tier', async () => {
    const off = await load(yaml(bucket('media', '{ enabled: false, max_size: 1MB }') + bucket('docs')))
    assert.deepEqual(off.warnings, [
      { path: 'buckets[0](media).cache.max_size', message: 'has no effect: this bucket does not cache (cache.enabled is not true)' },
    ])
    const redisOnly = await load(yaml(bucket('media', '{ max_size: 1MB }'), 'cache: { enabled: true, layers: [redis], redis: { url: "redis://127.0.0.1:6379" } }'))
    assert.match(redisOnly.warnings[0]?.message ?? '', /has no effect: the cache has no memory or disk tier \(a Redis tier is bounded by Redis's own maxmemory\)/)
  })

  it('refuses a budget that is not a positive size', async () => {
    const problems = (value: string) => problemsFromText(yaml(bucket('media', `{ max_size: ${value} }`)))
    assert.match(await problems('"lots"'), /buckets\[0\]\(media\)\.cache\.max_size: "lots" is not a size/)
    assert.match(await problems('"0MB"'), /buckets\[0\]\(media\)\.cache\.max_size: must be greater than 0/)
  })

  it('refuses bucket names whose cache keys a budget could not tell apart', async () => {
    const message = await problemsFromText(yaml(bucket('media', '{ max_size: 1MB }') + bucket('media/thumbs')))
    assert.match(message, /buckets\[1\]\(media\/thumbs\)\.name: "media\/thumbs" starts with "media\/" \(buckets\[0\]\)/)
  })
})

describe('the shipped config.yaml', () => {
  it('is valid once its environment variables are set', async () => {
    const config = await loadConfig(join(import.meta.dirname, '../../config.yaml'), {
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'secret',
      JWT_SECRET: '0123456789abcdef0123456789abcdef',
    })
    assert.deepEqual(config.buckets.map((b) => b.path_prefix), ['/assets', '/private'])
    assert.equal(config.server.port, 8080)
  })
})

describe('the disk scrub (cache.disk.scrub)', () => {
  const load = (scrub: string, layers = '') =>
    parseConfig(
      `cache: { enabled: true, ${layers} disk: { dir: /var/cache/y${scrub === '' ? '' : `, scrub: ${scrub}`} } }\nbuckets:\n  - name: media\n    path_prefix: /media\n    s3: { bucket: media }\n`,
      '/etc/yatagarasu/config.yaml',
      {}
    )

  it('is on with Jay’s defaults when a disk tier is configured, and each key can be set', async () => {
    assert.deepEqual((await load('')).cache?.disk_scrub, { enabled: true, interval_seconds: 21600, sample_rate: 0.1, max_per_run: 100, bytes_per_sec: 50 * 1024 ** 2 })
    const set = await load('{ interval_seconds: 3600, sample_rate: 1, max_per_run: 5000, bytes_per_sec: 10MB }')
    assert.deepEqual(set.cache?.disk_scrub, { enabled: true, interval_seconds: 3600, sample_rate: 1, max_per_run: 5000, bytes_per_sec: 10 * 1024 ** 2 })
    assert.equal((await load('{ bytes_per_sec: 0 }')).cache?.disk_scrub?.bytes_per_sec, 0)
    assert.equal((await load('{ bytes_per_sec: "0" }')).cache?.disk_scrub?.bytes_per_sec, 0)
  })

  it('off (enabled: false) keeps its limits for the passes an admin asks for; no disk layer, no scrub', async () => {
    assert.deepEqual((await load('{ enabled: false, bytes_per_sec: 1MB }')).cache?.disk_scrub, { enabled: false, interval_seconds: 21600, sample_rate: 0.1, max_per_run: 100, bytes_per_sec: 1024 ** 2 })
    assert.equal((await load('', 'layers: [memory],')).cache?.disk_scrub, null)
  })

  it('names the key and the reason of a bad value', async () => {
    assert.match(await problemsFromText(`cache: { enabled: true, disk: { dir: /d, scrub: { sample_rate: 1.5 } } }\nbuckets: []\n`), /cache\.disk\.scrub\.sample_rate: must be at most 1/)
    assert.match(await problemsFromText(`cache: { enabled: true, disk: { dir: /d, scrub: { sample_rate: 0 } } }\nbuckets: []\n`), /cache\.disk\.scrub\.sample_rate: must be greater than 0/)
    assert.match(await problemsFromText(`cache: { enabled: true, disk: { dir: /d, scrub: { every: 5 } } }\nbuckets: []\n`), /cache\.disk\.scrub.*every/)
    for (const rate of ['fast', '-1', '1.5', '"0.5"']) {
      const problems = await problemsFromText(`cache: { enabled: true, disk: { dir: /d, scrub: { bytes_per_sec: ${rate} } } }\nbuckets: []\n`)
      assert.match(problems, /cache\.disk\.scrub\.bytes_per_sec: must be 0 \(no limit\) or a size such as 50MB/, rate)
    }
    // Longer than a timer can wait: it would fire at once, again and again.
    assert.match(await problemsFromText(`cache: { enabled: true, disk: { dir: /d, scrub: { interval_seconds: 2592000 } } }\nbuckets: []\n`), /cache\.disk\.scrub\.interval_seconds: must be at most 2073600 \(24 days\)/)
  })
})
