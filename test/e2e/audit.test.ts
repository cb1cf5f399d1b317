// The audit log through the running proxy: the record's fields for allowed and refused requests,
// no token anywhere, size rotation, RFC 5424 syslog over UDP, the S3 batch export into an audit
// bucket in s3rver, and an unwritable path that does not break serving.
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, describe, it } from 'node:test'
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3'
import { SignJWT } from 'jose'
import { eventually } from '../support/eventually.ts'
import { send } from '../support/http.ts'
import { bucketYaml, startTestProxy, type TestProxy } from '../support/proxy.ts'
import { SECRET_KEY, startS3, type TestS3 } from '../support/s3.ts'

const JWT_SECRET = 'audit-test-secret-that-is-long-enough!'
let s3: TestS3
let dir: string
let proxy: TestProxy | undefined
let token: string

before(async () => {
  s3 = await startS3()
  await s3.createBucket('docs')
  await s3.createBucket('audit-trail')
  await s3.put('docs', 'report.txt', 'quarterly numbers')
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-audit-'))
  token = await new SignJWT({ sub: 'alice', jti: 'token-42' })
    .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(JWT_SECRET))
})

afterEach(async () => {
  await proxy?.stop()
  proxy = undefined
})

after(async () => {
  await s3.stop()
  await rm(dir, { recursive: true, force: true })
})

function configYaml(audit: string): string {
  return `
server:
  address: "127.0.0.1:0"
audit_log:
${audit}
buckets:
${bucketYaml({
  name: 'private',
  prefix: '/private',
  bucket: 'docs',
  endpoint: s3.endpoint,
  extra: `    auth:
      enabled: true
      jwt:
        secret: "${JWT_SECRET}"
        token_sources: [{ type: bearer }, { type: query, name: token }]`,
})}
`
}

async function recordsIn(file: string, count: number): Promise<Array<Record<string, unknown>>> {
  return eventually(async () => {
    const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '')
    return lines.length >= count ? lines.map((l) => JSON.parse(l) as Record<string, unknown>) : undefined
  }, `${count} audit records in ${file}`)
}

describe('audit log', () => {
  it('writes one record per request with who, what, outcome and why, and never the token', async () => {
    const file = join(dir, 'fields', 'audit.log')
    proxy = await startTestProxy(configYaml(`  enabled: true\n  outputs: [file]\n  file: { path: ${file} }`))
    const ok = await send(proxy.url, '/private/report.txt', {
      headers: { authorization: `Bearer ${token}`, range: 'bytes=0-8', 'user-agent': 'audit-test/1', referer: `https://app.test/page?token=${token}` },
    })
    assert.equal(ok.status, 206)
    const viaQuery = await send(proxy.url, `/private/report.txt?token=${token}`)
    assert.equal(viaQuery.status, 200)
    const refused = await send(proxy.url, '/private/report.txt', { headers: { authorization: 'Bearer not.a.jwt' } })
    assert.equal(refused.status, 401)

    const [allowed, queried, denied] = await recordsIn(file, 3)
    assert.deepEqual(
      { ...allowed, timestamp: undefined, duration_ms: undefined, request_id: undefined },
      {
        timestamp: undefined,
        request_id: undefined,
        client_ip: '127.0.0.1',
        user: 'alice',
        jti: 'token-42',
        kid: 'k1',
        bucket: 'private',
        key: 'report.txt',
        method: 'GET',
        range: 'bytes=0-8',
        status: 206,
        bytes: 9,
        complete: true,
        duration_ms: undefined,
        auth: 'allowed',
        replica: 'primary',
        user_agent: 'audit-test/1',
        referer: 'https://app.test/page',
      }
    )
    assert.equal(allowed?.request_id, ok.headers['x-request-id'])
    assert.ok(!Number.isNaN(Date.parse(String(allowed?.timestamp))))
    assert.equal(queried?.user, 'alice')
    assert.deepEqual([denied?.auth, denied?.auth_reason, denied?.error, denied?.status, denied?.user], ['denied', 'malformed', 'AUTH_TOKEN_INVALID', 401, undefined])
    const written = await readFile(file, 'utf8')
    assert.ok(!written.includes(token), 'the token never reaches the audit file')
    assert.ok(!written.includes(token.split('.')[2] as string), 'not even its signature')
  })

  it('rotates the file at max_file_size_mb, keeping max_backup_files', async () => {
    const rotating = join(dir, 'rotate')
    const file = join(rotating, 'audit.log')
    // ~1 KiB per file: a few records each.
    proxy = await startTestProxy(configYaml(`  enabled: true\n  outputs: [file]\n  file: { path: ${file}, max_file_size_mb: 0.001, max_backup_files: 2 }`))
    for (let i = 0; i < 20; i++) await send(proxy.url, '/private/report.txt', { headers: { authorization: `Bearer ${token}` } })
    const names = await eventually(async () => {
      const found = (await readdir(rotating)).sort()
      return found.includes('audit.log.2') ? found : undefined
    }, 'rotated files')
    assert.deepEqual(names, ['audit.log', 'audit.log.1', 'audit.log.2'])
    for (const name of names) {
      const size = (await readFile(join(rotating, name))).length
      assert.ok(size <= 2048, `${name} is ${size} bytes`)
    }
  })

  it('sends RFC 5424 lines to a syslog server over UDP', async () => {
    const server = dgram.createSocket('udp4')
    const received: string[] = []
    server.on('message', (message) => received.push(message.toString('utf8')))
    await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    try {
      proxy = await startTestProxy(configYaml(`  enabled: true\n  outputs: [syslog]\n  syslog: { address: "127.0.0.1:${port}", protocol: udp, facility: local0 }`))
      await send(proxy.url, '/private/report.txt', { headers: { authorization: `Bearer ${token}` } })
      const line = await eventually(async () => received[0], 'a syslog datagram')
      // <PRI = local0 (16) * 8 + informational (6)>VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG
      const match = /^<134>1 (\S+) \S+ yatagarasu \d+ audit - (\{.*\})$/.exec(line)
      assert.ok(match, line)
      assert.ok(!Number.isNaN(Date.parse(match[1] as string)))
      assert.equal((JSON.parse(match[2] as string) as { user: string }).user, 'alice')
    } finally {
      server.close()
    }
  })

  it('exports batches as JSON-lines objects to the audit bucket', async () => {
    proxy = await startTestProxy(
      configYaml(`  enabled: true
  outputs: [s3]
  s3_export:
    bucket: audit-trail
    endpoint: ${s3.endpoint}
    access_key: S3RVER
    secret_key: ${JSON.stringify(SECRET_KEY)}
    path_prefix: proxy-a/
    export_interval_seconds: 0.2`)
    )
    await send(proxy.url, '/private/report.txt', { headers: { authorization: `Bearer ${token}` } })
    await send(proxy.url, '/private/missing.txt', { headers: { authorization: `Bearer ${token}` } })
    const keys = await eventually(async () => {
      const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: 'audit-trail', Prefix: 'proxy-a/' }))
      const found = (listed.Contents ?? []).map((o) => o.Key as string)
      return found.length > 0 ? found : undefined
    }, 'an audit object')
    assert.match(keys[0] as string, /^proxy-a\/\d{4}\/\d{2}\/\d{2}\/.+\.jsonl$/)
    const lines: Array<{ key: string; status: number }> = []
    for (const key of keys) {
      const object = await s3.client.send(new GetObjectCommand({ Bucket: 'audit-trail', Key: key }))
      const text = await object.Body?.transformToString()
      for (const line of (text ?? '').split('\n').filter((l) => l !== '')) lines.push(JSON.parse(line))
    }
    assert.deepEqual(lines.map((l) => [l.key, l.status]), [['report.txt', 200], ['missing.txt', 404]])
  })

  it('keeps serving when the audit file cannot be written, and says why once', async () => {
    const blocker = join(dir, 'not-a-directory')
    await writeFile(blocker, 'a file where the audit directory should be')
    proxy = await startTestProxy(configYaml(`  enabled: true\n  outputs: [file]\n  file: { path: ${join(blocker, 'audit.log')} }`))
    for (let i = 0; i < 3; i++) {
      const res = await send(proxy.url, '/private/report.txt', { headers: { authorization: `Bearer ${token}` } })
      assert.equal(res.status, 200)
      assert.equal(res.text, 'quarterly numbers')
    }
    const line = await proxy.logged((l) => l.msg === 'audit output failed; its records are dropped')
    assert.equal(line.output, 'file')
  })
})
