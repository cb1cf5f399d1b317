// One fetch of a key at a time across the workers that share a disk directory, kept by the cluster
// primary (disk-cluster.ts). The first worker to claim a key fetches it; the others wait. Once the
// fetcher's body is being written to the directory (a temp file), every waiter, and every worker
// that claims the key after, is told where (`grows`): it reads the file as it grows. When the
// fetcher stored it, every waiter is told so (it reads the key from the directory, or knows the
// file it reads is whole); when it did not (the fetch failed, the disk would not keep it, its
// worker died), every waiter fetches on its own (a reader of the file, what the file lacks): a
// waiter never waits for more than one fetch.

/** What a worker that claimed a key does: fetch it, or read what another worker stored. */
export type ClaimAnswer = 'fetch' | 'stored'

/** What a waiting worker is told: the end of the fetch, or where its body grows (G, say a file). */
export type ClaimNews<G> = ClaimAnswer | { growing: G }

interface Claim<W, G> {
  holder: W
  waiters: Array<{ worker: W; id: number }>
  /** Where the holder's body grows, once it said so. */
  growing: G | undefined
}

export class FillClaims<W, G = never> {
  readonly #claims = new Map<string, Claim<W, G>>()
  readonly #answer: (worker: W, id: number, answer: ClaimNews<G>) => void

  /** `answer` tells a waiting worker's claim `id` what to do. */
  constructor(answer: (worker: W, id: number, answer: ClaimNews<G>) => void) {
    this.#answer = answer
  }

  /**
   * `worker` asks to fetch `key`: 'fetch' when nobody is; 'wait' when another is (answered later);
   * where another's body grows when it said so (and the end of that fetch later).
   */
  claim(worker: W, id: number, key: string): 'fetch' | 'wait' | { growing: G } {
    const claim = this.#claims.get(key)
    if (claim === undefined) {
      this.#claims.set(key, { holder: worker, waiters: [], growing: undefined })
      return 'fetch'
    }
    claim.waiters.push({ worker, id })
    return claim.growing === undefined ? 'wait' : { growing: claim.growing }
  }

  /** The holder's body of `key` is being written where `growing` says: every waiter reads it. */
  grows(worker: W, key: string, growing: G): void {
    const claim = this.#claims.get(key)
    if (claim === undefined || claim.holder !== worker || claim.growing !== undefined) return
    claim.growing = growing
    for (const { worker: waiter, id } of claim.waiters) this.#answer(waiter, id, { growing })
  }

  /** `worker`'s fetch of `key` is over; `stored`: the directory holds it now. */
  release(worker: W, key: string, stored: boolean): void {
    const claim = this.#claims.get(key)
    if (claim === undefined || claim.holder !== worker) return
    this.#claims.delete(key)
    for (const { worker: waiter, id } of claim.waiters) this.#answer(waiter, id, stored ? 'stored' : 'fetch')
  }

  /** `worker` is gone: it waits for nothing, and the waiters of what it was fetching fetch on their own. */
  leave(worker: W): void {
    for (const [key, claim] of [...this.#claims]) {
      claim.waiters = claim.waiters.filter((waiter) => waiter.worker !== worker)
      if (claim.holder === worker) this.release(worker, key, false)
    }
  }

  /** Keys being fetched now. */
  get size(): number {
    return this.#claims.size
  }
}
