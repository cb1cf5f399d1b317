// One page of a bucket's listing from the backend, through the replica's S3 client (the SDK does
// the XML; listing is rare next to GET and HEAD). ListObjects v1 with a marker and no delimiter:
// every S3-compatible server pages that alike, where ListObjectsV2 continuation tokens and v1
// Delimiter + MaxKeys paging differ between servers (s3rver 3.7.1 gets both wrong). The S3 front
// end owns delimiters, scoping and paging tokens on top of these pages.
import type { S3Client } from '@aws-sdk/client-s3'
import { ProxyError } from '../errors.ts'
import { quoteEtag } from '../http/conditional.ts'
import type { ListPage, ListPageRequest } from '../ports.ts'
import { answerError, transportError } from './s3-errors.ts'

/** The backend's page of keys under `prefix` after `after`; throws ProxyError ORIGIN_*. */
export async function listPage(client: S3Client, bucket: string, page: ListPageRequest, signal: AbortSignal): Promise<ListPage> {
  // Loaded here, not at startup: the client given is already built, so this is the module cache.
  const { ListObjectsCommand } = await import('@aws-sdk/client-s3')
  let out
  try {
    out = await client.send(
      new ListObjectsCommand({
        Bucket: bucket,
        Prefix: page.prefix === '' ? undefined : page.prefix,
        Marker: page.after === '' ? undefined : page.after,
        MaxKeys: page.maxKeys,
      }),
      { abortSignal: signal }
    )
  } catch (err) {
    throw errorOf(err)
  }
  const objects = (out.Contents ?? []).flatMap((c) =>
    c.Key === undefined || c.Key === page.after
      ? []
      : [{ key: c.Key, size: c.Size ?? 0, etag: quoteEtag(c.ETag), lastModified: c.LastModified, storageClass: c.StorageClass }]
  )
  return { objects, truncated: out.IsTruncated === true && objects.length > 0 }
}

function errorOf(err: unknown): ProxyError {
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
  if (status !== undefined && status >= 300) {
    const name = (err as { name?: unknown }).name
    return answerError(status, typeof name === 'string' ? name : undefined)
  }
  return transportError(err)
}
