// buildRuntime: turns a validated Config into live objects (S3 clients, token verifiers, the
// readiness checker). The only module that knows concrete adapter classes.
import { JwtVerifier } from './auth/jwt.ts'
import type { Config } from './config/schema.ts'
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

export function buildRuntime(config: Config, deps: RuntimeDeps): Runtime {
  const buckets: BucketRoute[] = config.buckets.map((bucket) => ({
    name: bucket.name,
    prefix: bucket.path_prefix,
    source: new S3Source(bucket.s3),
    verifier: bucket.auth === null ? null : new JwtVerifier(bucket.auth),
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
