// What was purged lately, so a purge sticks: a fill that fetched its object before the purge, or a
// lower tier's hit read just before it, must not store that copy again once the purge is done.
// Without it, a 10 MiB miss streaming to disk while an operator purges the key is installed at its
// end, and the purged version is served again until it expires.
//
// Deletes count as purges of their key as a prefix: a key's derived entries (its slices, whose keys
// start with it) go with it, and a key that merely starts with it may miss one store (harmless).

/** How long a purge is remembered: longer than any fill takes. */
const RETAIN_MS = 60 * 60 * 1000
/** At most this many remembered; past it, the oldest half is forgotten (see `purgedSince`). */
const MAX_RECORDS = 10_000

interface Purge {
  prefix: string
  at: number
  seq: number
}

export class PurgeLog {
  #records: Purge[] = []
  #seq = 0
  /** The sequence number of the newest record forgotten (records up to it are no longer known). */
  #forgotten = 0

  /** A point in the log: what is purged after it is `purgedSince` it. */
  get seq(): number {
    return this.#seq
  }

  record(prefix: string, now = Date.now()): void {
    const records = this.#records
    records.push({ prefix, at: now, seq: ++this.#seq })
    if (records.length > MAX_RECORDS || (records[0] as Purge).at < now - RETAIN_MS) this.#prune(now)
  }

  /** Drops what is past RETAIN_MS and, over MAX_RECORDS, the older half (amortized O(1) a record). */
  #prune(now: number): void {
    const records = this.#records
    let drop = 0
    while (drop < records.length && (records[drop] as Purge).at < now - RETAIN_MS) drop++
    if (records.length - drop > MAX_RECORDS) drop = records.length - MAX_RECORDS / 2
    if (drop === 0) return
    this.#forgotten = (records[drop - 1] as Purge).seq
    records.splice(0, drop)
  }

  /**
   * A copy of `key` taken from the origin at `storedAt` (ms): true when a purge of the key came at
   * or after it (the same millisecond counts: a copy is dropped rather than a purge lost).
   */
  purgedAfter(key: string, storedAt: number): boolean {
    const records = this.#records
    for (let i = records.length - 1; i >= 0; i--) {
      const record = records[i] as Purge
      if (record.at < storedAt) return false
      if (key.startsWith(record.prefix)) return true
    }
    return false
  }

  /** A copy of `key` read from a tier when the log was at `seq`: true when a purge of the key came since. */
  purgedSince(key: string, seq: number): boolean {
    if (seq < this.#forgotten) return true
    const records = this.#records
    for (let i = records.length - 1; i >= 0; i--) {
      const record = records[i] as Purge
      if (record.seq <= seq) return false
      if (key.startsWith(record.prefix)) return true
    }
    return false
  }
}
