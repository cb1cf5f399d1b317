// An object's metadata for unit tests: every field present (ObjectMeta has no optional fields),
// those a test cares about given.
import type { ObjectMeta } from '../../src/types.ts'

export function objectMeta(given: Partial<ObjectMeta> & Pick<ObjectMeta, 'size'>): ObjectMeta {
  return {
    etag: '"e"',
    lastModified: undefined,
    contentType: undefined,
    cacheControl: undefined,
    contentDisposition: undefined,
    contentEncoding: undefined,
    contentLanguage: undefined,
    expires: undefined,
    userMetadata: {},
    ...given,
  }
}
