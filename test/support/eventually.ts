// Polls for state that background work reaches (probes, batched writes, exports): bounded, so a
// state that never comes fails the test instead of hanging it.
import assert from 'node:assert/strict'

/**
 * The default deadline, for state a running process reaches on its own (a probe, a batched write).
 * A wait for a process to start, a port to open or a worker to appear passes its own deadline
 * (30-60 s: CI runs on a busy 2-core machine).
 */
const DEFAULT_WITHIN_MS = 5000

export interface EventuallyOptions {
  /** How long to keep polling before failing (default 5 s). */
  withinMs?: number
  /** Adds context to the failure message. */
  explain?: () => Promise<string>
}

/**
 * Resolves with the first value `read` returns that is not undefined or false. A read that throws
 * (a file not written yet) counts as not yet. The third argument is the options, or just `explain`.
 */
export async function eventually<T>(
  read: () => Promise<T | undefined | false>,
  what: string,
  options: EventuallyOptions | EventuallyOptions['explain'] = {}
): Promise<T> {
  const { withinMs = DEFAULT_WITHIN_MS, explain } = typeof options === 'function' ? { explain: options } : options
  const deadline = Date.now() + withinMs
  while (Date.now() < deadline) {
    const value = await read().catch(() => undefined)
    if (value !== undefined && value !== false) return value
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  assert.fail(`timed out waiting for ${what} (${withinMs} ms)${explain === undefined ? '' : `: ${await explain()}`}`)
}
