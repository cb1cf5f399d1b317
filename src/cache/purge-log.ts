// What was purged lately, so a purge sticks: a fill that fetched its object before the purge, or a
// lower tier's hit read just before it, must not store that copy again once the purge is done.
// Without it, a 10 MiB miss streaming to disk while an operator purges the key is installed at its
// end, and the purged version is served again until it expires.
//
// A purge covers every key under its prefix; a delete covers its key and the entries derived from
// it (its slices and sliced metadata, derived-keys.ts), not other keys that merely start with it.
import { DERIVED_MARK } from './derived-keys.ts'

/** How long a purge is remembered: longer than any fill takes. */
const RETAIN_MS = 60 * 60 * 1000
/** At most this many remembered; past it, the oldest half is forgotten (and counts as everything purged). */
const MAX_RECORDS = 10_000

/** A purge of every key under `prefix`, or a delete of the key `exact`. */
export type PurgeTarget = { prefix: string } | { exact: string }

interface Purge {
  target: PurgeTarget
  at: number
  seq: number
}

/** Whether a purge of `prefix`, or a delete of the key `exact`, covers `key`. */
export function purgeCovers(target: PurgeTarget, key: string): boolean {
  if ('prefix' in target) return key.startsWith(target.prefix)
  const { exact } = target
  return key.startsWith(exact) && (key.length === exact.length || key[exact.length] === DERIVED_MARK)
}

/** Recent purges and deletes, in order, each with its time and sequence number. */
export class PurgeLog {
  #records: Purge[] = []
  #seq = 0
  /** The newest record forgotten over MAX_RECORDS (its seq and time): anything older is taken as purged. */
  #forgottenSeq = 0
  #forgottenAt = -Infinity

  /** A point in the log: what is purged after it is `purgedSince` it. */
  get seq(): number {
    return this.#seq
  }

  /** A purge of every key under `prefix`. */
  purged(prefix: string, now = Date.now()): void {
    this.#record({ target: { prefix }, at: now, seq: ++this.#seq })
  }

  /** A delete of `key` (and its derived entries). */
  deleted(key: string, now = Date.now()): void {
    this.#record({ target: { exact: key }, at: now, seq: ++this.#seq })
  }

  #record(purge: Purge): void {
    const records = this.#records
    records.push(purge)
    if (records.length > MAX_RECORDS || (records[0] as Purge).at < purge.at - RETAIN_MS) this.#prune(purge.at)
  }

  /** Drops what is past RETAIN_MS and, over MAX_RECORDS, the older half (amortized O(1) a record). */
  #prune(now: number): void {
    const records = this.#records
    let expired = 0
    while (expired < records.length && (records[expired] as Purge).at < now - RETAIN_MS) expired++
    let drop = expired
    if (records.length - drop > MAX_RECORDS) {
      // Forgotten before their time: copies from before them can no longer be told apart.
      drop = records.length - MAX_RECORDS / 2
      const newest = records[drop - 1] as Purge
      this.#forgottenSeq = newest.seq
      this.#forgottenAt = newest.at
    } else if (expired > 0) {
      this.#forgottenSeq = Math.max(this.#forgottenSeq, (records[expired - 1] as Purge).seq)
    }
    if (drop > 0) records.splice(0, drop)
  }

  /**
   * A copy of `key` taken from the origin at `storedAt` (ms): true when a purge of the key came at
   * or after it (the same millisecond counts: a copy is dropped rather than a purge lost).
   */
  purgedAfter(key: string, storedAt: number): boolean {
    if (storedAt <= this.#forgottenAt) return true
    const records = this.#records
    for (let i = records.length - 1; i >= 0; i--) {
      const record = records[i] as Purge
      if (record.at < storedAt) return false
      if (purgeCovers(record.target, key)) return true
    }
    return false
  }

  /** A copy of `key` read from a tier when the log was at `seq`: true when a purge of the key came since. */
  purgedSince(key: string, seq: number): boolean {
    if (seq < this.#forgottenSeq) return true
    const records = this.#records
    for (let i = records.length - 1; i >= 0; i--) {
      const record = records[i] as Purge
      if (record.seq <= seq) return false
      if (purgeCovers(record.target, key)) return true
    }
    return false
  }
}
