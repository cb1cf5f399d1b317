// Where a bucket's objects live and how requests to it are signed, as the SDK itself decides it:
// the S3 client's endpoint rules resolve the bucket once (path-style on a custom endpoint or with
// `force_path_style`, virtual-hosted on AWS unless the name is not DNS-safe, FIPS and dual-stack
// from the environment), and the signed requests reuse the answer for every object. A custom
// endpoint addressed path-style is the one case simple enough to write out here (as the rules do:
// the endpoint's path, then the bucket), which spares such a bucket loading the SDK at all.
import type { S3Client } from '@aws-sdk/client-s3'
import { ProxyError } from '../errors.ts'

export interface OriginTarget {
  protocol: 'http:' | 'https:'
  hostname: string
  /** Undefined for the protocol's default port. */
  port: number | undefined
  /** The Host header (with the port when it is not the default). */
  host: string
  /** The path an object key is appended to, ending in `/`: `/bucket/` or `/`. */
  base: string
  signingRegion: string
  signingService: string
}

export interface TargetParams {
  bucket: string
  region: string
  endpoint: string | undefined
  forcePathStyle: boolean
}

interface AuthScheme {
  name?: string
  signingName?: string
  signingRegion?: string
}

/** Throws ORIGIN_ERROR (reason `unsupported_signing:<scheme>`) for a bucket SigV4 cannot reach. */
export async function resolveTarget(params: TargetParams, sdk: () => Promise<S3Client>): Promise<OriginTarget> {
  if (params.endpoint !== undefined && params.forcePathStyle) return pathStyleTarget(params, params.endpoint)
  const config = (await sdk()).config
  const resolved = config.endpointProvider({
    Bucket: params.bucket,
    Region: params.region,
    Endpoint: params.endpoint,
    ForcePathStyle: params.forcePathStyle,
    UseFIPS: await config.useFipsEndpoint(),
    UseDualStack: await config.useDualstackEndpoint(),
    Accelerate: false,
  })
  const schemes = (resolved.properties?.authSchemes ?? []) as AuthScheme[]
  const scheme = schemes[0]
  // Directory buckets (sigv4-s3express) and multi-region access points (sigv4a) need a session or
  // a signer the hot path does not have.
  if (scheme !== undefined && scheme.name !== 'sigv4') {
    throw new ProxyError('ORIGIN_ERROR', { reason: `unsupported_signing:${scheme.name ?? 'unknown'}` })
  }
  return targetOf(resolved.url, scheme?.signingRegion ?? params.region, scheme?.signingName ?? 's3')
}

function pathStyleTarget(params: TargetParams, endpoint: string): OriginTarget {
  const url = new URL(endpoint)
  const path = url.pathname.endsWith('/') ? url.pathname : `${url.pathname}/`
  url.pathname = path + encodeSegment(params.bucket)
  return targetOf(url, params.region, 's3')
}

function targetOf(url: URL, signingRegion: string, signingService: string): OriginTarget {
  const protocol = url.protocol === 'https:' ? 'https:' : 'http:'
  const pathname = url.pathname === '' ? '/' : url.pathname
  return {
    protocol,
    hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
    port: url.port === '' ? undefined : Number(url.port),
    host: url.host,
    base: pathname.endsWith('/') ? pathname : `${pathname}/`,
    signingRegion,
    signingService,
  }
}

/** Characters a key may hold that need no escaping in a path (RFC 3986 unreserved, and `/`). */
const PLAIN_KEY = /^[A-Za-z0-9\-._~/]*$/

/**
 * The object key as S3 reads it in a path: each `/`-separated segment percent-encoded per
 * RFC 3986 (as the SDK does: encodeURIComponent plus `!'()*`), slashes kept, nothing normalized
 * (`a//b` and `a/./b` are keys of their own). The signature is computed over exactly this string.
 */
export function encodeKey(key: string): string {
  if (PLAIN_KEY.test(key)) return key
  return key.split('/').map(encodeSegment).join('/')
}

function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}
