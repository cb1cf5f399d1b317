// The S3 operations the front end answers itself, after every stage has admitted the request:
// ListBuckets (the credential's buckets only), HeadBucket, GetBucketLocation and the listings.
// GetObject and HeadObject are the serve stage's (cache, replicas, Range, If-*).
import type { ReadOptions } from '../../ports.ts'
import type { Answer, BucketRoute } from '../../types.ts'
import { canSeeBucket } from './credentials.ts'
import { S3Error } from './errors.ts'
import type { S3Exchange } from './exchange.ts'
import { listObjects, type ListPageCache } from './list.ts'
import { listBucketsXml, locationXml } from './xml.ts'

export interface OperationsOptions {
  region: string
  buckets: readonly BucketRoute[]
  pages: ListPageCache
  /** Shown as every bucket's creation date: the proxy's buckets are configured, not created. */
  created: Date
}

export function s3Operations(options: OperationsOptions): (x: S3Exchange) => Answer | Promise<Answer> {
  const { region, buckets, pages, created } = options
  const xml = (body: string): Answer => ({
    status: 200,
    headers: { 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' },
    body,
  })
  return function s3Operation(x) {
    const request = x.s3
    if (request === undefined || !request.ok) throw new Error('s3Classify has not run')
    const identity = x.identity ?? null
    switch (request.operation) {
      case 'ListBuckets': {
        if (identity === null) throw new S3Error('AccessDenied', 403, 'Access Denied', 'anonymous_list_buckets')
        const visible = buckets.filter((b) => canSeeBucket(identity, b)).map((b) => ({ name: b.name, created }))
        return xml(listBucketsXml(visible, identity.accessKeyId))
      }
      case 'HeadBucket':
        return { status: 200, headers: { 'x-amz-bucket-region': region, 'content-type': 'application/xml' }, body: null }
      case 'GetBucketLocation':
        return xml(locationXml(region))
      case 'ListObjects':
      case 'ListObjectsV2': {
        const readOptions: ReadOptions = {
          signal: x.signal,
          span: x.span,
          servedBy: (replica) => {
            x.replica = replica
          },
        }
        return listObjects(request.operation === 'ListObjectsV2', request.query, x.matched.bucket, identity, pages, readOptions, x.listTokenKey)
      }
      default:
        throw new Error(`${request.operation} is the serve stage's`)
    }
  }
}
