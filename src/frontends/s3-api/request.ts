// What an S3 request asks for: the operation, the bucket (one of the proxy's bucket names) and
// the object key, from the method, the raw request target and the Host header. Path style
// (`/<bucket>/<key>`) always; virtual-host style (`<bucket>.<domain>/<key>`) when a domain is
// configured. The key is the raw path after the bucket, percent-decoded exactly once (`%2F` is a
// `/` in the key, `//` stays two slashes), as S3 reads it.
//
// Reads only: every write, and every read this proxy does not serve (sub-resources such as ?acl,
// ?versionId, ?partNumber), is classified as refused here, before any stage or backend sees it.
import { isSafeKey } from '../../http/path.ts'

export type S3Operation =
  | 'ListBuckets'
  | 'HeadBucket'
  | 'GetBucketLocation'
  | 'ListObjects'
  | 'ListObjectsV2'
  | 'GetObject'
  | 'HeadObject'

export type S3Request =
  | { ok: true; operation: S3Operation; bucket: string | undefined; key: string; query: URLSearchParams }
  | { ok: false; code: S3RefusalCode; message: string; bucket: string | undefined; key: string }

export type S3RefusalCode = 'AccessDenied' | 'MethodNotAllowed' | 'NotImplemented' | 'InvalidURI' | 'InvalidArgument' | 'InvalidBucketName'

/** Sub-resources of a bucket or an object that name another operation (all refused but these). */
const BUCKET_SUBRESOURCES = [
  'accelerate', 'acl', 'analytics', 'cors', 'delete', 'encryption', 'intelligent-tiering', 'inventory',
  'lifecycle', 'logging', 'metrics', 'notification', 'object-lock', 'ownershipControls', 'policy',
  'policyStatus', 'publicAccessBlock', 'replication', 'requestPayment', 'tagging', 'uploads', 'versioning',
  'versions', 'website', 'session',
]
const OBJECT_SUBRESOURCES = ['acl', 'attributes', 'legal-hold', 'retention', 'tagging', 'torrent', 'uploadId', 'uploads', 'restore', 'select']

/** The parameters the front end reads: each may appear once (the signature covers every copy). */
const READ_PARAMS = new Set([
  'list-type', 'prefix', 'delimiter', 'encoding-type', 'max-keys', 'continuation-token', 'start-after', 'marker',
  'fetch-owner', 'location', 'X-Amz-Security-Token', 'response-content-type', 'response-content-language',
  'response-expires', 'response-cache-control', 'response-content-disposition', 'response-content-encoding',
])

const WRITES = new Set(['PUT', 'POST', 'DELETE', 'PATCH'])
const READ_ONLY = 'This endpoint is read-only.'

/**
 * Classifies one request. `host` is the Host header; `domain` the configured `s3_api.domain`
 * (lower case) or undefined.
 */
export function parseS3Request(method: string, target: string, host: string | undefined, domain: string | undefined): S3Request {
  const q = target.indexOf('?')
  const rawPath = q === -1 ? target : target.slice(0, q)
  const pairs = queryPairs(q === -1 ? '' : target.slice(q + 1))
  if (pairs === null) return refuse('InvalidArgument', 'The query string has a malformed percent-encoding.', undefined, '')
  const repeated = pairs.find(([name], i) => READ_PARAMS.has(name) && pairs.findIndex(([other]) => other === name) !== i)
  if (repeated !== undefined) return refuse('InvalidArgument', `The query parameter ${repeated[0]} is given more than once.`, undefined, '')
  const query = new URLSearchParams(pairs)

  let bucket: string | undefined
  let rawKey: string
  const virtual = domain === undefined || host === undefined ? undefined : virtualBucketOf(host, domain)
  if (!rawPath.startsWith('/')) return refuse('InvalidURI', 'Couldn\'t parse the specified URI.', undefined, '')
  if (virtual !== undefined) {
    bucket = virtual
    rawKey = rawPath.slice(1)
  } else {
    const slash = rawPath.indexOf('/', 1)
    const rawBucket = slash === -1 ? rawPath.slice(1) : rawPath.slice(1, slash)
    const decoded = rawBucket === '' ? undefined : decodeOnce(rawBucket)
    if (decoded === null) return refuse('InvalidURI', 'Couldn\'t parse the specified URI.', undefined, '')
    bucket = decoded
    rawKey = slash === -1 ? '' : rawPath.slice(slash + 1)
  }
  const key = decodeOnce(rawKey)
  if (key === null) return refuse('InvalidURI', 'Couldn\'t parse the specified URI.', bucket, '')
  if (bucket !== undefined && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    return refuse('InvalidBucketName', 'The specified bucket is not valid.', undefined, key)
  }

  if (WRITES.has(method)) return refuse('AccessDenied', `Access Denied. ${READ_ONLY}`, bucket, key)
  if (method !== 'GET' && method !== 'HEAD') {
    return refuse('MethodNotAllowed', `The specified method is not allowed against this resource. ${READ_ONLY}`, bucket, key)
  }

  if (bucket === undefined) {
    if (method === 'HEAD') return refuse('MethodNotAllowed', 'The specified method is not allowed against this resource.', undefined, '')
    return { ok: true, operation: 'ListBuckets', bucket: undefined, key: '', query }
  }
  if (key === '') {
    const sub = BUCKET_SUBRESOURCES.find((name) => query.has(name))
    if (sub !== undefined) return refuse('NotImplemented', `?${sub} is not supported by this read-only endpoint.`, bucket, key)
    if (method === 'HEAD') return { ok: true, operation: 'HeadBucket', bucket, key, query }
    if (query.has('location')) return { ok: true, operation: 'GetBucketLocation', bucket, key, query }
    const listType = query.get('list-type')
    if (listType === '2') return { ok: true, operation: 'ListObjectsV2', bucket, key, query }
    if (listType !== null) return refuse('InvalidArgument', 'Invalid list-type.', bucket, key)
    return { ok: true, operation: 'ListObjects', bucket, key, query }
  }

  const sub = OBJECT_SUBRESOURCES.find((name) => query.has(name))
  if (sub !== undefined) return refuse('NotImplemented', `?${sub} is not supported by this read-only endpoint.`, bucket, key)
  if (query.has('partNumber')) {
    return refuse('NotImplemented', 'partNumber is not supported: read the object whole or with a Range header.', bucket, key)
  }
  if (query.has('versionId')) return refuse('NotImplemented', 'versionId is not supported: only the current version is served.', bucket, key)
  // A key the HTTP path would refuse as leaving its bucket is refused here too.
  if (!isSafeKey(key)) return refuse('InvalidArgument', 'The object key has a "." or ".." segment, a backslash or a NUL.', bucket, '')
  return { ok: true, operation: method === 'HEAD' ? 'HeadObject' : 'GetObject', bucket, key, query }
}

/** The bucket of `<bucket>.<domain>[:port]`, or undefined for any other host. */
function virtualBucketOf(host: string, domain: string): string | undefined {
  let name = host.toLowerCase()
  const colon = name.lastIndexOf(':')
  if (colon !== -1 && !name.endsWith(']')) name = name.slice(0, colon)
  if (name.endsWith('.')) name = name.slice(0, -1)
  if (!name.endsWith(`.${domain}`)) return undefined
  const bucket = name.slice(0, -domain.length - 1)
  return bucket === '' ? undefined : bucket
}

function decodeOnce(raw: string): string | null {
  if (!raw.includes('%')) return raw
  try {
    return decodeURIComponent(raw)
  } catch {
    return null
  }
}

/**
 * The query's name/value pairs read as SigV4 signs them (sigv4.ts): split on `&` and the first `=`,
 * percent-decoded once, `+` a literal plus (not a space, as form decoding would have it), so an
 * operation reads exactly the values the signature covered. Null for a malformed escape.
 */
function queryPairs(raw: string): [string, string][] | null {
  const out: [string, string][] = []
  for (const pair of raw === '' ? [] : raw.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const name = decodeOnce(eq === -1 ? pair : pair.slice(0, eq))
    const value = eq === -1 ? '' : decodeOnce(pair.slice(eq + 1))
    if (name === null || value === null) return null
    out.push([name, value])
  }
  return out
}

function refuse(code: S3RefusalCode, message: string, bucket: string | undefined, key: string): S3Request {
  return { ok: false, code, message, bucket, key }
}

/** Node's reading of an `Expect` value that asks for 100-continue (and only HTTP/1.1 asks). */
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i

/**
 * What an `Expect` header asks of the listener: nothing (none, or HTTP/1.0), `continue` (a 100
 * before the body is read, which only the STS form is), or an expectation it cannot meet.
 */
export function expectationOf(expect: string | undefined, httpVersion: string): 'none' | 'continue' | 'unmet' {
  if (expect === undefined || httpVersion !== '1.1') return 'none'
  return CONTINUE.test(expect) ? 'continue' : 'unmet'
}

