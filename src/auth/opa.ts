// Authorizers over Open Policy Agent, after authentication:
// - in process: a policy compiled with `opa build -t wasm` (policy.wasm, or a bundle.tar.gz holding
//   /policy.wasm and optionally /data.json), evaluated with @open-policy-agent/opa-wasm; one
//   instance, loaded once, reused for every request. Any load or evaluation failure denies.
// - remote: an OPA server's Data API, `POST <url>/v1/data/<policy_path>` with `{"input": ...}`,
//   bounded by `timeout_ms`; errors and timeouts deny unless `fail_mode: open`.
// A result of `true` or `{"allow": true}` allows; anything else denies. Decisions are cached for
// `cache_ttl_seconds`, keyed on the input without the token's time claims (exp, iat, nbf), so a
// refreshed token with the same identity reuses the decision.
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import { loadPolicy, type LoadedPolicy } from '@open-policy-agent/opa-wasm'
import { LRUCache } from 'lru-cache'
import { extract } from 'tar-stream'
import type { AuthorizationConfig } from '../config/schema.ts'
import type { AuthzDecision, AuthzInput, Authorizer } from '../ports.ts'

const TIME_CLAIMS = new Set(['exp', 'iat', 'nbf'])
const gunzipAsync = promisify(gunzip)

/** Thrown while loading a policy; the message says what is wrong with the file. */
export class PolicyLoadError extends Error {
  override name = 'PolicyLoadError'
}

type Evaluate = (input: AuthzInput) => Promise<AuthzDecision>

class CachingAuthorizer implements Authorizer {
  readonly #evaluate: Evaluate
  readonly #cache: LRUCache<string, AuthzDecision> | undefined

  constructor(evaluate: Evaluate, ttlSeconds: number, size: number) {
    this.#evaluate = evaluate
    this.#cache = ttlSeconds > 0 && size > 0 ? new LRUCache({ max: size, ttl: ttlSeconds * 1000 }) : undefined
  }

  async authorize(input: AuthzInput): Promise<AuthzDecision> {
    if (this.#cache === undefined) return this.#evaluate(input)
    const key = cacheKey(input)
    const cached = this.#cache.get(key)
    if (cached !== undefined) return cached
    const decision = await this.#evaluate(input)
    // Failures are not remembered: the next request asks again.
    if (decision.reason === 'opa_allow' || decision.reason === 'opa_deny') this.#cache.set(key, decision)
    return decision
  }
}

function cacheKey(input: AuthzInput): string {
  const claims: Record<string, unknown> = {}
  for (const name of Object.keys(input.jwt_claims).sort()) {
    if (!TIME_CLAIMS.has(name)) claims[name] = input.jwt_claims[name]
  }
  // The S3 API's operation is part of the question: a GetObject decision says nothing of a listing.
  return JSON.stringify([claims, input.bucket, input.path, input.key, input.method, input.client_ip, input.api, input.operation])
}

function decide(result: unknown): AuthzDecision {
  const allowed =
    result === true ||
    (result !== null && typeof result === 'object' && (result as { allow?: unknown }).allow === true)
  return allowed ? { allow: true, reason: 'opa_allow' } : { allow: false, reason: 'opa_deny' }
}

// ---------------------------------------------------------------------------------------------
// In process

export async function loadWasmAuthorizer(config: Extract<AuthorizationConfig, { kind: 'wasm' }>): Promise<Authorizer> {
  let bytes: Buffer
  try {
    bytes = await readFile(config.policy_file)
  } catch (err) {
    throw new PolicyLoadError(`cannot read ${config.policy_file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  let data: unknown
  if (config.policy_file.endsWith('.tar.gz') || config.policy_file.endsWith('.tgz')) {
    const bundle = await readBundle(bytes, config.policy_file)
    bytes = bundle.wasm
    data = bundle.data
  }
  if (config.data_file !== undefined) {
    try {
      data = JSON.parse(await readFile(config.data_file, 'utf8')) as unknown
    } catch (err) {
      throw new PolicyLoadError(`cannot read JSON from ${config.data_file} (${(err as Error).message})`)
    }
  }

  let policy: LoadedPolicy
  try {
    policy = await loadPolicy(bytes)
  } catch (err) {
    throw new PolicyLoadError(`${config.policy_file} is not an OPA wasm policy (${String(err)})`)
  }
  const entrypoints = policy.entrypoints as Record<string, number>
  if (!Object.hasOwn(entrypoints, config.entrypoint)) {
    const known = Object.keys(entrypoints).join(', ') || 'none'
    throw new PolicyLoadError(`${config.policy_file} has no entrypoint "${config.entrypoint}" (it has: ${known})`)
  }
  if (data !== undefined) policy.setData(data as object)
  const entrypoint = entrypoints[config.entrypoint] as number

  const evaluate: Evaluate = async (input) => {
    try {
      const resultSet = policy.evaluate(input, entrypoint) as Array<{ result?: unknown }> | undefined
      return decide(resultSet?.[0]?.result)
    } catch {
      return { allow: false, reason: 'opa_error' }
    }
  }
  return new CachingAuthorizer(evaluate, config.cache_ttl_seconds, config.cache_size)
}

async function readBundle(gzipped: Buffer, file: string): Promise<{ wasm: Buffer; data: unknown }> {
  const files = new Map<string, Buffer>()
  try {
    const entries = extract()
    entries.end(await gunzipAsync(gzipped))
    for await (const entry of entries) {
      const chunks: Buffer[] = []
      for await (const chunk of entry) chunks.push(chunk as Buffer)
      files.set(entry.header.name.replace(/^\.?\//, ''), Buffer.concat(chunks))
    }
  } catch (err) {
    throw new PolicyLoadError(`${file} is not a gzipped tar bundle (${(err as Error).message})`)
  }
  const wasm = files.get('policy.wasm')
  if (wasm === undefined) throw new PolicyLoadError(`${file} holds no /policy.wasm (build it with "opa build -t wasm")`)
  const rawData = files.get('data.json')
  return { wasm, data: rawData === undefined ? undefined : (JSON.parse(rawData.toString('utf8')) as unknown) }
}

// ---------------------------------------------------------------------------------------------
// Remote

export function remoteAuthorizer(config: Extract<AuthorizationConfig, { kind: 'remote' }>): Authorizer {
  const endpoint = `${config.url.replace(/\/+$/, '')}/v1/data/${config.policy_path.replace(/^\/+/, '')}`
  const failure = (reason: 'opa_error' | 'opa_timeout'): AuthzDecision =>
    config.fail_mode === 'open' ? { allow: true, reason: 'opa_fail_open' } : { allow: false, reason }

  const evaluate: Evaluate = async (input) => {
    let response: Response
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input }),
        signal: AbortSignal.timeout(config.timeout_ms),
        redirect: 'error',
      })
    } catch (err) {
      return failure((err as Error).name === 'TimeoutError' ? 'opa_timeout' : 'opa_error')
    }
    if (!response.ok) {
      await response.body?.cancel()
      return failure('opa_error')
    }
    try {
      const body = (await response.json()) as { result?: unknown }
      return decide(body.result)
    } catch (err) {
      return failure((err as Error).name === 'TimeoutError' ? 'opa_timeout' : 'opa_error')
    }
  }
  return new CachingAuthorizer(evaluate, config.cache_ttl_seconds, config.cache_size)
}
