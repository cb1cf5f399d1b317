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

it('a path-scoped listing reads past hidden keys under its literal prefix rather than end on one', async () => {
  const inner = hidden.map((k) => `docs/${k}`)
  const { bucket, asked } = bucketOf([...inner, 'docs/a.txt', 'docs/z.txt', 'other/x.txt'], scopedVerifier)
  const alice: S3Identity = { accessKeyId: 'ALICE', buckets: new Set(['files']), prefixes: [], claims: { paths: ['docs/*.txt'] } }
  const body = (await listObjects(true, new URLSearchParams('list-type=2&max-keys=1&start-after=docs/a.txt'), bucket, alice, pages, read)).body as string
  assert.equal(field(body, 'Key'), 'docs/z.txt')
  assert.equal(field(body, 'IsTruncated'), 'false')
  const first = (await listObjects(true, new URLSearchParams('list-type=2&max-keys=1'), bucket, alice, pages, read)).body as string
  const token = field(first, 'NextContinuationToken') as string
  assert.equal(field(first, 'Key'), 'docs/a.txt')
  assert.equal(Buffer.from(token.split('.')[0] as string, 'base64url').toString(), '2:docs/a.txt')
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
  const forged = `${Buffer.from('2:b').toString('base64url')}.${token.split('.')[1]}`
  await assert.rejects(list(one, `list-type=2&max-keys=1&continuation-token=${forged}`), refused)
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
