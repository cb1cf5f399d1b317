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
