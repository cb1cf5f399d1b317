// Response headers for an object (RFC 9110 §8, §13.1): the representation metadata the backend
// stored, replayed identically for GET, HEAD, 206 and (the validator subset) 304.
import type { ObjectMeta } from '../types.ts'

export type HeaderRecord = Record<string, string>

/** Headers of a 200/206 describing `meta`; Content-Length is the length of the body sent. */
export function objectHeaders(meta: ObjectMeta, contentLength: number): HeaderRecord {
  const h: HeaderRecord = {
    'content-type': meta.contentType ?? 'application/octet-stream',
    'content-length': String(contentLength),
    'accept-ranges': 'bytes',
  }
  addValidators(h, meta)
  if (meta.contentDisposition !== undefined) h['content-disposition'] = meta.contentDisposition
  if (meta.contentEncoding !== undefined) h['content-encoding'] = meta.contentEncoding
  if (meta.contentLanguage !== undefined) h['content-language'] = meta.contentLanguage
  for (const name in meta.userMetadata) h[`x-amz-meta-${name}`] = meta.userMetadata[name] as string
  return h
}

/** Headers a 304 must repeat (RFC 9110 §15.4.5). */
export function notModifiedHeaders(meta: ObjectMeta): HeaderRecord {
  const h: HeaderRecord = {}
  addValidators(h, meta)
  return h
}

function addValidators(h: HeaderRecord, meta: ObjectMeta): void {
  if (meta.etag !== undefined) h.etag = meta.etag
  if (meta.lastModified !== undefined) h['last-modified'] = meta.lastModified.toUTCString()
  if (meta.cacheControl !== undefined) h['cache-control'] = meta.cacheControl
  if (meta.expires !== undefined) h.expires = meta.expires
}

/**
 * `force_download`: the object's Content-Disposition turned into `attachment`, keeping its
 * parameters (the filename), so a browser saves it instead of rendering it on the proxy's origin.
 */
export function asAttachment(disposition: string | undefined): string {
  if (disposition === undefined) return 'attachment'
  const semicolon = disposition.indexOf(';')
  return semicolon === -1 ? 'attachment' : `attachment${disposition.slice(semicolon)}`
}
