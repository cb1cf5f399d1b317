// One fetch of a key at a time across the workers that share a disk directory, kept by the cluster
// primary (disk-cluster.ts). The first worker to claim a key fetches it; the others wait. When the
// fetcher stored it, every waiter is told so (it reads the key from the directory); when it did
// not (the fetch failed, the disk would not keep it, its worker died), every waiter fetches on its
// own: a waiter never waits for more than one fetch.

/** What a worker that claimed a key does: fetch it, or read what another worker stored. */
export type ClaimAnswer = 'fetch' | 'stored'

interface Claim<W> {
  holder: W
  waiters: Array<{ worker: W; id: number }>
}

export class FillClaims<W> {
  readonly #claims = new Map<string, Claim<W>>()
  readonly #answer: (worker: W, id: number, answer: ClaimAnswer) => void

  /** `answer` tells a waiting worker's claim `id` what to do. */
  constructor(answer: (worker: W, id: number, answer: ClaimAnswer) => void) {
    this.#answer = answer
  }

  /** `worker` asks to fetch `key`: 'fetch' when nobody is; 'wait' when another is (answered later). */
  claim(worker: W, id: number, key: string): 'fetch' | 'wait' {
    const claim = this.#claims.get(key)
    if (claim === undefined) {
      this.#claims.set(key, { holder: worker, waiters: [] })
      return 'fetch'
    }
    claim.waiters.push({ worker, id })
    return 'wait'
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
