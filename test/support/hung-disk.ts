// A hung disk for tests: every thread of libuv's thread pool blocked in an open() that never
// returns, as threads stuck on a hung device are; file operations queued meanwhile wait.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync } from 'node:fs'
import { access, open, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'

/**
 * Blocks every thread of the thread pool (UV_THREADPOOL_SIZE, 4 unless set): each opens a FIFO for
 * reading, which waits for a writer. Returns the way to let them go.
 */
export async function blockThreadPool(dir: string): Promise<() => void> {
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  const fifos = Array.from({ length: threads }, (_, i) => join(dir, `hung-${i}.fifo`))
  for (const fifo of fifos) execFileSync('mkfifo', [fifo])
  const opening: Array<Promise<FileHandle>> = fifos.map((fifo) => open(fifo, 'r'))
  // Every thread is taken once a file operation queued after them cannot run: proven by one that
  // does not finish while they block (checked with a short look, then the test goes on).
  const probe = access(dir).then(() => 'ran')
  assert.equal(await Promise.race([probe, delay(200, 'blocked')]), 'blocked', 'the thread pool is blocked')
  return () => {
    // A writer's open releases each blocked reader; then all are closed.
    const writers = fifos.map((fifo) => openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK))
    for (const fd of writers) closeSync(fd)
    for (const handle of opening) void handle.then((h) => h.close())
  }
}
