// An object-pipeline Exchange that arrived on the S3 API listener: the same facts every stage reads
// (route, principal, ...), plus what the S3 front end parsed and who signed the request.
import type { IncomingMessage } from 'node:http'
import type { StampedResponse } from '../../http/stamped-response.ts'
import { Exchange } from '../../pipeline/exchange.ts'
import type { S3Identity } from './credentials.ts'
import type { S3Operation, S3Request } from './request.ts'

export class S3Exchange extends Exchange {
  /** s3Classify: the operation, bucket and key, or the refusal. */
  s3: S3Request | undefined = undefined
  /** s3Admit: the verified credential; null for an anonymous request. */
  identity: S3Identity | null | undefined = undefined
  /** s3Admit: whether the request was signed (header or presigned URL). */
  signed = false
  /** s3Admit: the key binding this credential's listing tokens (derived from its secret). */
  listTokenKey: Buffer | undefined = undefined

  constructor(incoming: IncomingMessage, outgoing: StampedResponse) {
    super(incoming, outgoing)
  }

  get operation(): S3Operation | undefined {
    return this.s3?.ok === true ? this.s3.operation : undefined
  }
}
