// A remote JSON Web Key Set, kept usable through identity-provider outages.
//
//   fresh   (age < cache_seconds)          keys served as fetched
//   stale   (age < stale_max_seconds)      keys still served; a refresh runs in the background
//   expired (age >= stale_max_seconds)     no keys: verification fails closed (jwks_unavailable)
//
// A token whose `kid` is not in the set triggers one refetch, then waits out the cooldown: a flood
// of made-up kids costs the identity provider at most one request per `refetch_cooldown_seconds`.
// Every refresh (first fetch included) honours the same cooldown after an attempt, and concurrent
// refreshes share one request. Fetches time out after `timeout_ms`.
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWSHeaderParameters, type FlattenedJWSInput } from 'jose'
import type { JwksConfig } from '../config/schema.ts'

type LocalKeySet = ReturnType<typeof createLocalJWKSet>
type ResolvedKey = Awaited<ReturnType<LocalKeySet>>

export class JwksUnavailable extends Error {
  constructor(cause?: unknown) {
    super('no usable JWKS', cause === undefined ? undefined : { cause })
    this.name = 'JwksUnavailable'
  }
}

export class RemoteKeySet {
  readonly #config: JwksConfig
  #keys: LocalKeySet | undefined
  #fetchedAt = 0
  #attemptedAt = Number.NEGATIVE_INFINITY
  #pending: Promise<void> | undefined

  /** Nothing is fetched until the first token needs a key (so `--check` stays offline). */
  constructor(config: JwksConfig) {
    this.#config = config
  }

  /** Resolves the key for a token header; the `getKey` function jose's jwtVerify takes. */
  readonly getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<ResolvedKey> => {
    const age = Date.now() - this.#fetchedAt
    if (this.#keys === undefined || age >= this.#config.stale_max_seconds * 1000) {
      await this.#refresh().catch(() => {})
    } else if (age >= this.#config.cache_seconds * 1000) {
      void this.#refresh().catch(() => {})
    }
    const keys = this.#usable()
    try {
      return await keys(header, token)
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err
      await this.#refresh().catch(() => {})
      return await this.#usable()(header, token)
    }
  }

  #usable(): LocalKeySet {
    const fresh = Date.now() - this.#fetchedAt < this.#config.stale_max_seconds * 1000
    if (this.#keys === undefined || !fresh) throw new JwksUnavailable()
    return this.#keys
  }

  #refresh(): Promise<void> {
    if (this.#pending !== undefined) return this.#pending
    if (Date.now() - this.#attemptedAt < this.#config.refetch_cooldown_seconds * 1000) return Promise.resolve()
    this.#attemptedAt = Date.now()
    this.#pending = this.#fetch().finally(() => {
      this.#pending = undefined
    })
    return this.#pending
  }

  async #fetch(): Promise<void> {
    const response = await fetch(this.#config.url, {
      signal: AbortSignal.timeout(this.#config.timeout_ms),
      headers: { accept: 'application/json' },
      redirect: 'error',
    })
    if (!response.ok) {
      await response.body?.cancel()
      throw new JwksUnavailable(`HTTP ${response.status}`)
    }
    const body = (await response.json()) as JSONWebKeySet
    this.#keys = createLocalJWKSet(body)
    this.#fetchedAt = Date.now()
  }
}
