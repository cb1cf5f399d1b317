// The S3 client of a replica, built on first use: the SDK (~35 MB of memory once loaded) is needed
// only for the default credential chain, the endpoint rules of AWS-hosted and virtual-hosted
// buckets, and listings. A bucket on a path-style endpoint with static keys never loads it.
import http from 'node:http'
import https from 'node:https'
import { S3Client } from '@aws-sdk/client-s3'
import { NodeHttpHandler } from '@smithy/node-http-handler'
import type { S3Connection } from '../config/schema.ts'

export function createS3Client(config: S3Connection, forcePathStyle: boolean): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: config.max_connections, scheduling: 'lifo' as const }
  return new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle,
    credentials:
      config.access_key !== undefined && config.secret_key !== undefined
        ? { accessKeyId: config.access_key, secretAccessKey: config.secret_key, sessionToken: config.session_token }
        : undefined,
    maxAttempts: config.max_attempts,
    // Checksum validation wraps every body in a hashing stream; the proxy passes bytes through.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: new NodeHttpHandler({
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
      connectionTimeout: config.connect_timeout * 1000,
      // Deadlines are the caller's (an abort signal), as for the signed requests.
      requestTimeout: 0,
    }),
  })
}
