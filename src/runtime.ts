// buildRuntime: turns a validated Config into live objects (S3 clients, token verifiers, the
// readiness checker). The only module that knows concrete adapter classes.
import { JwtVerifier } from './auth/jwt.ts'
import { loadWasmAuthorizer, PolicyLoadError, remoteAuthorizer } from './auth/opa.ts'
import { ConfigError } from './config/load.ts'
import type { BucketConfig, Config } from './config/schema.ts'
import type { Authorizer } from './ports.ts'
import { S3Source } from './origin/s3.ts'
import { Readiness } from './readiness.ts'
import type { Logger } from './telemetry/log.ts'
import type { BucketRoute } from './types.ts'

export interface Runtime {
  readonly generation: number
  readonly config: Config
  readonly logger: Logger
  readonly buckets: readonly BucketRoute[]
  readonly readiness: Readiness
  readonly startedAt: number
  /** Releases backend connections; called once no request runs on this generation any more. */
  close(): void
}

export interface RuntimeDeps {
  logger: Logger
  generation: number
  startedAt: number
}

/**
 * Builds every live object the config describes. Throws ConfigError (naming the key) when an
 * adapter cannot be built from a valid-looking config, such as a policy file that is not a policy.
 */
export async function buildRuntime(config: Config, deps: RuntimeDeps): Promise<Runtime> {
  const authorizers = await Promise.all(config.buckets.map((bucket, i) => buildAuthorizer(config, bucket, i)))
  const buckets: BucketRoute[] = config.buckets.map((bucket, i) => ({
    name: bucket.name,
    prefix: bucket.path_prefix,
    source: new S3Source(bucket.s3),
    verifier: bucket.auth === null ? null : new JwtVerifier(bucket.auth),
    authorizer: authorizers[i] ?? null,
    cors: bucket.cors,
  }))
  return {
    generation: deps.generation,
    config,
    logger: deps.logger,
    buckets,
    readiness: new Readiness(buckets),
    startedAt: deps.startedAt,
    close() {
      for (const bucket of buckets) bucket.source.close()
    },
  }
}

async function buildAuthorizer(config: Config, bucket: BucketConfig, index: number): Promise<Authorizer | null> {
  const authz = bucket.authorization
  if (authz === null) return null
  if (authz.kind === 'remote') return remoteAuthorizer(authz)
  try {
    return await loadWasmAuthorizer(authz)
  } catch (err) {
    if (!(err instanceof PolicyLoadError)) throw err
    throw new ConfigError(config.file, [
      { path: `buckets[${index}](${bucket.name}).authorization.policy_file`, message: err.message },
    ])
  }
}
