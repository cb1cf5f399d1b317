// Polls for state that background work reaches (probes, batched writes, exports): bounded, so a
// state that never comes fails the test instead of hanging it.
import assert from 'node:assert/strict'

/**
 * Resolves with the first value `read` returns that is not undefined or false. A read that throws
 * (a file not written yet) counts as not yet. `explain` adds context to the failure message.
 */
export async function eventually<T>(
  read: () => Promise<T | undefined | false>,
  what: string,
  explain?: () => Promise<string>
): Promise<T> {
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    const value = await read().catch(() => undefined)
    if (value !== undefined && value !== false) return value
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  assert.fail(`timed out waiting for ${what}${explain === undefined ? '' : `: ${await explain()}`}`)
}
