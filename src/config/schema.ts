// The one definition of the configuration file. Accepts Yatagarasu's config.yaml format (and the
// alternative spellings its README shows), rejects unknown keys, and normalizes to `Config`.
// A key is implemented or refused, never silently ignored: a setting the user relies on (say, an IP
// allowlist) must never do nothing. Settings that work but may not do what the user expects (a
// cache budget larger than its tier) are accepted with a warning (Config.warnings, config/load.ts).
import { z } from 'zod'

export const RESERVED_PATHS = ['/health', '/ready', '/metrics', '/admin'] as const

import { bool, count, megabytes, nonNegative, num, positive, size, text } from './primitives.ts'
import {
  bucketCompressionSchema,
  bucketImagesSchema,
  bucketWatermarkSchema,
  imageOptimizationSchema,
  type CompressionConfig,
  type ImagesConfig,
  type WatermarkConfig,
} from './representations-schema.ts'

// ---------------------------------------------------------------------------------------------
// Traffic limits and access control (shared by server and buckets)

/** CIDRs or single addresses, IPv4 or IPv6; parsed (and refused when malformed) by config/load.ts. */
const addressList = z.array(text).default([])

export const ipFilterSchema = z.strictObject({
  enabled: bool.default(true),
  /** When not empty, only these ranges are admitted. */
  allowlist: addressList,
  /** Always denied, even when also allowlisted. */
  blocklist: addressList,
})

export const rateLimitSchema = z.strictObject({
  requests_per_second: positive,
  /** Requests a client may send at once before the average rate applies (default: requests_per_second). */
  burst: count.optional(),
})

// ---------------------------------------------------------------------------------------------
// JWT

export const JWT_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number]
const jwtAlgorithm = z.enum(JWT_ALGORITHMS)

const tokenSourceSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('bearer') }),
  // Header names are case-insensitive: kept in lower case, as Node parses request headers.
  z.strictObject({ type: z.literal('header'), name: text.transform((name) => name.toLowerCase()), prefix: z.string().optional() }),
  z.strictObject({ type: z.literal('query'), name: text }),
  z.strictObject({ type: z.literal('cookie'), name: text }),
])
export type TokenSource = z.output<typeof tokenSourceSchema>

export const CLAIM_OPERATORS = [
  'equals',
  'not_equals',
  'in',
  'not_in',
  'contains',
  'contains_any',
  'gt',
  'gte',
  'lt',
  'lte',
  'exists',
] as const
export type ClaimOperator = (typeof CLAIM_OPERATORS)[number]

const claimRuleSchema = z
  .strictObject({
    claim: text,
    operator: z.enum(CLAIM_OPERATORS),
    value: z.unknown().optional(),
  })
  .superRefine((rule, ctx) => {
    const listOperators: readonly string[] = ['in', 'not_in', 'contains_any']
    if (rule.operator === 'exists') return
    if (rule.value === undefined) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `is required for "${rule.operator}"` })
    } else if (listOperators.includes(rule.operator) && !Array.isArray(rule.value)) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `must be a list for "${rule.operator}"` })
    } else if (['gt', 'gte', 'lt', 'lte'].includes(rule.operator) && typeof rule.value !== 'number') {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `must be a number for "${rule.operator}"` })
    }
  })
export type ClaimRule = z.output<typeof claimRuleSchema>

const jwtSchema = z.strictObject({
  enabled: bool.optional(),
  secret: z.string().optional(),
  algorithm: jwtAlgorithm.optional(),
  algorithms: z.array(jwtAlgorithm).min(1).optional(),
  public_key_path: text.optional(),
  rsa_public_key_path: text.optional(),
  ecdsa_public_key_path: text.optional(),
  token_sources: z.array(tokenSourceSchema).min(1).optional(),
  claims_verification: z.array(claimRuleSchema).optional(),
  claims: z.array(claimRuleSchema).optional(),
  issuer: text.optional(),
  audience: z.union([text, z.array(text).min(1)]).optional(),
  required_claims: z.array(text).optional(),
  require_exp: bool.default(true),
  clock_skew_seconds: nonNegative.default(30),
  max_token_lifetime_seconds: positive.optional(),
  keys: z
    .array(
      z.strictObject({
        id: text,
        algorithm: jwtAlgorithm,
        secret: z.string().optional(),
        path: text.optional(),
      })
    )
    .min(1)
    .optional(),
  jwks_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  jwks_cache_seconds: positive.default(300),
  jwks_stale_max_seconds: positive.default(86400),
  jwks_refetch_cooldown_seconds: positive.default(30),
  jwks_timeout_ms: positive.default(2000),
  path_scope_claim: text.optional(),
  token_cache_size: num.pipe(z.number().int().min(0)).default(10000),
  token_cache_ttl_seconds: positive.default(300),
})
export type JwtBlock = z.output<typeof jwtSchema>

// ---------------------------------------------------------------------------------------------
// Buckets

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' })

/** One S3 backend of a replica set; fields left out are taken from the bucket's `s3` block. */
const replicaSchema = z.strictObject({
  name: text,
  bucket: text.optional(),
  region: text.optional(),
  endpoint: httpUrl.optional(),
  access_key: z.string().optional(),
  secret_key: z.string().optional(),
  session_token: z.string().optional(),
  force_path_style: bool.optional(),
  priority: count,
  /** Seconds to wait for this replica's response headers (and the longest body stall). */
  timeout: positive.optional(),
})
export type ReplicaFile = z.output<typeof replicaSchema>

const circuitBreakerSchema = z.strictObject({
  failure_threshold: count.default(5),
  success_threshold: count.default(2),
  timeout_seconds: positive.default(30),
  half_open_max_requests: count.default(1),
})
export type CircuitBreakerConfig = z.output<typeof circuitBreakerSchema>

const s3Schema = z
  .strictObject({
    /** Required unless every replica names its own bucket. */
    bucket: text.optional(),
    region: text.default('us-east-1'),
    endpoint: httpUrl.optional(),
    access_key: z.string().optional(),
    secret_key: z.string().optional(),
    session_token: z.string().optional(),
    force_path_style: bool.optional(),
    /**
     * Seconds to wait for response headers, and the longest a body may stall mid-transfer. With
     * replicas: the whole request's deadline across failovers (each replica has its own `timeout`).
     */
    timeout: positive.default(30),
    connect_timeout: positive.default(5),
    max_connections: count.default(256),
    max_attempts: count.default(2),
    replicas: z.array(replicaSchema).min(1).optional(),
    circuit_breaker: circuitBreakerSchema.optional(),
    health_check: z
      .strictObject({
        key: text.optional(),
        interval_seconds: positive.default(10),
      })
      .prefault({}),
    hedge_after_ms: positive.optional(),
    /** Yatagarasu's spelling of `buckets[].rate_limit`. */
    rate_limit: rateLimitSchema.optional(),
  })
  .superRefine((s3, ctx) => {
    const pair = (where: { access_key?: string | undefined; secret_key?: string | undefined }, path: (string | number)[]) => {
      if ((where.access_key === undefined) !== (where.secret_key === undefined)) {
        ctx.addIssue({
          code: 'custom',
          path: [...path, where.access_key === undefined ? 'access_key' : 'secret_key'],
          message: 'access_key and secret_key must be set together (or both left out to use the AWS default credential chain)',
        })
      }
    }
    pair(s3, [])
    if (s3.replicas === undefined) {
      if (s3.bucket === undefined) ctx.addIssue({ code: 'custom', path: ['bucket'], message: 'is required (or configure replicas)' })
      if (s3.hedge_after_ms !== undefined) ctx.addIssue({ code: 'custom', path: ['hedge_after_ms'], message: 'needs at least two replicas' })
      return
    }
    const names = new Map<string, number>()
    const priorities = new Map<number, number>()
    s3.replicas.forEach((replica, i) => {
      pair(replica, ['replicas', i])
      if (replica.bucket === undefined && s3.bucket === undefined) {
        ctx.addIssue({ code: 'custom', path: ['replicas', i, 'bucket'], message: 'is required (no s3.bucket to default to)' })
      }
      const sameName = names.get(replica.name)
      if (sameName !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['replicas', i, 'name'], message: `"${replica.name}" is already used by replicas[${sameName}]` })
      }
      names.set(replica.name, i)
      const samePriority = priorities.get(replica.priority)
      if (samePriority !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['replicas', i, 'priority'], message: `${replica.priority} is already used by replicas[${samePriority}]` })
      }
      priorities.set(replica.priority, i)
    })
    if (s3.hedge_after_ms !== undefined && s3.replicas.length < 2) {
      ctx.addIssue({ code: 'custom', path: ['hedge_after_ms'], message: 'needs at least two replicas' })
    }
  })

const corsSchema = z
  .strictObject({
    allowed_origins: z.array(text).min(1),
    allowed_headers: z.array(text).default([]),
    expose_headers: z.array(text).default([]),
    max_age_seconds: nonNegative.default(600),
    allow_credentials: bool.default(false),
  })
  .superRefine((cors, ctx) => {
    if (cors.allow_credentials && cors.allowed_origins.includes('*')) {
      ctx.addIssue({
        code: 'custom',
        path: ['allowed_origins'],
        message: '"*" cannot be combined with allow_credentials: list the origins explicitly',
      })
    }
  })
export type CorsConfig = z.output<typeof corsSchema>

const authorizationSchema = z
  .strictObject({
    type: z.literal('opa'),
    // In process: a policy compiled with `opa build -t wasm` (policy.wasm or bundle.tar.gz).
    policy_file: text.optional(),
    entrypoint: text.default('yatagarasu/authz/allow'),
    data_file: text.optional(),
    // Remote: an OPA server's Data API.
    url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
    policy_path: text.default('yatagarasu/authz/allow'),
    timeout_ms: positive.default(100),
    fail_mode: z.enum(['closed', 'open']).default('closed'),
    cache_ttl_seconds: nonNegative.default(60),
    cache_size: num.pipe(z.number().int().min(0)).default(10000),
  })
  .superRefine((authz, ctx) => {
    if ((authz.policy_file === undefined) === (authz.url === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'set exactly one of policy_file (in-process wasm) or url (OPA server)' })
    }
    if (authz.url !== undefined && authz.data_file !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['data_file'], message: 'only applies to an in-process policy_file' })
    }
  })

export const CACHE_LAYERS = ['memory', 'disk', 'redis'] as const
export type CacheLayer = (typeof CACHE_LAYERS)[number]

const redisUrl = z
  .string()
  .refine((value) => {
    try {
      return ['redis:', 'rediss:'].includes(new URL(value).protocol)
    } catch {
      return false
    }
  }, 'must be a redis:// or rediss:// URL')

/** Objects over max_item_size kept as aligned slices (cache/slices.ts); bounds keep a slice a sane buffer. */
const sliceSchema = z.strictObject({
  enabled: bool.optional(),
  slice_size: size
    .pipe(z.number().min(64 * 1024, 'must be at least 64KB').max(64 * 1024 * 1024, 'must be at most 64MB'))
    .optional(),
})

const MAX_SCRUB_INTERVAL_SECONDS = 24 * 86400

/** The disk tier's scrub (cache/disk-scrub.ts): a sample of entries read whole and checked now and then. */
const scrubSchema = z.strictObject({
  enabled: bool.optional(),
  // Timers take at most 2^31 - 1 ms: a longer interval would fire at once, again and again.
  interval_seconds: num.pipe(z.number().positive('must be greater than 0').max(MAX_SCRUB_INTERVAL_SECONDS, `must be at most ${MAX_SCRUB_INTERVAL_SECONDS} (24 days)`)).optional(),
  sample_rate: num.pipe(z.number().gt(0, 'must be greater than 0').max(1, 'must be at most 1')).optional(),
  max_per_run: count.optional(),
  bytes_per_sec: z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      if (value === 0 || value === '0') return 0
      const parsed = size.safeParse(value)
      if (parsed.success && parsed.data >= 1) return parsed.data
      ctx.addIssue({ code: 'custom', message: 'must be 0 (no limit) or a size such as 50MB' })
      return z.NEVER
    })
    .optional(),
})

const cacheSchema = z.strictObject({
  enabled: bool.default(false),
  layers: z.array(z.enum(CACHE_LAYERS)).min(1).optional(),
  ttl_seconds: positive.optional(),
  ttl: positive.optional(),
  max_item_size: size.optional(),
  max_item_size_mb: megabytes.optional(),
  stale_if_error_seconds: nonNegative.default(86400),
  slice: sliceSchema.optional(),
  memory: z
    .strictObject({ max_size: size.optional(), max_cache_size_mb: megabytes.optional() })
    .optional(),
  disk: z
    .strictObject({
      dir: text.optional(),
      cache_dir: text.optional(),
      max_size: size.optional(),
      max_cache_size_mb: megabytes.optional(),
      max_disk_cache_size_mb: megabytes.optional(),
      scrub: scrubSchema.optional(),
    })
    .optional(),
  redis: z
    .strictObject({
      url: redisUrl.optional(),
      redis_url: redisUrl.optional(),
      key_prefix: z.string().default('yatagarasu:'),
      ttl_seconds: positive.optional(),
      timeout_ms: positive.default(50),
      cluster_nodes: z.array(text).default([]),
    })
    .optional(),
})

const bucketCacheSchema = z.strictObject({
  enabled: bool.optional(),
  ttl_seconds: positive.optional(),
  ttl: positive.optional(),
  max_item_size: size.optional(),
  max_item_size_mb: megabytes.optional(),
  stale_if_error_seconds: nonNegative.optional(),
  /** Overrides `cache.slice`, key by key. */
  slice: sliceSchema.optional(),
  /**
   * This bucket's budget in each of the memory and disk tiers: over it, the bucket evicts its own
   * least recently used entries there (cache/bucket-budgets.ts).
   */
  max_size: size.pipe(z.number().positive('must be greater than 0')).optional(),
})

const bucketSchema = z.strictObject({
  name: text,
  path_prefix: text,
  s3: s3Schema,
  auth: z
    .strictObject({
      enabled: bool.default(false),
      jwt: jwtSchema.optional(),
    })
    .prefault({}),
  cors: corsSchema.optional(),
  cache: bucketCacheSchema.optional(),
  cdn_cache_control: text.optional(),
  authorization: authorizationSchema.optional(),
  ip_filter: ipFilterSchema.optional(),
  /** One limit for the whole bucket, whoever asks. */
  rate_limit: rateLimitSchema.optional(),
  /** Adds `Content-Disposition: attachment`: objects are downloaded, never rendered on the proxy's origin. */
  force_download: bool.default(false),
  /** Image variants (config/representations-schema.ts); `image_optimization` gives the defaults. */
  images: bucketImagesSchema.optional(),
  watermark: bucketWatermarkSchema.optional(),
  compression: bucketCompressionSchema.optional(),
})

// ---------------------------------------------------------------------------------------------
// Top level

const serverSchema = z.strictObject({
  address: text.default('0.0.0.0:8080'),
  workers: z.union([count, z.literal('auto')]).optional(),
  threads: count.optional(),
  shutdown_timeout_seconds: nonNegative.default(30),
  headers_timeout_seconds: positive.default(10),
  keepalive_timeout_seconds: positive.default(5),
  /** Adds X-Served-By (which replica answered) to responses. */
  debug_headers: bool.default(false),
  security_limits: z
    .strictObject({
      max_uri_length: count.default(8192),
      max_header_size: count.default(65536),
    })
    .prefault({}),
  /** Closes a connection with no bytes moving either way for this long (slow readers, idle sockets). */
  idle_timeout_seconds: positive.default(60),
  https: z
    .strictObject({
      enabled: bool.default(false),
      cert_path: text.optional(),
      key_path: text.optional(),
      min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    })
    .optional(),
  /** Peers whose X-Forwarded-For is believed (CIDRs or addresses). */
  trusted_proxies: addressList,
  ip_filter: ipFilterSchema.optional(),
  rate_limit: z
    .strictObject({
      enabled: bool.default(true),
      global: rateLimitSchema.optional(),
      per_ip: rateLimitSchema.optional(),
      per_user: rateLimitSchema.optional(),
    })
    .optional(),
  /** Requests served at once by one process; more get 503 with Retry-After. Unset: no limit. */
  max_concurrent_requests: count.optional(),
})

/** Credentials the S3 listener accepts; each reads only its buckets (and prefixes in them). */
const s3ApiCredentialSchema = z.strictObject({
  access_key_id: z
    .string()
    .regex(/^[A-Za-z0-9._-]{3,128}$/, 'must be 3-128 letters, digits, ".", "_" or "-"'),
  secret_access_key: z.string().min(40, 'must be at least 40 characters'),
  /** The proxy's bucket names (buckets[].name) this key may read. */
  buckets: z.array(text).min(1, 'must name at least one bucket'),
  /** Key prefixes the key may read, in every bucket it names; unset: the whole bucket. */
  prefixes: z.array(z.string()).min(1, 'must not be empty; leave it out for whole buckets').optional(),
  /** Claims the key carries, for claim rules and OPA (as a verified token's claims would). */
  claims: z.record(z.string(), z.unknown()).optional(),
})

const s3ApiSchema = z.strictObject({
  enabled: bool.default(false),
  address: text.default('0.0.0.0:9000'),
  /** Virtual-host addressing: `<bucket>.<domain>`. Path style (`/<bucket>/<key>`) always works. */
  domain: text.optional(),
  region: text.default('us-east-1'),
  credentials: z.array(s3ApiCredentialSchema).default([]),
  /** How long a listing page from the backend is reused (0: never). */
  list_cache_seconds: nonNegative.default(0),
  /** AssumeRoleWithWebIdentity: a JWT exchanged for temporary credentials (see docs/s3-api.md). */
  sts: z
    .strictObject({
      enabled: bool.default(false),
      /** 32-byte keys (64 hex digits or base64); the first seals session tokens, all of them open. */
      keys: z.array(z.string()).default([]),
      max_duration_seconds: count.default(3600),
      /** Verifies the exchanged tokens; the global jwt block when left out. */
      jwt: jwtSchema.optional(),
    })
    .optional(),
})

export const SYSLOG_FACILITIES = [
  'kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', 'news', 'uucp', 'cron', 'authpriv', 'ftp',
  'ntp', 'security', 'console', 'solaris-cron', 'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7',
] as const

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

export const fileSchema = z.strictObject({
  server: serverSchema.prefault({}),
  buckets: z.array(bucketSchema).min(1, 'at least one bucket is required'),
  jwt: jwtSchema.optional(),
  image_optimization: imageOptimizationSchema.optional(),
  logging: z
    .strictObject({
      level: z.enum(LOG_LEVELS).default('info'),
      format: z.enum(['json', 'text']).default('json'),
    })
    .prefault({}),
  metrics: z
    .strictObject({ enabled: bool.default(false), port: num.pipe(z.number().int().min(0).max(65535)).default(9090) })
    .prefault({}),
  cache: cacheSchema.optional(),
  s3_api: s3ApiSchema.optional(),
  admin: z
    .strictObject({
      token: z.string().min(32, 'must be at least 32 characters').optional(),
      claims: z.array(claimRuleSchema).min(1).optional(),
    })
    .optional(),
  audit_log: z
    .strictObject({
      enabled: bool.default(false),
      outputs: z.array(z.enum(['file', 'stdout', 'syslog', 's3'])).min(1).default(['stdout']),
      file: z
        .strictObject({
          path: text,
          max_file_size_mb: positive.default(100),
          max_backup_files: num.pipe(z.number().int().min(0)).default(5),
        })
        .optional(),
      syslog: z
        .strictObject({
          address: text,
          protocol: z.enum(['udp', 'tcp']).default('udp'),
          facility: z.enum(SYSLOG_FACILITIES).default('local0'),
        })
        .optional(),
      s3_export: z
        .strictObject({
          bucket: text,
          region: text.default('us-east-1'),
          endpoint: httpUrl.optional(),
          access_key: z.string().optional(),
          secret_key: z.string().optional(),
          path_prefix: z.string().default('audit/'),
          export_interval_seconds: positive.default(60),
        })
        .optional(),
    })
    .superRefine((audit, ctx) => {
      const need = { file: audit.file, syslog: audit.syslog, s3: audit.s3_export } as const
      for (const output of audit.outputs) {
        if (output !== 'stdout' && need[output] === undefined) {
          ctx.addIssue({ code: 'custom', path: [output === 's3' ? 's3_export' : output], message: `is required when outputs lists ${output}` })
        }
      }
      if (audit.syslog !== undefined && !/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(audit.syslog.address)) {
        ctx.addIssue({ code: 'custom', path: ['syslog', 'address'], message: 'must be host:port' })
      }
    })
    .optional(),
  observability: z
    .strictObject({
      tracing: z
        .strictObject({
          enabled: bool.default(false),
          exporter: z.literal('otlp').default('otlp'),
          /** Base URL; `/v1/traces` is appended. Default: the OTEL_EXPORTER_OTLP_* variables. */
          otlp_endpoint: httpUrl.optional(),
          protocol: z.enum(['http/protobuf', 'http/json']).default('http/protobuf'),
          service_name: text.default(process.env.OTEL_SERVICE_NAME ?? 'yatagarasu'),
          sampling_ratio: num.pipe(z.number().min(0).max(1, 'must be between 0 and 1')).default(1),
        })
        .prefault({}),
      /** Requests slower than this are logged at warn with a per-stage breakdown (0: never). */
      slow_request_ms: nonNegative.default(0),
    })
    .prefault({}),
})
export type ConfigFile = z.output<typeof fileSchema>

// ---------------------------------------------------------------------------------------------
// Normalized configuration: what the rest of the proxy reads. Built by config/load.ts.

export type S3Config = z.output<typeof s3Schema>

export interface NamedKey {
  id: string
  algorithm: JwtAlgorithm
  secret: Uint8Array | undefined
  pem: string | undefined
}

export interface JwksConfig {
  url: string
  cache_seconds: number
  stale_max_seconds: number
  refetch_cooldown_seconds: number
  timeout_ms: number
}

export type VerificationKey =
  | { kind: 'secret'; secret: Uint8Array }
  | { kind: 'public_key'; pem: string; path: string }
  | { kind: 'keys'; keys: NamedKey[] }
  | { kind: 'jwks'; jwks: JwksConfig }

export interface JwtVerifierConfig {
  algorithms: JwtAlgorithm[]
  key: VerificationKey
  token_sources: TokenSource[]
  claims: ClaimRule[]
  issuer: string | undefined
  audience: string[] | undefined
  required_claims: string[]
  require_exp: boolean
  clock_skew_seconds: number
  max_token_lifetime_seconds: number | undefined
  path_scope_claim: string | undefined
  token_cache_size: number
  token_cache_ttl_seconds: number
}

export type AuthorizationConfig =
  | {
      kind: 'wasm'
      policy_file: string
      entrypoint: string
      data_file: string | undefined
      cache_ttl_seconds: number
      cache_size: number
    }
  | {
      kind: 'remote'
      url: string
      policy_path: string
      timeout_ms: number
      fail_mode: 'closed' | 'open'
      cache_ttl_seconds: number
      cache_size: number
    }

export interface CacheConfig {
  layers: CacheLayer[]
  /**
   * Per-bucket budgets (`buckets[].cache.max_size`) by bucket name, each applied in the memory and
   * disk tiers; the buckets left out share what the budgets leave of each tier.
   */
  budgets: Record<string, number>
  /** The largest entry any tier stores (the largest of the buckets' max_item_size and slice sizes). */
  max_item_bytes: number
  stale_if_error_seconds: number
  memory: { max_bytes: number }
  disk: { dir: string; max_bytes: number } | null
  /**
   * The disk tier's scrub, per instance (each worker of a cluster takes its share of the entries
   * and bytes); null when there is no disk tier.
   */
  disk_scrub: DiskScrubConfig | null
  redis: { url: string; cluster_nodes: string[]; key_prefix: string; timeout_ms: number; ttl_seconds: number | undefined } | null
}

export interface DiskScrubConfig {
  /** Whether passes run on a schedule (an admin call runs one either way, with these limits). */
  enabled: boolean
  interval_seconds: number
  sample_rate: number
  max_per_run: number
  /** 0: no limit. */
  bytes_per_sec: number
}

export interface BucketCacheConfig {
  ttl_seconds: number
  max_item_bytes: number
  stale_if_error_seconds: number
  /** Objects over max_item_bytes are cached as slices of this many bytes; null: streamed uncached. */
  slice_bytes: number | null
  /** The bucket's budget in each of the memory and disk tiers; null: it shares what is left. */
  max_bytes: number | null
}

export interface AdminConfig {
  token: string | undefined
  claims: ClaimRule[]
  /** The global jwt block, which verifies admin JWTs when `claims` are set. */
  jwt: JwtVerifierConfig | null
}

/** Everything an S3 source needs to reach one backend. */
export interface S3Connection {
  /** The replica name (`primary` for a bucket without `replicas`). */
  name: string
  bucket: string
  region: string
  endpoint: string | undefined
  access_key: string | undefined
  secret_key: string | undefined
  session_token: string | undefined
  force_path_style: boolean | undefined
  timeout: number
  connect_timeout: number
  max_connections: number
  max_attempts: number
}

export interface BackendConfig {
  /** In priority order. A bucket without `replicas` has one, named `primary`. */
  replicas: S3Connection[]
  /** Null for a single backend without a `circuit_breaker` block: it is always tried. */
  circuit_breaker: CircuitBreakerConfig | null
  health_check: { key: string | undefined; interval_seconds: number }
  hedge_after_ms: number | undefined
  /** Seconds one request may take across every replica it tries (`s3.timeout`). */
  deadline_seconds: number
}

export interface BucketConfig {
  name: string
  /** Normalized: leading slash, no trailing slash, decoded. */
  path_prefix: string
  backend: BackendConfig
  auth: JwtVerifierConfig | null
  authorization: AuthorizationConfig | null
  cors: CorsConfig | null
  /** Null when this bucket does not cache. */
  cache: BucketCacheConfig | null
  /** Cache-Control sent to clients and CDNs instead of the object's own (or `private` for auth buckets). */
  cdn_cache_control: string | undefined
  /** Null when no filter applies to this bucket. */
  ip_filter: IpFilterConfig | null
  /** Null when the bucket has no limit of its own. */
  rate_limit: RateLimitConfig | null
  force_download: boolean
  /** Null: image parameters are ignored like any other query parameter. */
  images: ImagesConfig | null
  /** Null: no watermark. */
  watermark: WatermarkConfig | null
  /** Null: objects are sent as stored. */
  compression: CompressionConfig | null
}

export interface IpFilterConfig {
  allowlist: string[]
  blocklist: string[]
}

export interface RateLimitConfig {
  requests_per_second: number
  burst: number
}

export interface RateLimitsConfig {
  global: RateLimitConfig | null
  per_ip: RateLimitConfig | null
  per_user: RateLimitConfig | null
}

export interface TlsConfig {
  cert_path: string
  key_path: string
  /** PEM text read at load (and at every reload). */
  cert: string
  key: string
  min_version: 'TLSv1.2' | 'TLSv1.3'
}

export interface ServerConfig {
  host: string
  port: number
  workers: number | 'auto'
  shutdown_timeout_seconds: number
  headers_timeout_seconds: number
  keepalive_timeout_seconds: number
  max_uri_length: number
  max_header_size: number
  idle_timeout_seconds: number
  debug_headers: boolean
  /** Null: plain HTTP. */
  tls: TlsConfig | null
  /** Normalized CIDRs; empty: the socket peer is the client. */
  trusted_proxies: string[]
  ip_filter: IpFilterConfig | null
  /** Null when rate limiting is off or no scope is set. */
  rate_limit: RateLimitsConfig | null
  /** Null: unlimited. */
  max_concurrent_requests: number | null
}

export interface Config {
  /** The file this configuration was read from. */
  file: string
  server: ServerConfig
  buckets: BucketConfig[]
  logging: ConfigFile['logging']
  metrics: ConfigFile['metrics']
  /** Null when no bucket caches. */
  cache: CacheConfig | null
  admin: AdminConfig | null
  /** Null when the audit log is off. */
  audit: AuditConfig | null
  /**
   * The Redis of `cache.redis` (its url or cluster nodes), null when none is configured. Rate-limit
   * counters are shared through it, whether or not the cache uses it as a tier.
   */
  redis: RedisConnection | null
  observability: ConfigFile['observability']
  /** Null when the S3 listener is off. */
  s3_api: S3ApiConfig | null
  /** Settings accepted but worth a look (printed by --check, logged when the config goes live). */
  warnings: ConfigWarning[]
}

/** The S3-compatible listener (`s3_api`); null in Config when it is off. */
export interface S3ApiConfig {
  host: string
  port: number
  domain: string | undefined
  region: string
  credentials: S3ApiCredential[]
  list_cache_seconds: number
  /** Null when the web-identity exchange is off. */
  sts: S3StsConfig | null
}

/** `s3_api.sts`: the AssumeRoleWithWebIdentity exchange. */
export interface S3StsConfig {
  /** 32-byte AES-256-GCM keys: the first seals, every one opens (rotation). */
  keys: Uint8Array[]
  max_duration_seconds: number
  /** The verifier of exchanged tokens (`s3_api.sts.jwt`, or the global jwt block). */
  jwt: JwtVerifierConfig
}

export interface S3ApiCredential {
  access_key_id: string
  secret_access_key: string
  buckets: string[]
  /** Empty: every key of the buckets. */
  prefixes: string[]
  claims: Record<string, unknown>
}

export interface ConfigWarning {
  /** The key path, as in errors: `buckets[0](media).cache.max_size`. */
  path: string
  message: string
}

export interface RedisConnection {
  url: string
  cluster_nodes: string[]
  key_prefix: string
  timeout_ms: number
}

export type AuditConfig = NonNullable<ConfigFile['audit_log']>
export type TracingConfig = ConfigFile['observability']['tracing']
