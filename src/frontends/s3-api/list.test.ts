import assert from 'node:assert/strict'
import { it } from 'node:test'
import { keyInScope, scopePrefixes } from '../../auth/path-scope.ts'
import type { ListPage, ListPageRequest } from '../../ports.ts'
import type { BucketRoute } from '../../types.ts'
import type { S3Identity } from './credentials.ts'
import { listObjects, ListPageCache } from './list.ts'

/** A bucket over an in-memory key list; records the prefixes the listing asked the backend for. */
function bucketOf(keys: string[], verifier: unknown = null): { bucket: BucketRoute; asked: string[] } {
  const sorted = [...keys].sort()
  const asked: string[] = []
  const source = {
    async list(req: ListPageRequest): Promise<ListPage> {
      asked.push(req.prefix)
      const matching = sorted.filter((k) => k.startsWith(req.prefix) && k > req.after)
      const objects = matching.slice(0, req.maxKeys).map((key) => ({ key, size: 1, etag: '"x"', lastModified: new Date(0), storageClass: undefined }))
      return { objects, truncated: matching.length > req.maxKeys } as ListPage
    },
  }
  return { bucket: { name: 'files', source, verifier } as unknown as BucketRoute, asked }
}

/** A path-scoped bucket's verifier, with the scope check GETs get. */
const scopedVerifier = {
  admitClaims() {},
  listScope: (claims: Record<string, unknown>) => ({ prefixes: scopePrefixes(claims.paths), admits: (key: string) => keyInScope(key, claims.paths) }),
}

const pages = new ListPageCache(0)
const read = { signal: undefined }
const field = (body: string, name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)?.[1]
const hidden = Array.from({ length: 3000 }, (_, i) => `hr/salaries/employee-${String(i).padStart(5, '0')}.pdf`)

it('scans only a prefix-scoped credential\'s prefixes, and its marker or token never names a hidden key', async () => {
  const { bucket, asked } = bucketOf([...hidden, 'team-a/readme.txt'])
  const scoped: S3Identity = { accessKeyId: 'SCOPED', buckets: new Set(['files']), prefixes: ['team-a/'], claims: {} }
  for (const [v2, query] of [[true, 'list-type=2&max-keys=1'], [true, 'list-type=2&start-after=hr/salaries/employee-02'], [false, 'max-keys=1']] as const) {
    const body = (await listObjects(v2, new URLSearchParams(query), bucket, scoped, pages, read)).body as string
    assert.equal(field(body, 'Key'), 'team-a/readme.txt')
    assert.equal(field(body, 'IsTruncated'), 'false')
    assert.doesNotMatch(body, /employee-\d{5}/)
  }
  assert.ok(asked.every((prefix) => prefix === 'team-a/'), asked.join())
})

it('a path-scoped listing past hidden keys: v2 goes on with a sealed token, a v1 marker never names one', async () => {
  // 5,000 hidden keys: 50 backend pages of 100, past the cap of 20 twice.
  const inner = Array.from({ length: 5000 }, (_, i) => `docs/hr/employee-${String(i).padStart(5, '0')}.pdf`)
  const { bucket, asked } = bucketOf([...inner, 'docs/a.txt', 'docs/z.txt', 'other/x.txt'], scopedVerifier)
  const alice: S3Identity = { accessKeyId: 'ALICE', buckets: new Set(['files']), prefixes: [], claims: { paths: ['docs/*.txt'] } }
  // v1: reads on past the backend-page cap until it has a key to end on.
  const v1 = (await listObjects(false, new URLSearchParams('max-keys=1&marker=docs/a.txt'), bucket, alice, pages, read)).body as string
  assert.equal(field(v1, 'Key'), 'docs/z.txt')
  assert.equal(field(v1, 'IsTruncated'), 'false')
  assert.doesNotMatch(v1, /employee-\d{5}/)
  // v2: stops at the cap with an encrypted token (the position may be a hidden key), then goes on.
  const keys: string[] = []
  let token: string | undefined
  let answers = 0
  do {
    const query = `list-type=2&max-keys=1${token === undefined ? '' : `&continuation-token=${token}`}`
    const body = (await listObjects(true, new URLSearchParams(query), bucket, alice, pages, read)).body as string
    assert.doesNotMatch(body.replace(/<ContinuationToken>[^<]*<\/ContinuationToken>/, ''), /employee-\d{5}/)
    token = field(body, 'NextContinuationToken')
    if (token !== undefined) assert.doesNotMatch(Buffer.from(token, 'base64url').toString('latin1'), /employee|docs\//)
    const key = field(body, 'Key')
    if (key !== undefined) keys.push(key)
    answers++
  } while (token !== undefined && answers < 10)
  assert.deepEqual(keys, ['docs/a.txt', 'docs/z.txt'])
  assert.equal(answers, 3, 'the second answer ends, without a key, inside the hidden keys')
  assert.ok(asked.every((prefix) => prefix === 'docs/'), asked.join())
})

it('refuses a continuation token used by another credential, for another listing, or altered', async () => {
  const { bucket } = bucketOf(['a', 'b', 'c'])
  const one: S3Identity = { accessKeyId: 'ONE', buckets: new Set(['files']), prefixes: [], claims: {} }
  const two: S3Identity = { ...one, accessKeyId: 'TWO' }
  const key = Buffer.alloc(32, 1)
  const list = (identity: S3Identity, query: string, k = key) => listObjects(true, new URLSearchParams(query), bucket, identity, pages, read, k)
  const token = field((await list(one, 'list-type=2&max-keys=1')).body as string, 'NextContinuationToken') as string
  const next = (await list(one, `list-type=2&max-keys=1&continuation-token=${token}`)).body as string
  assert.equal(field(next, 'Key'), 'b')
  const refused = { code: 'InvalidArgument', status: 400 }
  await assert.rejects(list(two, `list-type=2&max-keys=1&continuation-token=${token}`, Buffer.alloc(32, 2)), refused)
  await assert.rejects(list(two, `list-type=2&max-keys=1&continuation-token=${token}`), refused)
  await assert.rejects(list(one, `list-type=2&max-keys=1&prefix=a&continuation-token=${token}`), refused)
  await assert.rejects(list(one, `list-type=2&max-keys=1&delimiter=/&continuation-token=${token}`), refused)
  const bytes = Buffer.from(token, 'base64url')
  bytes[14] = (bytes[14] as number) ^ 1
  await assert.rejects(list(one, `list-type=2&max-keys=1&continuation-token=${bytes.toString('base64url')}`), refused)
  await assert.rejects(list(one, `list-type=2&continuation-token=${Buffer.from('1:b').toString('base64url')}`), refused)
})

it('a cached page read is shared: one waiter hanging up fails only its own wait', async () => {
  let reads = 0
  const signals: AbortSignal[] = []
  let finish: (page: ListPage) => void = () => {}
  const source = {
    list(_req: ListPageRequest, options: { signal: AbortSignal | undefined }) {
      reads++
      signals.push(options.signal as AbortSignal)
      return new Promise<ListPage>((resolve, reject) => {
        finish = resolve
        options.signal?.addEventListener('abort', () => reject(new Error('backend read aborted')))
      })
    },
  }
  const bucket = { name: 'files', source } as unknown as BucketRoute
  const cache = new ListPageCache(5)
  const request = { prefix: '', after: '', maxKeys: 1000 }
  const first = new AbortController()
  const gone = cache.get(bucket, request, { signal: first.signal })
  const staying = cache.get(bucket, request, { signal: new AbortController().signal })
  first.abort()
  await assert.rejects(gone, { code: 'ORIGIN_ABORTED' })
  assert.equal(signals[0]?.aborted, false)
  finish({ objects: [], truncated: false })
  assert.deepEqual(await staying, { objects: [], truncated: false })
  assert.equal(reads, 1)
  // Every waiter gone: the backend read is abandoned.
  const last = new AbortController()
  const alone = cache.get(bucket, { ...request, after: 'x' }, { signal: last.signal })
  last.abort()
  await assert.rejects(alone, { code: 'ORIGIN_ABORTED' })
  assert.equal(signals[1]?.aborted, true)
})

it('bounds the cached pages by their size, not their number', async () => {
  const source = {
    async list(req: ListPageRequest): Promise<ListPage> {
      return { objects: Array.from({ length: req.maxKeys }, (_, i) => ({ key: `${req.after}/${i}-${'k'.repeat(80)}`, size: 1, etag: '"x"', lastModified: new Date(0), storageClass: undefined })), truncated: true } as ListPage
    },
  }
  const bucket = { name: 'files', source } as unknown as BucketRoute
  const cache = new ListPageCache(60, 4 * 1024 * 1024)
  for (let i = 0; i < 200; i++) await cache.get(bucket, { prefix: '', after: `x${i}`, maxKeys: 1000 }, read)
  assert.ok(cache.bytes > 3 * 1024 * 1024 && cache.bytes <= 4 * 1024 * 1024, `${cache.bytes} bytes held`)
})
