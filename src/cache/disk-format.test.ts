import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { crc32 } from 'node:zlib'
import { objectMeta } from '../../test/support/meta.ts'
import { blockIntact, blockTable } from './block-crcs.ts'
import { BLOCK_SIZE, encodeHead } from './disk-format.ts'

describe('disk entry block table', () => {
  const body = randomBytes(2 * BLOCK_SIZE + 1000)
  const blocks = [body.subarray(0, BLOCK_SIZE), body.subarray(BLOCK_SIZE, 2 * BLOCK_SIZE), body.subarray(2 * BLOCK_SIZE)]

  it("holds zlib's CRC-32 of each block, so files written by earlier versions keep verifying", () => {
    const table = blockTable(body, BLOCK_SIZE)
    assert.equal(table.length, 4 * blocks.length)
    blocks.forEach((block, i) => assert.equal(table.readUInt32BE(4 * i), crc32(block), `block ${i}`))
  })

  it("checks its header with zlib's CRC-32 too", () => {
    const table = blockTable(body, BLOCK_SIZE)
    const head = encodeHead('bucket\u0000key', { meta: objectMeta({ size: body.length }), storedAt: 1, freshUntil: 2 }, body.length, table)
    assert.equal(head.readUInt32BE(8), crc32(head.subarray(12)))
  })

  it('passes intact blocks and refuses one with a flipped bit or a missing entry', () => {
    const table = blockTable(body, BLOCK_SIZE)
    blocks.forEach((block, i) => assert.equal(blockIntact(table, i, block), true, `block ${i}`))
    const damaged = Buffer.from(blocks[1]!)
    damaged[12345]! ^= 0x10
    assert.equal(blockIntact(table, 1, damaged), false)
    assert.equal(blockIntact(table, 3, blocks[2]!), false)
  })
})
