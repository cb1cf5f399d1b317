// Keys derived from an object's cache key: `<bucket>/<key>\0<what>` (a sliced object's metadata and
// its slices, cache/slices.ts). NUL cannot be in an object key (routing refuses it), so a derived
// key never collides with an object's, and it starts with the object's key, so a purge by prefix
// (an object's prefix, its bucket, everything) and the per-bucket budgets see it as the object's.
// A tier indexes them by object key, so deleting the object's key (an exact purge) deletes them
// too without scanning the tier.

export const DERIVED_MARK = '\0'

export class DerivedKeys {
  readonly #byObject = new Map<string, Set<string>>()

  /** Counts `key` (when it is a derived key) as held by the tier. */
  add(key: string): void {
    const at = key.indexOf(DERIVED_MARK)
    if (at === -1) return
    const object = key.slice(0, at)
    let keys = this.#byObject.get(object)
    if (keys === undefined) this.#byObject.set(object, (keys = new Set()))
    keys.add(key)
  }

  /** The tier let go of `key`. */
  remove(key: string): void {
    const at = key.indexOf(DERIVED_MARK)
    if (at === -1) return
    const object = key.slice(0, at)
    const keys = this.#byObject.get(object)
    if (keys === undefined) return
    keys.delete(key)
    if (keys.size === 0) this.#byObject.delete(object)
  }

  /** The derived keys of the object `key` the tier holds (a copy: safe to delete while iterating). */
  of(key: string): string[] {
    const keys = this.#byObject.get(key)
    return keys === undefined ? [] : [...keys]
  }
}
