// A CRC-32 per fixed-size block of a body: the table the disk tier's entry files (disk-format.ts)
// and the Redis tier's large values (codec.ts) store, so a reader can check each block before it
// hands its bytes on, and read only the blocks it needs. CRC-32 (IEEE, zlib's values) from
// @node-rs/crc32 (crc32fast, PCLMULQDQ): about 0.1 ms per MiB here.
import { crc32 } from '@node-rs/crc32'

/** The CRC-32 of each `blockSize` block of `body`: `table.readUInt32BE(4 * i)` is block i's. */
export function blockTable(body: Uint8Array, blockSize: number): Buffer {
  const count = Math.ceil(body.length / blockSize)
  const table = Buffer.allocUnsafe(4 * count)
  for (let i = 0; i < count; i++) table.writeUInt32BE(crc32(body.subarray(i * blockSize, (i + 1) * blockSize)), 4 * i)
  return table
}

/** Whether `block` (block number `index` of the body) matches its checksum in `crcs`. */
export function blockIntact(crcs: Buffer, index: number, block: Uint8Array): boolean {
  return 4 * index + 4 <= crcs.length && crc32(block) === crcs.readUInt32BE(4 * index)
}
