// ListObjectsV2 and ListObjects (v1) as S3 defines them, over the backend's plain pages
// (ObjectSource.list: keys after a marker, no delimiter). The proxy owns the semantics whatever the
// backend does: prefix, delimiter grouping (CommonPrefixes), max-keys (0 included), its own opaque
// continuation tokens, marker and start-after (exclusive), encoding-type=url, fetch-owner; entries
// the credential may not read are left out. A common prefix's keys are skipped on the backend by
// restarting its listing past them, so a delimiter listing does not page through a whole subtree.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { ProxyError } from '../../errors.ts'
import type { ListedObject, ListPage, ListPageRequest, ReadOptions } from '../../ports.ts'
import type { Answer, BucketRoute } from '../../types.ts'
import type { S3Identity } from './credentials.ts'
import { S3Error } from './errors.ts'
import { listingScope, type ListingScope } from './list-scope.ts'
import { listV1Xml, listV2Xml, type ListResult } from './xml.ts'

const MAX_KEYS = 1000
/** Backend pages one request may read before it answers with what it has (truncated). */
const MAX_BACKEND_PAGES = 20
/** Sorts after every key that starts with a given prefix (in practice). */
const PAST = '\u{10FFFF}'
const OWNER = 'yatagarasu'
/** Binds anonymous listings' tokens (nothing is hidden from them; one process's tokens only). */
const ANONYMOUS_TOKEN_KEY = randomBytes(32)

/** What the listing page cache may hold, measured as below (keys count twice: UTF-16). */
export const LIST_CACHE_MAX_BYTES = 32 * 1024 * 1024

/** A backend page being read for every listing that asked for it meanwhile. */
interface Shared {
  page: Promise<ListPage>
  waiters: number
  controller: AbortController
}

/**
 * Backend pages kept for `s3_api.list_cache_seconds`, bounded by their size (LRU; dropped with the
 * generation). Listings asking for a page being read wait for that one read, which runs with its
 * own signal (the backend's own timeout bounds it): a waiter that hangs up stops only its own wait,
 * and the read is abandoned when no one waits any more.
 */
export class ListPageCache {
  readonly #pages: LRUCache<string, ListPage> | undefined
  readonly #pending = new Map<string, Shared>()
  constructor(ttlSeconds: number, maxBytes = LIST_CACHE_MAX_BYTES) {
    this.#pages = ttlSeconds > 0 ? new LRUCache<string, ListPage>({ ttl: ttlSeconds * 1000, maxSize: maxBytes, sizeCalculation: pageBytes }) : undefined
  }
  /** The size of the pages held. */
  get bytes(): number {
    return this.#pages?.calculatedSize ?? 0
  }
  get(bucket: BucketRoute, request: ListPageRequest, options: ReadOptions): Promise<ListPage> {
    const pages = this.#pages
    if (pages === undefined) return bucket.source.list(request, options)
    const id = `${bucket.name}\0${request.prefix}\0${request.after}\0${request.maxKeys}`
    const hit = pages.get(id)
    if (hit !== undefined) return Promise.resolve(hit)
    let shared = this.#pending.get(id)
    if (shared === undefined) {
      const controller = new AbortController()
      const read = bucket.source.list(request, { signal: controller.signal, servedBy: options.servedBy })
      const entry: Shared = { page: read, waiters: 0, controller }
      read.then(
        (page) => {
          if (this.#pending.get(id) !== entry) return
          this.#pending.delete(id)
          pages.set(id, page)
        },
        () => {
          if (this.#pending.get(id) === entry) this.#pending.delete(id)
        }
      )
      this.#pending.set(id, entry)
      shared = entry
    }
    return this.#wait(id, shared, options.signal)
  }

  #wait(id: string, shared: Shared, signal: AbortSignal | undefined): Promise<ListPage> {
    return new Promise<ListPage>((resolve, reject) => {
      let done = false
      const leave = (): boolean => {
        if (done) return false
        done = true
        signal?.removeEventListener('abort', onAbort)
        shared.waiters--
        return true
      }
      const onAbort = () => {
        if (!leave()) return
        reject(new ProxyError('ORIGIN_ABORTED'))
        if (shared.waiters === 0) {
          // No one waits: the read stops, and a later listing starts its own.
          if (this.#pending.get(id) === shared) this.#pending.delete(id)
          shared.controller.abort()
        }
      }
      shared.waiters++
      if (signal?.aborted === true) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      shared.page.then(
        (page) => leave() && resolve(page),
        (err: unknown) => leave() && reject(err)
      )
    })
  }
}

function pageBytes(page: ListPage): number {
  let bytes = 64
  for (const o of page.objects) bytes += 2 * (o.key.length + (o.etag?.length ?? 0)) + 96
  return bytes
}

interface Scan {
  objects: ListedObject[]
  commonPrefixes: string[]
  truncated: boolean
  /** Where the next page starts (exclusive), when truncated. */
  next: string | undefined
}

function invalid(message: string, reason: string): S3Error {
  return new S3Error('InvalidArgument', 400, message, reason)
}

/** Answers ListObjectsV2 (`v2`) or ListObjects for `bucket`, as `identity` may see it. */
export async function listObjects(
  v2: boolean,
  query: URLSearchParams,
  bucket: BucketRoute,
  identity: S3Identity | null,
  pages: ListPageCache,
  options: ReadOptions,
  /** Binds continuation tokens: derived from the signing secret (any instance knows it). */
  tokenKey: Uint8Array = ANONYMOUS_TOKEN_KEY
): Promise<Answer> {
  const prefix = query.get('prefix') ?? ''
  const delimiter = query.get('delimiter') || undefined
  const encoding = query.get('encoding-type')
  if (encoding !== null && encoding !== 'url') throw invalid('Invalid Encoding Method specified in Request', 'bad_encoding_type')
  const maxKeysText = query.get('max-keys')
  let maxKeys = MAX_KEYS
  if (maxKeysText !== null) {
    if (!/^\d{1,10}$/.test(maxKeysText)) throw invalid('Provided max-keys not an integer or within integer range', 'bad_max_keys')
    maxKeys = Math.min(MAX_KEYS, Number(maxKeysText))
  }
  let after = ''
  const token = v2 ? (query.get('continuation-token') ?? undefined) : undefined
  const startAfter = v2 ? (query.get('start-after') ?? undefined) : undefined
  const marker = v2 ? undefined : (query.get('marker') ?? '')
  const binding = { key: tokenKey, accessKeyId: identity?.accessKeyId ?? '', bucket: bucket.name, prefix, delimiter: delimiter ?? '' }
  if (token !== undefined) {
    const decoded = decodeToken(token, binding)
    if (decoded === undefined) throw invalid('The continuation token provided is incorrect', 'bad_continuation_token')
    after = decoded
  } else if (startAfter !== undefined) after = startAfter
  else if (marker !== undefined) after = marker

  const scope = listingScope(identity, bucket)
  const scan =
    maxKeys === 0
      ? { objects: [], commonPrefixes: [], truncated: false, next: undefined }
      : await collect(bucket, pages, { prefix, delimiter, after, maxKeys, sealed: v2 }, scope, options)
  const fetchOwner = !v2 || query.get('fetch-owner') === 'true'
  const result: ListResult = {
    bucket: bucket.name,
    prefix,
    delimiter,
    maxKeys,
    encodeUrl: encoding === 'url',
    truncated: scan.truncated,
    objects: scan.objects,
    commonPrefixes: scan.commonPrefixes,
    owner: fetchOwner ? OWNER : undefined,
  }
  const next = scan.truncated ? scan.next : undefined
  const body = v2
    ? listV2Xml(result, { continuationToken: token, nextToken: next === undefined ? undefined : encodeToken(next, binding), startAfter })
    : listV1Xml(result, { marker: marker ?? '', nextMarker: next })
  return {
    status: 200,
    headers: { 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' },
    body,
  }
}

async function collect(
  bucket: BucketRoute,
  pages: ListPageCache,
  /** `sealed`: the position goes out encrypted (a v2 token), so it may be a key the client cannot see. */
  want: { prefix: string; delimiter: string | undefined; after: string; maxKeys: number; sealed: boolean },
  scope: ListingScope,
  options: ReadOptions
): Promise<Scan> {
  const { prefix, delimiter, after, maxKeys, sealed } = want
  const hidesPosition = sealed || !scope.scoped
  const objects: ListedObject[] = []
  const commonPrefixes: string[] = []
  let count = 0
  let last = after
  let cursor = after
  let lastPrefix: string | undefined
  let read = 0
  // The allowed ranges one after another (one range, the request prefix, when nothing is hidden).
  for (const range of scope.ranges(prefix)) {
    if (cursor > range && !cursor.startsWith(range)) continue // wholly before the position
    for (;;) {
      // A v1 marker is plain text: a scoped identity's never names a key it may not see, so its
      // answer reads on until it has one to end on (its scan stays inside its own prefixes).
      if (read >= MAX_BACKEND_PAGES && (hidesPosition || last > after)) {
        // Enough backend work for one answer: fewer keys than asked, and a token to go on from here.
        return { objects, commonPrefixes, truncated: true, next: hidesPosition && cursor > last ? cursor : last }
      }
      read++
      // Small answers read small backend pages (a group's keys are skipped by restarting past it).
      const page = await pages.get(bucket, { prefix: range, after: cursor, maxKeys: Math.min(MAX_KEYS, Math.max(100, 2 * maxKeys)) }, options)
      for (const object of page.objects) {
        const { key } = object
        cursor = key
        if (!key.startsWith(range) || key <= after) continue
        // A key the identity may not read shows neither itself nor the group it would open.
        if (!scope.mayRead(key)) continue
        const at = delimiter === undefined ? -1 : key.indexOf(delimiter, prefix.length)
        if (at !== -1) {
          const common = key.slice(0, at + (delimiter as string).length)
          if (common === lastPrefix || common <= after) continue
          lastPrefix = common
          if (count === maxKeys) return { objects, commonPrefixes, truncated: true, next: last }
          commonPrefixes.push(common)
          count++
          last = common
        } else {
          if (count === maxKeys) return { objects, commonPrefixes, truncated: true, next: last }
          objects.push(object)
          count++
          last = key
        }
      }
      if (!page.truncated) break
      // Past the rest of a common prefix at once (its keys would only be skipped one by one).
      if (lastPrefix !== undefined && cursor.startsWith(lastPrefix)) cursor = lastPrefix + PAST
    }
  }
  return { objects, commonPrefixes, truncated: false, next: undefined }
}

interface TokenBinding {
  key: Uint8Array
  accessKeyId: string
  bucket: string
  prefix: string
  delimiter: string
}

/**
 * Opaque to clients: where the listing goes on (exclusive), encrypted and authenticated
 * (AES-256-GCM) with the listing it belongs to (credential, bucket, prefix, delimiter) as
 * additional data: it can name a key the client may not see, and any other use, or any altered
 * byte, is refused.
 */
function encodeToken(after: string, binding: TokenBinding): string {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', tokenCipherKey(binding.key), iv)
  cipher.setAAD(tokenAad(binding))
  return Buffer.concat([iv, cipher.update(after, 'utf8'), cipher.final(), cipher.getAuthTag()]).toString('base64url')
}

function decodeToken(token: string, binding: TokenBinding): string | undefined {
  if (token.length > 4096 || !/^[A-Za-z0-9_-]+$/.test(token)) return undefined
  const bytes = Buffer.from(token, 'base64url')
  if (bytes.length < 12 + 16) return undefined
  try {
    const decipher = createDecipheriv('aes-256-gcm', tokenCipherKey(binding.key), bytes.subarray(0, 12))
    decipher.setAAD(tokenAad(binding))
    decipher.setAuthTag(bytes.subarray(bytes.length - 16))
    return Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}

function tokenAad(b: TokenBinding): Buffer {
  return Buffer.from(JSON.stringify(['yatagarasu-list-token', b.accessKeyId, b.bucket, b.prefix, b.delimiter]))
}

function tokenCipherKey(key: Uint8Array): Buffer {
  return createHmac('sha256', key).update('yatagarasu-list-token-aes').digest()
}
