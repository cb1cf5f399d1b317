// The s3_api block: what loads, and what is refused with the file, key and reason.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError, parseConfig } from '../../src/config/load.ts'

const FILE = '/etc/yatagarasu/config.yaml'
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+x'
const BUCKETS = `
buckets:
  - name: media
    path_prefix: /media
    s3: { bucket: backend-media, endpoint: "http://127.0.0.1:9", access_key: a, secret_key: b }
  - name: private
    path_prefix: /private
    s3: { bucket: backend-private, endpoint: "http://127.0.0.1:9", access_key: a, secret_key: b }
    auth: { enabled: true, jwt: { secret: "a-very-long-secret-of-at-least-32-bytes", algorithm: HS256 } }
`

async function problems(yaml: string, env: Record<string, string> = {}): Promise<string> {
  try {
    await parseConfig(yaml, FILE, env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    assert.ok(err.message.startsWith(`invalid configuration in ${FILE}:`), err.message)
    return err.message
  }
  assert.fail('the configuration should not load')
}

describe('s3_api configuration', () => {
  it('is off unless enabled, with its defaults when on', async () => {
    assert.equal((await parseConfig(BUCKETS, FILE, {})).s3_api, null)
    assert.equal((await parseConfig(`${BUCKETS}s3_api: { credentials: [] }\n`, FILE, {})).s3_api, null)
    const on = await parseConfig(`${BUCKETS}s3_api: { enabled: true }\n`, FILE, {})
    assert.deepEqual(on.s3_api, { host: '0.0.0.0', port: 9000, domain: undefined, region: 'us-east-1', credentials: [], list_cache_seconds: 0, sts: null })
  })

  it('reads credentials with a secret from the environment, prefixes and claims', async () => {
    const config = await parseConfig(
      `${BUCKETS}s3_api:
  enabled: "\${S3_API_ON}"
  address: 127.0.0.1:9100
  domain: S3.Example.com
  region: eu-west-1
  list_cache_seconds: 5
  credentials:
    - access_key_id: READER1
      secret_access_key: \${READER_SECRET}
      buckets: [media, private]
      prefixes: [public/, team/a/]
      claims: { sub: reader1, role: viewer }
`,
      FILE,
      { S3_API_ON: 'true', READER_SECRET: SECRET }
    )
    assert.deepEqual(config.s3_api, {
      host: '127.0.0.1',
      port: 9100,
      domain: 's3.example.com',
      region: 'eu-west-1',
      list_cache_seconds: 5,
      sts: null,
      credentials: [{ access_key_id: 'READER1', secret_access_key: SECRET, buckets: ['media', 'private'], prefixes: ['public/', 'team/a/'], claims: { sub: 'reader1', role: 'viewer' } }],
    })
    assert.ok(Object.isFrozen(config.s3_api?.credentials[0]))
  })

  it('refuses a short secret, a malformed key id and unknown keys, naming each', async () => {
    const message = await problems(`${BUCKETS}s3_api:
  enabled: true
  credentials:
    - { access_key_id: K1, secret_access_key: short, buckets: [media] }
    - { access_key_id: READER2, secret_access_key: "${SECRET}", buckets: [media, nope] }
    - { access_key_id: READER2, secret_access_key: "${SECRET}", buckets: [media], region: x }
`)
    assert.match(message, /s3_api\.credentials\[0\]\.access_key_id: must be 3-128 letters/)
    assert.match(message, /s3_api\.credentials\[0\]\.secret_access_key: must be at least 40 characters/)
    assert.match(message, /s3_api\.credentials\[2\].*region/)
  })

  it('refuses a credential naming a bucket that is not configured, and a repeated key id', async () => {
    const message = await problems(`${BUCKETS}s3_api:
  enabled: true
  credentials:
    - { access_key_id: READER2, secret_access_key: "${SECRET}", buckets: [media, nope] }
    - { access_key_id: READER2, secret_access_key: "${SECRET}", buckets: [media] }
`)
    assert.match(message, /s3_api\.credentials\[0\]\.buckets\[1\]: "nope" is not the name of a configured bucket/)
    assert.match(message, /s3_api\.credentials\[1\]\.access_key_id: "READER2" is already used by s3_api\.credentials\[0\]/)
  })

  it('refuses a bad address, the main listener’s port, a bad domain and a bucket name S3 clients cannot use', async () => {
    assert.match(await problems(`${BUCKETS}s3_api: { enabled: true, address: "nowhere" }\n`), /s3_api\.address: "nowhere" must be host:port/)
    assert.match(await problems(`${BUCKETS}s3_api: { enabled: true, address: "0.0.0.0:8080" }\n`), /s3_api\.address: port 8080 is already server\.address's/)
    assert.match(await problems(`${BUCKETS}s3_api: { enabled: true, domain: "bad domain" }\n`), /s3_api\.domain: "bad domain" must be a DNS name/)
    const upper = BUCKETS.replace('name: media', 'name: Media_Files')
    assert.match(
      await problems(`${upper}s3_api: { enabled: true, credentials: [{ access_key_id: READER1, secret_access_key: "${SECRET}", buckets: [Media_Files] }] }\n`),
      /s3_api\.credentials\[0\]\.buckets\[0\]: "Media_Files" cannot be an S3 bucket name/
    )
  })

  it('refuses an enabled listener that no request could read through', async () => {
    const onlyPrivate = BUCKETS.replace(/  - name: media[\s\S]*?(?=  - name: private)/, '')
    assert.match(await problems(`${onlyPrivate}s3_api: { enabled: true }\n`), /s3_api\.credentials: is empty and every bucket requires authentication/)
  })
})

describe('s3_api warnings', () => {
  it('gives no warning for an enabled listener (it is served)', async () => {
    const config = await parseConfig(`${BUCKETS}s3_api: { enabled: true, address: "127.0.0.1:9100" }\n`, FILE, {})
    assert.deepEqual(config.warnings.filter((w) => w.path.startsWith('s3_api')), [])
  })
})
