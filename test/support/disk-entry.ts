// Damage done to a disk cache entry's file in place, as a failing disk would do it: for tests of
// what the tier, its scrub and the proxy do with the entry.
import assert from 'node:assert/strict'
import { open, readdir, readFile, readlink } from 'node:fs/promises'
import { parseHead } from '../../src/cache/disk-format.ts'

/** Flips one bit of the entry's body byte at `offset` (from the start of the body). */
export async function flipBodyByte(file: string, offset: number): Promise<void> {
  const head = parseHead(await readFile(file))
  assert.ok(head !== undefined && !('need' in head), `${file} is not an intact entry`)
  const handle = await open(file, 'r+')
  try {
    const one = Buffer.alloc(1)
    await handle.read(one, 0, 1, head.bodyOffset + offset)
    one[0] = (one[0] ?? 0) ^ 0x01
    await handle.write(one, 0, 1, head.bodyOffset + offset)
  } finally {
    await handle.close()
  }
}

/** Whether this process holds `file` open (Linux: /proc/self/fd), e.g. a scrub pass reading it. */
export async function openHere(file: string): Promise<boolean> {
  for (const fd of await readdir('/proc/self/fd')) {
    // A descriptor closed since the listing: not this one.
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => undefined)
    if (target === file) return true
  }
  return false
}
