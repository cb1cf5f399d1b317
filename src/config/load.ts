// The one load path for configuration, used at start-up, by `--check` and on reload:
// file -> YAML -> ${VAR} / ${VAR:-default} in string values -> validate (zod) -> normalize -> freeze.
// Substitution happens after parsing, so a secret containing `:` or `#` cannot reshape the document.
// Every problem names the file, the key path and the reason.
import { normalizeCompression, normalizeImages, normalizeWatermark } from './representations-schema.ts'
import { createPublicKey } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import { isAbsolute, dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import type { z } from 'zod'
import {
  fileSchema,
  type AuthorizationConfig,
  type BackendConfig,
  type BucketCacheConfig,
  type DiskScrubConfig,
  type CacheConfig,
  type CacheLayer,
  type ConfigWarning,
  type IpFilterConfig,
  type RateLimitConfig,
  type TlsConfig,
  RESERVED_PATHS,
  type BucketConfig,
  type Config,
  type ConfigFile,
  type JwtAlgorithm,
  type JwtBlock,
  type JwtVerifierConfig,
  type NamedKey,
  type S3ApiConfig,
  type S3StsConfig,
  type S3Config,
  type S3Connection,
  type ServerConfig,
  type TokenSource,
  type VerificationKey,
} from './schema.ts'
import { parseRange } from '../http/ip-range.ts'

type IpFilterFile = NonNullable<ConfigFile['server']['ip_filter']>
type RateLimitFile = NonNullable<ConfigFile['buckets'][number]['rate_limit']>

type KeyPath = ReadonlyArray<PropertyKey>

export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly file: string
  readonly problems: ConfigProblem[]

  constructor(file: string, problems: ConfigProblem[]) {
    const lines = problems.map((p) => `  ${p.path ? `${p.path}: ` : ''}${p.message}`)
    super(`invalid configuration in ${file}:\n${lines.join('\n')}`)
    this.name = 'ConfigError'
    this.file = file
    this.problems = problems
  }
}

export type Env = Readonly<Record<string, string | undefined>>

export async function loadConfig(file: string, env: Env = process.env): Promise<Config> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read the file (${describeIoError(err)})` }])
  }
  return parseConfig(text, file, env)
}

export async function parseConfig(text: string, file: string, env: Env = process.env): Promise<Config> {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}` }))
    )
  }
  const raw: unknown = doc.toJS()
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(file, [{ path: '', message: 'the document must be a mapping of keys' }])
  }

  const problems: ConfigProblem[] = []
  const substituted = substitute(raw, [], env, raw, problems)
  if (problems.length > 0) throw new ConfigError(file, problems)

  const parsed = fileSchema.safeParse(substituted)
  if (!parsed.success) throw new ConfigError(file, zodProblems(parsed.error, substituted))

  const config = await normalize(parsed.data, file, substituted, problems)
  if (problems.length > 0) throw new ConfigError(file, problems)
  return deepFreeze(config)
}

// ---------------------------------------------------------------------------------------------
// ${VAR} substitution

const VAR_PATTERN = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

function substitute(
  value: unknown,
  path: KeyPath,
  env: Env,
  root: unknown,
  problems: ConfigProblem[]
): unknown {
  if (typeof value === 'string') {
    return value.replace(VAR_PATTERN, (match, name: string | undefined, fallback: string | undefined) => {
      if (match === '$$') return '$'
      const found = env[name as string]
      if (found !== undefined && found !== '') return found
      if (fallback !== undefined) return fallback
      problems.push({
        path: formatPath(path, root),
        message: `environment variable ${name} is not set (use \${${name}:-default} for an optional value)`,
      })
      return ''
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, [...path, i], env, root, problems))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, [...path, k], env, root, problems)
    return out
  }
  return value
}

// ---------------------------------------------------------------------------------------------
// Validation problems

function zodProblems(error: z.ZodError, root: unknown): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        problems.push({ path: formatPath([...issue.path, key], root), message: 'unknown key' })
      }
    } else if (issue.code === 'invalid_union' && issue.path.at(-1) !== undefined) {
      problems.push({ path: formatPath(issue.path, root), message: unionMessage(issue) })
    } else {
      problems.push({ path: formatPath(issue.path, root), message: issue.message })
    }
  }
  return problems
}

function unionMessage(issue: z.core.$ZodIssueInvalidUnion): string {
  const nested = issue.errors.flat().find((e) => e.code !== 'invalid_type')
  return nested?.message ?? issue.message
}

function formatPath(path: KeyPath, root: unknown): string {
  let out = ''
  let node: unknown = root
  for (const part of path) {
    if (typeof part === 'symbol') continue
    if (typeof part === 'number') {
      out += `[${part}]`
      node = Array.isArray(node) ? node[part] : undefined
      const name = isRecord(node) && typeof node.name === 'string' ? node.name : undefined
      if (name !== undefined && out.startsWith('buckets') && !out.includes('(')) out += `(${name})`
    } else {
      out += out === '' ? part : `.${part}`
      node = isRecord(node) ? node[part] : undefined
    }
  }
  return out
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

// ---------------------------------------------------------------------------------------------
// Normalization: cross-field rules and the shapes the runtime reads

async function normalize(
  file: ConfigFile,
  source: string,
  root: unknown,
  problems: ConfigProblem[]
): Promise<Config> {
  const report = (path: KeyPath, message: string) =>
    problems.push({ path: formatPath(path, root), message })
  const warnings: ConfigWarning[] = []
  const warn = (path: KeyPath, message: string) => warnings.push({ path: formatPath(path, root), message })

  const server = await normalizeServer(file.server, source, report)
  const seenPrefixes = new Map<string, number>()
  const seenNames = new Map<string, number>()
  const buckets: BucketConfig[] = []

  for (const [index, bucket] of file.buckets.entries()) {
    const at = (...rest: KeyPath) => ['buckets', index, ...rest]
    const prefix = normalizePrefix(bucket.path_prefix, (m) => report(at('path_prefix'), m))
    if (prefix !== undefined) {
      const previous = seenPrefixes.get(prefix)
      if (previous !== undefined) {
        report(at('path_prefix'), `"${prefix}" is already used by buckets[${previous}]`)
      }
      seenPrefixes.set(prefix, index)
    }
    const previousName = seenNames.get(bucket.name)
    if (previousName !== undefined) {
      report(at('name'), `"${bucket.name}" is already used by buckets[${previousName}]`)
    }
    seenNames.set(bucket.name, index)

    let auth: JwtVerifierConfig | null = null
    if (bucket.auth.enabled) {
      const own = bucket.auth.jwt
      const block = own ?? file.jwt
      const blockPath = own ? at('auth', 'jwt') : ['jwt']
      if (block === undefined) {
        report(at('auth'), 'auth.enabled is true but neither auth.jwt nor a global jwt block is configured')
      } else if (block.enabled === false) {
        report([...blockPath, 'enabled'], `is false, but bucket "${bucket.name}" requires authentication`)
      } else {
        auth = (await normalizeJwt(block, blockPath, source, report)) ?? null
      }
    } else if (bucket.auth.jwt !== undefined) {
      report(at('auth', 'enabled'), 'auth.jwt is configured but auth.enabled is not true; set enabled: true or remove auth.jwt')
    }

    buckets.push({
      name: bucket.name,
      path_prefix: prefix ?? bucket.path_prefix,
      backend: normalizeBackend(bucket.s3),
      auth,
      authorization: normalizeAuthorization(bucket.authorization, source),
      cors: bucket.cors ?? null,
      cache: normalizeBucketCache(bucket.cache, file.cache, at('cache'), report, warn),
      cdn_cache_control: bucket.cdn_cache_control,
      ip_filter: normalizeIpFilter(bucket.ip_filter, at('ip_filter'), report),
      rate_limit: normalizeRateLimit(
        oneOf(at('rate_limit'), report, { rate_limit: bucket.rate_limit, 's3.rate_limit': bucket.s3.rate_limit })
      ),
      force_download: bucket.force_download,
      ...normalizeRepresentations(bucket, file.image_optimization, at, report, warn),
    })
    if (bucket.watermark !== undefined) {
      // Loaded (with sharp) only for a config that draws watermarks.
      const { checkWatermarkTemplates } = await import('../images/watermark.ts')
      for (const problem of checkWatermarkTemplates(bucket.watermark)) report(at('watermark'), problem)
    }
  }

  const cache = normalizeCache(file.cache, buckets, source, report)
  if (cache !== null) checkBudgets(cache, buckets, report, warn)
  if (file.admin?.claims !== undefined && file.jwt === undefined) {
    report(['admin', 'claims'], 'admin claims need the global jwt block to verify the admin token')
  }
  const adminJwt =
    file.admin?.claims !== undefined && file.jwt !== undefined ? await normalizeJwt(file.jwt, ['jwt'], source, report) : undefined
  const admin =
    file.admin === undefined ? null : { token: file.admin.token, claims: file.admin.claims ?? [], jwt: adminJwt ?? null }
  const audit = file.audit_log?.enabled === true ? { ...file.audit_log, file: resolveAuditPath(file.audit_log.file, source) } : null
  const redisBlock = file.cache?.redis
  const redisUrl = redisBlock?.url ?? redisBlock?.redis_url
  const redis =
    redisBlock === undefined || (redisUrl === undefined && redisBlock.cluster_nodes.length === 0)
      ? null
      : { url: redisUrl ?? '', cluster_nodes: redisBlock.cluster_nodes, key_prefix: redisBlock.key_prefix, timeout_ms: redisBlock.timeout_ms }
  return {
    file: source,
    server,
    buckets,
    logging: file.logging,
    metrics: file.metrics,
    cache,
    admin,
    audit,
    redis,
    observability: file.observability,
    s3_api: await normalizeS3Api(file, server, buckets, source, report),
    warnings,
  }
}

/**
 * The S3 listener, validated even when off (a bad block fails closed): its address, credentials
 * with unique key ids naming configured buckets, and bucket names usable in S3 requests.
 */
async function normalizeS3Api(file: ConfigFile, server: ServerConfig, buckets: BucketConfig[], source: string, report: Report): Promise<S3ApiConfig | null> {
  const block = file.s3_api
  if (block === undefined) return null
  const address = parseAddress(block.address)
  if (address === undefined) report(['s3_api', 'address'], `"${block.address}" must be host:port, e.g. "0.0.0.0:9000"`)
  else if (address.port !== 0 && address.port === server.port) report(['s3_api', 'address'], `port ${address.port} is already server.address's`)
  if (block.domain !== undefined && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(block.domain)) {
    report(['s3_api', 'domain'], `"${block.domain}" must be a DNS name such as s3.example.com`)
  }
  const sts = await normalizeSts(block.sts, file.jwt, source, report)
  if (block.enabled && block.credentials.length === 0 && sts === null && buckets.every((b) => b.auth !== null)) {
    report(['s3_api', 'credentials'], 'is empty and every bucket requires authentication: no S3 request could read anything')
  }
  const names = new Set(buckets.map((b) => b.name))
  const seen = new Map<string, number>()
  for (const [index, credential] of block.credentials.entries()) {
    const at = (...rest: KeyPath) => ['s3_api', 'credentials', index, ...rest]
    const previous = seen.get(credential.access_key_id)
    if (previous !== undefined) report(at('access_key_id'), `"${credential.access_key_id}" is already used by s3_api.credentials[${previous}]`)
    seen.set(credential.access_key_id, index)
    for (const [i, name] of credential.buckets.entries()) {
      if (!names.has(name)) report(at('buckets', i), `"${name}" is not the name of a configured bucket`)
      else if (!S3_BUCKET_NAME.test(name)) report(at('buckets', i), `"${name}" cannot be an S3 bucket name (3-63 lower-case letters, digits, "." and "-")`)
    }
  }
  if (!block.enabled || address === undefined) return null
  return {
    host: address.host,
    port: address.port,
    domain: block.domain?.toLowerCase(),
    region: block.region,
    credentials: block.credentials.map((c) => ({
      access_key_id: c.access_key_id,
      secret_access_key: c.secret_access_key,
      buckets: c.buckets,
      prefixes: c.prefixes ?? [],
      claims: c.claims ?? {},
    })),
    list_cache_seconds: block.list_cache_seconds,
    sts,
  }
}

/** AWS's own bounds for a role session (15 minutes to 12 hours). */
const STS_MIN_SECONDS = 900
const STS_MAX_SECONDS = 43_200

/**
 * `s3_api.sts`, validated even when off: keys that decode to 32 bytes, a verifier for the exchanged
 * tokens (its own jwt block, else the global one), a duration AWS clients accept.
 */
async function normalizeSts(
  block: NonNullable<ConfigFile['s3_api']>['sts'],
  globalJwt: JwtBlock | undefined,
  source: string,
  report: Report
): Promise<S3StsConfig | null> {
  if (block === undefined) return null
  const at = (...rest: KeyPath) => ['s3_api', 'sts', ...rest]
  const keys: Uint8Array[] = []
  for (const [i, text] of block.keys.entries()) {
    const key = stsKey(text)
    if (key === undefined) report(at('keys', i), 'must be 32 bytes, as 64 hex digits or base64 (openssl rand -hex 32)')
    else keys.push(key)
  }
  if (block.enabled && block.keys.length === 0) report(at('keys'), 'needs at least one key to seal session tokens')
  const max = block.max_duration_seconds
  if (max < STS_MIN_SECONDS || max > STS_MAX_SECONDS) {
    report(at('max_duration_seconds'), `must be between ${STS_MIN_SECONDS} and ${STS_MAX_SECONDS} (AWS's session bounds)`)
  }
  const jwtBlock = block.jwt ?? globalJwt
  if (jwtBlock === undefined) {
    if (block.enabled) report(at('jwt'), 'neither s3_api.sts.jwt nor a global jwt block is configured to verify the exchanged tokens')
    return null
  }
  const jwtPath = block.jwt === undefined ? ['jwt'] : at('jwt')
  if (jwtBlock.enabled === false && block.enabled) report([...jwtPath, 'enabled'], 'is false, but s3_api.sts needs it to verify the exchanged tokens')
  const jwt = await normalizeJwt(jwtBlock, jwtPath, source, report)
  if (!block.enabled || jwt === undefined || keys.length !== block.keys.length || keys.length === 0) return null
  return { keys, max_duration_seconds: max, jwt }
}

/** A 32-byte key from 64 hex digits or base64 (standard or URL-safe). */
function stsKey(text: string): Uint8Array | undefined {
  const trimmed = text.trim()
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return new Uint8Array(Buffer.from(trimmed, 'hex'))
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) return undefined
  const bytes = Buffer.from(trimmed, 'base64')
  return bytes.length === 32 ? new Uint8Array(bytes) : undefined
}

/** S3's bucket naming rules (what clients accept in a path or a host name). */
const S3_BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/

function parseAddress(address: string): { host: string; port: number } | undefined {
  const colon = address.lastIndexOf(':')
  let host = colon === -1 ? '' : address.slice(0, colon)
  const port = Number(colon === -1 ? address : address.slice(colon + 1))
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  if (!Number.isInteger(port) || port < 0 || port > 65535 || host === '') return undefined
  return { host, port }
}

const DEFAULT_TTL_SECONDS = 3600
const DEFAULT_MAX_ITEM_BYTES = 10 * 1024 * 1024
const DEFAULT_SLICE_BYTES = 4 * 1024 * 1024
const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
const DEFAULT_DISK_BYTES = 1024 * 1024 * 1024
/** The disk scrub's defaults: Jay's (a tenth of the entries every 6 hours, at most 100, 50 MB/s). */
const DEFAULT_SCRUB: DiskScrubConfig = { enabled: true, interval_seconds: 6 * 3600, sample_rate: 0.1, max_per_run: 100, bytes_per_sec: 50 * 1024 * 1024 }

/** The first value given among alternative spellings; two spellings at once is an error. */
function oneOf<T>(at: KeyPath, report: Report, spellings: Record<string, T | undefined>): T | undefined {
  const given = Object.entries(spellings).filter(([, value]) => value !== undefined)
  if (given.length > 1) report(at, `${given.map(([k]) => k).join(' and ')} mean the same; set one`)
  return given[0]?.[1]
}

function normalizeBucketCache(
  bucket: ConfigFile['buckets'][number]['cache'],
  global: ConfigFile['cache'],
  at: KeyPath,
  report: Report,
  warn: Report
): BucketCacheConfig | null {
  if (!(bucket?.enabled ?? global?.enabled ?? false)) {
    if (bucket?.max_size !== undefined) warn([...at, 'max_size'], 'has no effect: this bucket does not cache (cache.enabled is not true)')
    return null
  }
  const ttl =
    oneOf(at, report, { ttl_seconds: bucket?.ttl_seconds, ttl: bucket?.ttl }) ??
    oneOf(['cache'], report, { ttl_seconds: global?.ttl_seconds, ttl: global?.ttl })
  const maxItem =
    oneOf(at, report, { max_item_size: bucket?.max_item_size, max_item_size_mb: bucket?.max_item_size_mb }) ??
    oneOf(['cache'], report, { max_item_size: global?.max_item_size, max_item_size_mb: global?.max_item_size_mb })
  return {
    ttl_seconds: ttl ?? DEFAULT_TTL_SECONDS,
    max_item_bytes: maxItem ?? DEFAULT_MAX_ITEM_BYTES,
    stale_if_error_seconds: bucket?.stale_if_error_seconds ?? global?.stale_if_error_seconds ?? 86400,
    slice_bytes: (bucket?.slice?.enabled ?? global?.slice?.enabled ?? false) ? (bucket?.slice?.slice_size ?? global?.slice?.slice_size ?? DEFAULT_SLICE_BYTES) : null,
    max_bytes: bucket?.max_size ?? null,
  }
}

function normalizeCache(
  global: ConfigFile['cache'],
  buckets: BucketConfig[],
  source: string,
  report: Report
): CacheConfig | null {
  const caching = buckets.filter((b) => b.cache !== null)
  if (caching.length === 0) return null
  const disk = global?.disk
  const redis = global?.redis
  const layers: CacheLayer[] = global?.layers ?? [
    'memory',
    ...(disk === undefined ? [] : (['disk'] as const)),
    ...(redis === undefined ? [] : (['redis'] as const)),
  ]
  const dir = disk === undefined ? undefined : oneOf(['cache', 'disk'], report, { dir: disk.dir, cache_dir: disk.cache_dir })
  if (layers.includes('disk') && dir === undefined) report(['cache', 'disk', 'dir'], 'is required for the disk layer')
  const url = redis === undefined ? undefined : oneOf(['cache', 'redis'], report, { url: redis.url, redis_url: redis.redis_url })
  if (layers.includes('redis') && url === undefined && (redis?.cluster_nodes.length ?? 0) === 0) {
    report(['cache', 'redis', 'url'], 'is required for the redis layer (or set cluster_nodes)')
  }
  const near = (path: string) => nearConfig(path, source)
  return {
    layers,
    budgets: Object.fromEntries(caching.flatMap((b) => (b.cache?.max_bytes == null ? [] : [[b.name, b.cache.max_bytes]]))),
    // A slice is an entry of its own: the tiers must take one even when it is over max_item_size.
    max_item_bytes: Math.max(...caching.map((b) => Math.max((b.cache as BucketCacheConfig).max_item_bytes, (b.cache as BucketCacheConfig).slice_bytes ?? 0))),
    stale_if_error_seconds: Math.max(...caching.map((b) => (b.cache as BucketCacheConfig).stale_if_error_seconds)),
    memory: {
      max_bytes:
        oneOf(['cache', 'memory'], report, {
          max_size: global?.memory?.max_size,
          max_cache_size_mb: global?.memory?.max_cache_size_mb,
        }) ?? DEFAULT_MEMORY_BYTES,
    },
    disk:
      layers.includes('disk') && dir !== undefined
        ? {
            dir: near(dir),
            max_bytes:
              oneOf(['cache', 'disk'], report, {
                max_size: disk?.max_size,
                max_cache_size_mb: disk?.max_cache_size_mb,
                max_disk_cache_size_mb: disk?.max_disk_cache_size_mb,
              }) ?? DEFAULT_DISK_BYTES,
          }
        : null,
    disk_scrub:
      layers.includes('disk') && dir !== undefined
        ? {
            enabled: disk?.scrub?.enabled ?? DEFAULT_SCRUB.enabled,
            interval_seconds: disk?.scrub?.interval_seconds ?? DEFAULT_SCRUB.interval_seconds,
            sample_rate: disk?.scrub?.sample_rate ?? DEFAULT_SCRUB.sample_rate,
            max_per_run: disk?.scrub?.max_per_run ?? DEFAULT_SCRUB.max_per_run,
            bytes_per_sec: disk?.scrub?.bytes_per_sec ?? DEFAULT_SCRUB.bytes_per_sec,
          }
        : null,
    redis:
      layers.includes('redis') && redis !== undefined
        ? {
            url: url ?? '',
            cluster_nodes: redis.cluster_nodes,
            key_prefix: redis.key_prefix,
            timeout_ms: redis.timeout_ms,
            ttl_seconds: redis.ttl_seconds,
          }
        : null,
  }
}

type Report = (path: KeyPath, message: string) => void

/**
 * Per-bucket budgets: a key's bucket must be unambiguous (keys are `<bucket>/<key>`), and budgets
 * that leave a tier no room for others, or do not fit in it, are worth a warning.
 */
function checkBudgets(cache: CacheConfig, buckets: BucketConfig[], report: Report, warn: Report): void {
  const budgeted = Object.keys(cache.budgets)
  if (budgeted.length === 0) return
  const caching = buckets.flatMap((b, index) => (b.cache === null ? [] : [{ name: b.name, index, budget: b.cache.max_bytes }]))
  for (const bucket of caching) {
    const shadowing = caching.find((other) => bucket.name.startsWith(`${other.name}/`))
    if (shadowing !== undefined) {
      report(
        ['buckets', bucket.index, 'name'],
        `"${bucket.name}" starts with "${shadowing.name}/" (buckets[${shadowing.index}]): with cache.max_size set, their cache keys (<bucket>/<key>) cannot be told apart; rename one`
      )
    }
  }
  const tiers = [
    ...(cache.layers.includes('memory') ? [{ name: 'memory', bytes: cache.memory.max_bytes }] : []),
    ...(cache.disk === null ? [] : [{ name: 'disk', bytes: cache.disk.max_bytes }]),
  ]
  if (tiers.length === 0) {
    for (const b of caching) {
      if (b.budget !== null) warn(['buckets', b.index, 'cache', 'max_size'], 'has no effect: the cache has no memory or disk tier (a Redis tier is bounded by Redis\'s own maxmemory)')
    }
    return
  }
  for (const tier of tiers) {
    let reserved = 0
    for (const b of caching) {
      if (b.budget === null) continue
      reserved += Math.min(b.budget, tier.bytes)
      if (b.budget >= tier.bytes) {
        warn(
          ['buckets', b.index, 'cache', 'max_size'],
          `${formatBytes(b.budget)} is not less than cache.${tier.name}.max_size (${formatBytes(tier.bytes)}): in the ${tier.name} tier this bucket may take all of it`
        )
      }
    }
    const unbudgeted = caching.filter((b) => b.budget === null).map((b) => b.name)
    const over = reserved > tier.bytes
    const starved = reserved >= tier.bytes && unbudgeted.length > 0
    if (over || starved) {
      const budgets = over
        ? `the buckets' cache.max_size budgets add up to ${formatBytes(reserved)}, more than ${formatBytes(tier.bytes)}: budgeted buckets can evict each other's entries in the ${tier.name} tier`
        : "the buckets' cache.max_size budgets take all of it"
      const rest = starved ? `; ${unbudgeted.join(', ')} (without a budget) get no room in the ${tier.name} tier` : ''
      warn(['cache', tier.name, 'max_size'], `${budgets}${rest}`)
    }
  }
}

function formatBytes(bytes: number): string {
  for (const [unit, size] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(2))} ${unit}`
  }
  return `${bytes} bytes`
}

function normalizeAuthorization(
  authz: ConfigFile['buckets'][number]['authorization'],
  source: string
): AuthorizationConfig | null {
  if (authz === undefined) return null
  const { cache_ttl_seconds, cache_size } = authz
  if (authz.url !== undefined) {
    const { url, policy_path, timeout_ms, fail_mode } = authz
    return { kind: 'remote', url, policy_path, timeout_ms, fail_mode, cache_ttl_seconds, cache_size }
  }
  const near = (file: string) => nearConfig(file, source)
  return {
    kind: 'wasm',
    policy_file: near(authz.policy_file as string),
    entrypoint: authz.entrypoint,
    data_file: authz.data_file === undefined ? undefined : near(authz.data_file),
    cache_ttl_seconds,
    cache_size,
  }
}

async function normalizeServer(server: ConfigFile['server'], source: string, report: Report): Promise<ServerConfig> {
  const address = server.address
  const colon = address.lastIndexOf(':')
  let host = colon === -1 ? '' : address.slice(0, colon)
  const port = Number(colon === -1 ? address : address.slice(colon + 1))
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  if (!Number.isInteger(port) || port < 0 || port > 65535 || host === '') {
    report(['server', 'address'], `"${address}" must be host:port, e.g. "0.0.0.0:8080"`)
  }
  if (server.workers !== undefined && server.threads !== undefined) {
    report(['server', 'threads'], 'use either server.workers or server.threads (an alias), not both')
  }
  const limits = server.rate_limit
  const rateLimit =
    limits === undefined || !limits.enabled
      ? null
      : {
          global: normalizeRateLimit(limits.global),
          per_ip: normalizeRateLimit(limits.per_ip),
          per_user: normalizeRateLimit(limits.per_user),
        }
  return {
    host,
    port,
    workers: server.workers ?? server.threads ?? 1,
    shutdown_timeout_seconds: server.shutdown_timeout_seconds,
    headers_timeout_seconds: server.headers_timeout_seconds,
    keepalive_timeout_seconds: server.keepalive_timeout_seconds,
    idle_timeout_seconds: server.idle_timeout_seconds,
    max_uri_length: server.security_limits.max_uri_length,
    max_header_size: server.security_limits.max_header_size,
    debug_headers: server.debug_headers,
    tls: await normalizeTls(server.https, source, report),
    trusted_proxies: checkedRanges(server.trusted_proxies, ['server', 'trusted_proxies'], report),
    ip_filter: normalizeIpFilter(server.ip_filter, ['server', 'ip_filter'], report),
    rate_limit: rateLimit === null || Object.values(rateLimit).every((l) => l === null) ? null : rateLimit,
    max_concurrent_requests: server.max_concurrent_requests ?? null,
  }
}

/** Reads the certificate and key (at start and at every reload) and checks they make a TLS context. */
async function normalizeTls(https: ConfigFile['server']['https'], source: string, report: Report): Promise<TlsConfig | null> {
  if (https === undefined || !https.enabled) return null
  const read = async (key: 'cert_path' | 'key_path'): Promise<{ path: string; pem: string } | undefined> => {
    const configured = https[key]
    if (configured === undefined) return void report(['server', 'https', key], 'is required when https.enabled is true')
    const path = nearConfig(configured, source)
    try {
      return { path, pem: await readFile(path, 'utf8') }
    } catch (err) {
      return void report(['server', 'https', key], `cannot read ${path} (${describeIoError(err)})`)
    }
  }
  const [cert, key] = [await read('cert_path'), await read('key_path')]
  if (cert === undefined || key === undefined) return null
  try {
    createSecureContext({ cert: cert.pem, key: key.pem, minVersion: https.min_version })
  } catch (err) {
    report(['server', 'https'], `${cert.path} and ${key.path} are not a usable PEM certificate and key (${(err as Error).message})`)
    return null
  }
  return { cert_path: cert.path, key_path: key.path, cert: cert.pem, key: key.pem, min_version: https.min_version }
}

/** The entries unchanged; each malformed one is reported with its index. */
function checkedRanges(list: string[], at: KeyPath, report: Report): string[] {
  list.forEach((entry, i) => {
    if (parseRange(entry) === undefined) report([...at, i], `"${entry}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)`)
  })
  return list
}

function normalizeIpFilter(filter: IpFilterFile | undefined, at: KeyPath, report: Report): IpFilterConfig | null {
  if (filter === undefined || !filter.enabled) return null
  const allowlist = checkedRanges(filter.allowlist, [...at, 'allowlist'], report)
  const blocklist = checkedRanges(filter.blocklist, [...at, 'blocklist'], report)
  return allowlist.length === 0 && blocklist.length === 0 ? null : { allowlist, blocklist }
}

function normalizeRateLimit(limit: RateLimitFile | undefined): RateLimitConfig | null {
  if (limit === undefined) return null
  return { requests_per_second: limit.requests_per_second, burst: limit.burst ?? Math.max(1, Math.ceil(limit.requests_per_second)) }
}

/** Returns the normalized prefix, or undefined after reporting why it is unusable. */
function normalizePrefix(prefix: string, report: (message: string) => void): string | undefined {
  if (!prefix.startsWith('/')) return void report(`"${prefix}" must start with "/"`)
  if (/[?#\\\0%]/.test(prefix)) return void report(`"${prefix}" must not contain ?, #, %, \\ or NUL`)
  const trimmed = prefix.replace(/\/+$/, '')
  if (trimmed === '') {
    return void report(`"/" would shadow the proxy's own endpoints (${RESERVED_PATHS.join(', ')}); use a named prefix`)
  }
  const segments = trimmed.slice(1).split('/')
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    return void report(`"${prefix}" must not contain empty, "." or ".." segments`)
  }
  const reserved = RESERVED_PATHS.find((r) => trimmed === r || trimmed.startsWith(`${r}/`))
  if (reserved !== undefined) return void report(`"${prefix}" collides with the proxy's own endpoint ${reserved}`)
  return trimmed
}

const HMAC_ALGORITHMS: readonly JwtAlgorithm[] = ['HS256', 'HS384', 'HS512']

async function normalizeJwt(
  block: JwtBlock,
  at: KeyPath,
  source: string,
  report: Report
): Promise<JwtVerifierConfig | undefined> {
  const pemPaths = (['public_key_path', 'rsa_public_key_path', 'ecdsa_public_key_path'] as const).filter(
    (k) => block[k] !== undefined
  )
  const hasSecret = block.secret !== undefined && block.secret !== ''
  const kinds = [hasSecret, pemPaths.length > 0, block.keys !== undefined, block.jwks_url !== undefined]
  const count = kinds.filter(Boolean).length + Math.max(0, pemPaths.length - 1)
  if (count !== 1) {
    const message = count === 0 ? 'no verification key: set' : 'set exactly one of'
    return void report(at, `${message} secret (HS*), public_key_path (RS*, PS*, ES*, EdDSA), keys, or jwks_url`)
  }
  if (block.algorithms !== undefined && block.algorithm !== undefined) {
    return void report([...at, 'algorithm'], 'use either algorithm or algorithms, not both')
  }
  const configured = block.algorithms ?? (block.algorithm === undefined ? undefined : [block.algorithm])

  let key: VerificationKey
  let algorithms: JwtAlgorithm[]
  if (hasSecret) {
    algorithms = configured ?? ['HS256']
    if (!checkFamily(algorithms, 'hmac', [...at, 'algorithm'], report)) return
    const secret = hmacSecret(block.secret as string, [...at, 'secret'], report)
    if (secret === undefined) return
    key = { kind: 'secret', secret }
  } else if (pemPaths.length > 0) {
    algorithms = configured ?? ['RS256']
    if (!checkFamily(algorithms, 'public', [...at, 'algorithm'], report)) return
    const name = pemPaths[0] as (typeof pemPaths)[number]
    const loaded = await readPem(block[name] as string, source, [...at, name], report)
    if (loaded === undefined) return
    key = { kind: 'public_key', ...loaded }
  } else if (block.keys !== undefined) {
    const keys: NamedKey[] = []
    const ids = new Set<string>()
    for (const [i, entry] of block.keys.entries()) {
      const where = [...at, 'keys', i]
      if (ids.has(entry.id)) return void report([...where, 'id'], `"${entry.id}" is used by another key`)
      ids.add(entry.id)
      const hmac = HMAC_ALGORITHMS.includes(entry.algorithm)
      if ((entry.secret !== undefined) === (entry.path !== undefined)) {
        return void report(where, 'set exactly one of secret (HS*) or path (a PEM public key)')
      }
      if (hmac !== (entry.secret !== undefined)) {
        return void report(where, `${entry.algorithm} needs ${hmac ? 'a secret' : 'a public key path'}`)
      }
      const secret = entry.secret === undefined ? undefined : hmacSecret(entry.secret, [...where, 'secret'], report)
      const pem = entry.path === undefined ? undefined : await readPem(entry.path, source, [...where, 'path'], report)
      if (secret === undefined && pem === undefined) return
      keys.push({ id: entry.id, algorithm: entry.algorithm, secret, pem: pem?.pem })
    }
    algorithms = configured ?? [...new Set(keys.map((k) => k.algorithm))]
    key = { kind: 'keys', keys }
  } else {
    algorithms = configured ?? ['RS256']
    if (!checkFamily(algorithms, 'public', [...at, 'algorithm'], report)) return
    if (block.jwks_cache_seconds >= block.jwks_stale_max_seconds) {
      return void report([...at, 'jwks_stale_max_seconds'], 'must be longer than jwks_cache_seconds (it is how long a key set may outlive its freshness)')
    }
    key = {
      kind: 'jwks',
      jwks: {
        url: block.jwks_url as string,
        cache_seconds: block.jwks_cache_seconds,
        stale_max_seconds: block.jwks_stale_max_seconds,
        refetch_cooldown_seconds: block.jwks_refetch_cooldown_seconds,
        timeout_ms: block.jwks_timeout_ms,
      },
    }
  }

  return {
    algorithms,
    key,
    token_sources: (block.token_sources ?? [{ type: 'bearer' }]).map(normalizeTokenSource),
    claims: [...(block.claims_verification ?? []), ...(block.claims ?? [])],
    issuer: block.issuer,
    audience: block.audience === undefined ? undefined : [block.audience].flat(),
    required_claims: block.required_claims ?? [],
    require_exp: block.require_exp,
    clock_skew_seconds: block.clock_skew_seconds,
    max_token_lifetime_seconds: block.max_token_lifetime_seconds,
    path_scope_claim: block.path_scope_claim,
    token_cache_size: block.token_cache_size,
    token_cache_ttl_seconds: block.token_cache_ttl_seconds,
  }
}

/** HMAC keys must be symmetric-only, asymmetric keys public-only: no algorithm confusion. */
function checkFamily(algorithms: JwtAlgorithm[], family: 'hmac' | 'public', at: KeyPath, report: Report): boolean {
  const wrong = algorithms.filter((a) => HMAC_ALGORITHMS.includes(a) !== (family === 'hmac'))
  if (wrong.length === 0) return true
  report(at, `${wrong.join(', ')} needs ${family === 'hmac' ? 'a public key, not a secret' : 'a secret, not a public key'}`)
  return false
}

function hmacSecret(value: string, at: KeyPath, report: Report): Uint8Array | undefined {
  const secret = new TextEncoder().encode(value)
  if (secret.byteLength >= 32) return secret
  return void report(at, `must be at least 32 bytes for HMAC (got ${secret.byteLength})`)
}

async function readPem(
  configured: string,
  source: string,
  at: KeyPath,
  report: Report
): Promise<{ pem: string; path: string } | undefined> {
  const path = nearConfig(configured, source)
  let pem: string
  try {
    pem = await readFile(path, 'utf8')
  } catch (err) {
    return void report(at, `cannot read ${path} (${describeIoError(err)})`)
  }
  try {
    createPublicKey(pem)
  } catch {
    return void report(at, `${path} is not a PEM public key (expected "BEGIN PUBLIC KEY")`)
  }
  return { pem, path }
}

/** Yatagarasu spells the bearer source as a header named Authorization with prefix "Bearer ". */
function normalizeTokenSource(source: TokenSource): TokenSource {
  if (
    source.type === 'header' &&
    source.name.toLowerCase() === 'authorization' &&
    source.prefix?.trim().toLowerCase() === 'bearer'
  ) {
    return { type: 'bearer' }
  }
  return source
}

function describeIoError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code === 'ENOENT') return 'no such file'
  if (code === 'EACCES') return 'permission denied'
  if (code === 'EISDIR') return 'is a directory'
  return err instanceof Error ? err.message : String(err)
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    if (ArrayBuffer.isView(value)) return value
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

/**
 * The bucket's backends in priority order. A replica inherits every field it leaves out from the
 * bucket's `s3` block (Yatagarasu's legacy fields). In a replica set the SDK does not retry on its
 * own: the next replica is the retry.
 */
function normalizeBackend(s3: S3Config): BackendConfig {
  const shared = {
    region: s3.region,
    endpoint: s3.endpoint,
    access_key: s3.access_key,
    secret_key: s3.secret_key,
    session_token: s3.session_token,
    force_path_style: s3.force_path_style,
    timeout: s3.timeout,
    connect_timeout: s3.connect_timeout,
    max_connections: s3.max_connections,
    max_attempts: s3.max_attempts,
  }
  const replicas: S3Connection[] =
    s3.replicas === undefined
      ? [{ ...shared, name: 'primary', bucket: s3.bucket as string }]
      : [...s3.replicas]
          .sort((a, b) => a.priority - b.priority)
          .map((r) => {
            const ownCredentials = r.access_key !== undefined
            return {
              ...shared,
              name: r.name,
              bucket: r.bucket ?? (s3.bucket as string),
              region: r.region ?? s3.region,
              endpoint: r.endpoint ?? s3.endpoint,
              access_key: ownCredentials ? r.access_key : s3.access_key,
              secret_key: ownCredentials ? r.secret_key : s3.secret_key,
              session_token: ownCredentials ? r.session_token : s3.session_token,
              force_path_style: r.force_path_style ?? s3.force_path_style,
              timeout: r.timeout ?? s3.timeout,
              max_attempts: (s3.replicas?.length ?? 1) > 1 ? 1 : s3.max_attempts,
            }
          })
  const breakerDefaults = { failure_threshold: 5, success_threshold: 2, timeout_seconds: 30, half_open_max_requests: 1 }
  return {
    replicas,
    circuit_breaker: s3.circuit_breaker ?? (s3.replicas === undefined ? null : breakerDefaults),
    health_check: { key: s3.health_check.key, interval_seconds: s3.health_check.interval_seconds },
    hedge_after_ms: s3.hedge_after_ms,
    deadline_seconds: s3.timeout,
  }
}

/** A relative audit file path is relative to the config file, as policy files are. */
function resolveAuditPath<T extends { path: string } | undefined>(file: T, source: string): T {
  if (file === undefined || isAbsolute(file.path)) return file
  return { ...file, path: nearConfig(file.path, source) }
}

/** Paths in the config (keys, certificates, policies, cache and audit files) are relative to it. */
function nearConfig(path: string, source: string): string {
  return isAbsolute(path) ? path : resolve(dirname(source), path)
}

/** Images, watermark and compression of one bucket, with the cross-field rules their schemas cannot see. */
function normalizeRepresentations(
  bucket: ConfigFile['buckets'][number],
  global: ConfigFile['image_optimization'],
  at: (...rest: KeyPath) => KeyPath,
  report: (path: KeyPath, message: string) => void,
  warn: (path: KeyPath, message: string) => void
): Pick<BucketConfig, 'images' | 'watermark' | 'compression'> {
  const images = normalizeImages(bucket.images, global)
  const watermark = normalizeWatermark(bucket.watermark)
  if (images !== null) {
    for (const [name, preset] of Object.entries(images.presets)) {
      const dpr = preset.dpr ?? 1
      if ((preset.width ?? 0) * dpr > images.max_width) report(at('images', 'presets', name, 'width'), `${preset.width}${dpr > 1 ? ` x dpr ${dpr}` : ''} is over max_width ${images.max_width}`)
      if ((preset.height ?? 0) * dpr > images.max_height) report(at('images', 'presets', name, 'height'), `${preset.height}${dpr > 1 ? ` x dpr ${dpr}` : ''} is over max_height ${images.max_height}`)
      if (preset.format !== 'auto' && !images.formats.includes(preset.format)) report(at('images', 'presets', name, 'format'), `"${preset.format}" is not in images.formats`)
    }
    if (!images.allow_arbitrary && Object.keys(images.presets).length === 0) {
      warn(at('images'), 'images are enabled with no presets and allow_arbitrary false: every request with image parameters is refused')
    }
  } else if (bucket.images?.presets !== undefined && Object.keys(bucket.images.presets).length > 0) {
    warn(at('images'), 'presets are configured but images are not enabled for this bucket (images.enabled or image_optimization.enabled)')
  }
  if (watermark !== null && bucket.auth.enabled !== true && watermark.rules.some((r) => r.watermarks.some((w) => w.type === 'text' && w.text.includes('{{jwt.')))) {
    report(at('watermark'), 'a {{jwt.*}} template needs auth.enabled on this bucket: without a token it resolves to nothing')
  }
  if (watermark !== null && images === null) {
    report(at('watermark'), 'a watermark needs images enabled for this bucket (images.enabled or image_optimization.enabled): the proxy draws it with the image renderer')
  }
  return { images, watermark, compression: normalizeCompression(bucket.compression) }
}
