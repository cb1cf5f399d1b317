import assert from 'node:assert/strict'
import { it } from 'node:test'
import { ProxyError } from '../../errors.ts'
import { S3Error, s3ErrorAnswer } from './errors.ts'
import { escapeXml, listBucketsXml, locationXml } from './xml.ts'

it('renders a ProxyError as an S3 XML error with the request id and the client’s resource', () => {
  const answer = s3ErrorAnswer(new ProxyError('ROUTE_NOT_FOUND', { reason: 'not_visible' }), '/secret-bucket/k', 'req-1', false)
  assert.equal(answer.status, 404)
  assert.equal(answer.headers['content-type'], 'application/xml')
  assert.equal(answer.headers['x-amz-request-id'], 'req-1')
  assert.equal(
    answer.body,
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><Resource>/secret-bucket/k</Resource><RequestId>req-1</RequestId></Error>'
  )
  assert.equal(answer.headers['content-length'], String(Buffer.byteLength(answer.body as string)))
  assert.ok(!(answer.body as string).includes('not_visible'))
})

it('keeps Retry-After and Content-Range, and sends no body on HEAD', () => {
  const limited = s3ErrorAnswer(new ProxyError('GUARD_RATE_LIMITED', { headers: { 'Retry-After': '3', 'RateLimit-Limit': '5' } }), '/m/k', 'r', true)
  assert.equal(limited.status, 503)
  assert.equal(limited.headers['retry-after'], '3')
  assert.equal(limited.headers['ratelimit-limit'], undefined)
  assert.equal(limited.body, null)
  const range = s3ErrorAnswer(new ProxyError('RANGE_NOT_SATISFIABLE', { headers: { 'Content-Range': 'bytes */10' } }), '/m/k', 'r', false)
  assert.equal(range.status, 416)
  assert.equal(range.headers['content-range'], 'bytes */10')
  assert.match(range.body as string, /<Code>InvalidRange<\/Code>/)
})

it('renders the front end’s own refusals with their code and escapes what it echoes', () => {
  const answer = s3ErrorAnswer(new S3Error('SignatureDoesNotMatch', 403, 'no <match> & "x"', 'bad_signature'), "/m/a&b<'>", 'r', false)
  assert.equal(answer.status, 403)
  assert.match(answer.body as string, /<Code>SignatureDoesNotMatch<\/Code><Message>no &lt;match&gt; &amp; &quot;x&quot;<\/Message><Resource>\/m\/a&amp;b&lt;&apos;&gt;<\/Resource>/)
})

it('writes ListAllMyBucketsResult and LocationConstraint as S3 does', () => {
  assert.equal(escapeXml('a\u0001b'), 'ab')
  assert.match(listBucketsXml([{ name: 'media', created: new Date(0) }], 'READER1'), /<Buckets><Bucket><Name>media<\/Name><CreationDate>1970-01-01T00:00:00.000Z<\/CreationDate><\/Bucket><\/Buckets>/)
  assert.match(locationXml('us-east-1'), /<LocationConstraint xmlns="[^"]+"><\/LocationConstraint>$/)
  assert.match(locationXml('eu-west-1'), />eu-west-1<\/LocationConstraint>$/)
})
