// SHA-256 and HMAC-SHA-256 over node:crypto, in the shape the SigV4 signer takes (its `sha256`),
// so signing needs nothing from the S3 client.
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto'

type Data = string | ArrayBuffer | ArrayBufferView

export class Sha256 {
  readonly #hash: Hash | Hmac

  constructor(secret?: Data) {
    this.#hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret))
  }

  update(data: Data): void {
    this.#hash.update(bytes(data))
  }

  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.#hash.digest())
  }
}

function bytes(data: Data): string | Uint8Array {
  if (typeof data === 'string') return data
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return new Uint8Array(data)
}
