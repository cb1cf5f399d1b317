// S3's XML documents, written by hand (a builder is a few lines; nothing here parses XML): the
// error document every S3 client reads, and the small answers of the bucket operations.
// https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html

const HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
const NS = 'http://s3.amazonaws.com/doc/2006-03-01/'

/** Escapes text for an XML element (and attribute) value; drops characters XML 1.0 cannot carry. */
export function escapeXml(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/[&<>"']/g, (c) => ENTITIES[c] as string)
}
const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' }

/** One element per entry, in order; undefined values are left out. */
export function elements(fields: readonly (readonly [string, string | number | boolean | undefined])[]): string {
  let out = ''
  for (const [name, value] of fields) if (value !== undefined) out += `<${name}>${escapeXml(String(value))}</${name}>`
  return out
}

/** `<Error>` with Code, Message, Resource (the request path, never a backend name) and RequestId. */
export function errorXml(code: string, message: string, resource: string, requestId: string): string {
  return `${HEAD}<Error>${elements([['Code', code], ['Message', message], ['Resource', resource], ['RequestId', requestId]])}</Error>`
}

export function listBucketsXml(buckets: readonly { name: string; created: Date }[], ownerId: string): string {
  const list = buckets.map((b) => `<Bucket>${elements([['Name', b.name], ['CreationDate', b.created.toISOString()]])}</Bucket>`).join('')
  return `${HEAD}<ListAllMyBucketsResult xmlns="${NS}"><Owner>${elements([['ID', ownerId], ['DisplayName', ownerId]])}</Owner><Buckets>${list}</Buckets></ListAllMyBucketsResult>`
}

/** GetBucketLocation: an empty constraint means us-east-1, as S3 answers. */
export function locationXml(region: string): string {
  return `${HEAD}<LocationConstraint xmlns="${NS}">${region === 'us-east-1' ? '' : escapeXml(region)}</LocationConstraint>`
}

export interface ListedEntry {
  key: string
  size: number
  etag: string | undefined
  lastModified: Date | undefined
  storageClass: string | undefined
}

export interface ListResult {
  /** The proxy's bucket name (never the backend's). */
  bucket: string
  prefix: string
  delimiter: string | undefined
  maxKeys: number
  /** `encoding-type=url`: keys, prefixes and markers percent-encoded. */
  encodeUrl: boolean
  truncated: boolean
  objects: readonly ListedEntry[]
  commonPrefixes: readonly string[]
  /** With an owner per object (v1 always; v2 with fetch-owner=true). */
  owner: string | undefined
}

function contents(result: ListResult, enc: (s: string) => string): string {
  let out = ''
  for (const o of result.objects) {
    out += `<Contents>${elements([
      ['Key', enc(o.key)],
      ['LastModified', (o.lastModified ?? new Date(0)).toISOString()],
      ['ETag', o.etag],
      ['Size', o.size],
      ['StorageClass', o.storageClass ?? 'STANDARD'],
    ])}${result.owner === undefined ? '' : `<Owner>${elements([['ID', result.owner], ['DisplayName', result.owner]])}</Owner>`}</Contents>`
  }
  for (const p of result.commonPrefixes) out += `<CommonPrefixes>${elements([['Prefix', enc(p)]])}</CommonPrefixes>`
  return out
}

const urlEncode = (s: string) => encodeURIComponent(s).replace(/%2F/g, '/')
const asIs = (s: string) => s

/** ListObjectsV2's ListBucketResult. */
export function listV2Xml(result: ListResult, v2: { continuationToken: string | undefined; nextToken: string | undefined; startAfter: string | undefined }): string {
  const enc = result.encodeUrl ? urlEncode : asIs
  const head = elements([
    ['Name', result.bucket],
    ['Prefix', enc(result.prefix)],
    ['StartAfter', v2.startAfter === undefined ? undefined : enc(v2.startAfter)],
    ['ContinuationToken', v2.continuationToken],
    ['NextContinuationToken', v2.nextToken],
    ['KeyCount', result.objects.length + result.commonPrefixes.length],
    ['MaxKeys', result.maxKeys],
    ['Delimiter', result.delimiter === undefined ? undefined : enc(result.delimiter)],
    ['EncodingType', result.encodeUrl ? 'url' : undefined],
    ['IsTruncated', result.truncated],
  ])
  return `${HEAD}<ListBucketResult xmlns="${NS}">${head}${contents(result, enc)}</ListBucketResult>`
}

/** ListObjects (v1)'s ListBucketResult; NextMarker whenever truncated (clients use it, or the last key). */
export function listV1Xml(result: ListResult, v1: { marker: string; nextMarker: string | undefined }): string {
  const enc = result.encodeUrl ? urlEncode : asIs
  const head = elements([
    ['Name', result.bucket],
    ['Prefix', enc(result.prefix)],
    ['Marker', enc(v1.marker)],
    ['NextMarker', v1.nextMarker === undefined ? undefined : enc(v1.nextMarker)],
    ['MaxKeys', result.maxKeys],
    ['Delimiter', result.delimiter === undefined ? undefined : enc(result.delimiter)],
    ['EncodingType', result.encodeUrl ? 'url' : undefined],
    ['IsTruncated', result.truncated],
  ])
  return `${HEAD}<ListBucketResult xmlns="${NS}">${head}${contents(result, enc)}</ListBucketResult>`
}
