// `npm run test:opa`: builds policies/authz.rego with a real `opa` binary (when one is on PATH),
// runs its Rego unit tests, and sends the same decisions through the proxy as the wasm ABI test
// module does in `npm test`. Without `opa` it says so and exits 0: no opa binary can be installed
// from the registries CI uses, so this check runs where one is available.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { bucketYaml, startTestProxy } from '../support/proxy.ts'
import { send } from '../support/http.ts'
import { startS3 } from '../support/s3.ts'

const root = join(import.meta.dirname, '../..')
try {
  execFileSync('opa', ['version'], { stdio: 'ignore' })
} catch {
  console.log('test:opa: no `opa` binary on PATH; install OPA (https://www.openpolicyagent.org) to run this check')
  process.exit(0)
}

execFileSync('opa', ['test', join(root, 'policies'), '-v'], { stdio: 'inherit' })
const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-real-opa-'))
const bundle = join(dir, 'bundle.tar.gz')
execFileSync('opa', ['build', '-t', 'wasm', '-e', 'yatagarasu/authz/allow', join(root, 'policies/authz.rego'), '-o', bundle], { stdio: 'inherit' })

const secret = 'real-opa-secret-that-is-long-enough-for-hs256'
const s3 = await startS3()
await s3.createBucket('department-files')
await s3.put('department-files', 'finance/q3.pdf', 'finance numbers')
await s3.put('department-files', 'sales/q3.pdf', 'sales numbers')
const proxy = await startTestProxy(`
server:
  address: "127.0.0.1:0"
buckets:
${bucketYaml({
  name: 'files',
  prefix: '/files',
  bucket: 'department-files',
  endpoint: s3.endpoint,
  extra: `    auth: { enabled: true, jwt: { secret: "${secret}" } }
    authorization: { type: opa, policy_file: "${bundle}", entrypoint: yatagarasu/authz/allow }`,
})}
`)
const get = async (path: string, claims: Record<string, unknown>) => {
  const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(secret))
  return (await send(proxy.url, path, { headers: { authorization: `Bearer ${token}` } })).status
}
try {
  assert.equal(await get('/files/sales/q3.pdf', { roles: ['admin'] }), 200)
  assert.equal(await get('/files/finance/q3.pdf', { department: 'finance' }), 200)
  assert.equal(await get('/files/sales/q3.pdf', { department: 'finance' }), 403)
  assert.equal(await get('/files/finance/q3.pdf', { department: 'fin' }), 403)
  console.log('test:opa: 4 passed, 0 failed')
} finally {
  await proxy.stop()
  await s3.stop()
  await rm(dir, { recursive: true, force: true })
}
