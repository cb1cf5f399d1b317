// The admin API under /admin (enabled by an `admin:` block). Every call needs
// `Authorization: Bearer <admin.token>` (compared in constant time) or a JWT, verified by the global
// jwt block, that passes the `admin.claims` rules.
//   POST /admin/cache/purge                     everything
//   POST /admin/cache/purge/<bucket>            one bucket
//   POST /admin/cache/purge/<bucket>/<key>      one object; a key ending in `*` purges that prefix
//   GET  /admin/cache/stats                     per tier and per bucket
//   POST /admin/reload                          re-read the config file, as SIGHUP does; 400 with the
//                                               exact reason when it does not load
//   POST /admin/cache/prewarm                   {bucket, prefix, max_objects, max_bytes}: fill the
//                                               cache from a listing in the background; 202 {id, status},
//                                               409 while the same bucket + prefix is being prewarmed
//   GET  /admin/cache/prewarm/<id>              that job's progress (cache-prewarm.ts)
//   POST /admin/cache/scrub                     {sample_rate, max_entries, bytes_per_sec}, each
//                                               optional: check a sample of the disk tier's entries
//                                               now (cache/disk-scrub.ts); answers with the report
// Purges clear every tier here and are broadcast over Redis to every instance sharing it; in cluster
// mode without Redis, or when Redis does not take the broadcast, they reach every worker of this
// instance (through the primary) before the answer. `purged` counts the entries this worker
// purged; `broadcast` says how far the purge reached (runtime.ts, PurgeOutcome): `incomplete`
// means other workers or instances may still serve the old entries.
import { createHash, timingSafeEqual } from 'node:crypto'
import { Hono, type Context, type MiddlewareHandler } from 'hono'
import { ERROR_CATALOGUE, ProxyError } from './errors.ts'
import { decodeSegments, isSafeKey, rawPathOf } from './http/path.ts'
import type { HonoEnv } from './pipeline/exchange.ts'
import type { Runtime } from './runtime.ts'
import type { ReloadResult } from './types.ts'
import type { ScrubLimits } from './ports.ts'
import type { PrewarmRequest } from './cache-prewarm.ts'

export interface AdminHooks {
  /** Reloads the configuration (every worker, in cluster mode). */
  reload(): Promise<ReloadResult>
}

const digest = (text: string) => createHash('sha256').update(text).digest()

export function adminRoutes(runtime: Runtime, hooks: AdminHooks): Hono<HonoEnv> {
  const app = new Hono<HonoEnv>()
  const admin = runtime.config.admin
  if (admin === null) return app

  const tokenDigest = admin.token === undefined ? undefined : digest(admin.token)
  const authorizeAdmin: MiddlewareHandler<HonoEnv> = async (c, next) => {
    const presented = /^bearer[ \t]+(\S+)$/i.exec(c.env.header('authorization') ?? '')?.[1]
    if (presented === undefined) {
      throw new ProxyError('AUTH_TOKEN_MISSING', { reason: 'admin', headers: { 'www-authenticate': 'Bearer' } })
    }
    // Both sides are hashed first, so the comparison takes the same time whatever the lengths.
    if (tokenDigest !== undefined && timingSafeEqual(digest(presented), tokenDigest)) return next()
    if (runtime.adminVerifier !== null) {
      await runtime.adminVerifier.authenticate(
        { header: (name) => c.env.header(name), query: () => undefined, cookie: () => undefined },
        ''
      )
      return next()
    }
    throw new ProxyError('AUTH_TOKEN_INVALID', { reason: 'admin', headers: { 'www-authenticate': 'Bearer error="invalid_token"' } })
  }

  app.use('/admin/*', authorizeAdmin)

  app.post('/admin/cache/purge', async (c) => c.json(await runtime.purge({ prefix: '' })))

  app.post('/admin/cache/purge/*', async (c) => {
    const segments = decodeSegments(rawPathOf(c.env.target))
    if (segments === undefined || !isSafeKey(segments.join('/'))) throw new ProxyError('GUARD_BAD_PATH')
    const [bucketName, ...keyParts] = segments.slice(3)
    if (bucketName === undefined || !runtime.buckets.some((b) => b.name === bucketName)) {
      throw new ProxyError('ROUTE_NOT_FOUND', { reason: 'unknown bucket' })
    }
    const key = keyParts.join('/')
    const target =
      key === '' || key === '*'
        ? { prefix: `${bucketName}/` }
        : key.endsWith('*')
          ? { prefix: `${bucketName}/${key.slice(0, -1)}` }
          : { exact: `${bucketName}/${key}` }
    return c.json({ ...(await runtime.purge(target)), target })
  })

  app.post('/admin/reload', async (c) => {
    c.header('cache-control', 'no-store')
    const result = await hooks.reload()
    if (result.ok) return c.json({ generation: result.generation, buckets: result.buckets })
    // The caller is an authenticated operator: the exact reason is what they need to fix the file.
    const { message } = ERROR_CATALOGUE.ADMIN_CONFIG_INVALID
    const error = { code: 'ADMIN_CONFIG_INVALID', message, reason: result.error, request_id: c.env.requestId }
    return c.json({ error, generation: result.generation }, 400)
  })

  app.post('/admin/cache/prewarm', async (c) => {
    c.header('cache-control', 'no-store')
    const bad = (message: string) => badRequest(c, message)
    const parsed = await parsedBody(c, parsePrewarm)
    if (parsed instanceof Response) return parsed
    const bucket = runtime.buckets.find((b) => b.name === parsed.bucket)
    if (bucket === undefined) return bad(`"${parsed.bucket}" is not the name of a configured bucket`)
    const { cache } = bucket
    if (cache === null) return bad(`bucket "${bucket.name}" does not cache`)
    const { started, report } = runtime.prewarms.start({ ...bucket, cache }, parsed, runtime.generation)
    if (!started) {
      const message = `a prewarm of ${bucket.name}/${parsed.prefix} is already running`
      return c.json({ id: report.id, status: report.status, error: { code: 'ADMIN_PREWARM_RUNNING', message, request_id: c.env.requestId } }, 409)
    }
    return c.json({ id: report.id, status: report.status }, 202)
  })

  app.get('/admin/cache/prewarm/:id', (c) => {
    c.header('cache-control', 'no-store')
    const report = runtime.prewarms.get(c.req.param('id'))
    if (report === undefined) throw new ProxyError('ROUTE_NOT_FOUND', { reason: 'unknown prewarm' })
    return c.json(report)
  })

  app.post('/admin/cache/scrub', async (c) => {
    c.header('cache-control', 'no-store')
    const overrides = await parsedBody(c, parseScrub)
    if (overrides instanceof Response) return overrides
    // The caller leaving stops the pass.
    const report = await runtime.scrubDisk(overrides, c.env.signal)
    if (report === 'no disk tier') return badRequest(c, 'the cache has no disk tier')
    if (report === 'running') {
      const { message } = ERROR_CATALOGUE.ADMIN_SCRUB_RUNNING
      return c.json({ error: { code: 'ADMIN_SCRUB_RUNNING', message, request_id: c.env.requestId } }, 409)
    }
    const { damagedEntries, ...pass } = report
    return c.json({ ...pass, damaged_entries: damagedEntries })
  })

  app.get('/admin/cache/stats', (c) => {
    const cache = runtime.cache
    const tiers: Record<string, unknown> = {}
    for (const tier of cache?.store.tiers ?? []) {
      const s = tier.stats()
      tiers[tier.name] = {
        entries: s.entries,
        bytes: s.bytes,
        hits: s.hits,
        misses: s.misses,
        hit_bytes: s.hitBytes,
        evictions: s.evictions,
        hit_ratio: ratio(s.hits, s.misses),
        ...(s.scrub === undefined ? {} : { scrub: s.scrub }),
        ...(s.writesPaused === undefined ? {} : { writes_paused: s.writesPaused }),
      }
    }
    const buckets: Record<string, unknown> = {}
    for (const bucket of runtime.buckets) {
      const k = bucket.cache?.counters
      if (k === undefined) continue
      buckets[bucket.name] = {
        hits: k.hits,
        misses: k.misses,
        stale: k.stale,
        hit_bytes: k.hitBytes,
        hit_ratio: ratio(k.hits, k.misses),
      }
    }
    c.header('cache-control', 'no-store')
    return c.json({ tiers, buckets })
  })

  return app
}

function ratio(hits: number, misses: number): number {
  return hits + misses === 0 ? 0 : Math.round((hits / (hits + misses)) * 10_000) / 10_000
}

/** The largest JSON body an admin call takes. */
const MAX_BODY = 16 * 1024

/** 400 GUARD_BAD_REQUEST saying what is wrong: the caller is an operator who can fix it. */
function badRequest(c: Context<HonoEnv>, message: string): Response {
  return c.json({ error: { code: 'GUARD_BAD_REQUEST', message, request_id: c.env.requestId } }, 400)
}

/** The request's body as `parse` reads it (a string: what is wrong), or the 400 answer saying what is wrong. */
async function parsedBody<T extends object>(c: Context<HonoEnv>, parse: (text: string) => T | string): Promise<T | Response> {
  const tooLong = () => badRequest(c, `the body must be a JSON object of at most ${MAX_BODY} bytes`)
  if (!(Number(c.env.header('content-length') ?? 0) <= MAX_BODY)) return tooLong()
  const text = await c.req.text()
  if (text.length > MAX_BODY) return tooLong()
  const parsed = parse(text)
  return typeof parsed === 'string' ? badRequest(c, parsed) : parsed
}

/** The scrub limits a `POST /admin/cache/scrub` body overrides (none when it is empty), or what is wrong with it. */
function parseScrub(text: string): Partial<ScrubLimits> | string {
  if (text.trim() === '') return {}
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return 'the body must be JSON: {"sample_rate", "max_entries", "bytes_per_sec"}, each optional'
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the body must be a JSON object'
  const { sample_rate, max_entries, bytes_per_sec, ...rest } = body as Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) return `unknown field ${JSON.stringify(unknown[0])}`
  const overrides: Partial<ScrubLimits> = {}
  if (sample_rate !== undefined) {
    if (typeof sample_rate !== 'number' || !(sample_rate > 0 && sample_rate <= 1)) return '"sample_rate" must be a number greater than 0 and at most 1'
    overrides.sampleRate = sample_rate
  }
  if (max_entries !== undefined) {
    if (typeof max_entries !== 'number' || !Number.isSafeInteger(max_entries) || max_entries < 1) return '"max_entries" must be a whole number from 1'
    overrides.maxEntries = max_entries
  }
  if (bytes_per_sec !== undefined) {
    if (typeof bytes_per_sec !== 'number' || !Number.isSafeInteger(bytes_per_sec) || bytes_per_sec < 0) return '"bytes_per_sec" must be a whole number of bytes, 0 for no limit'
    overrides.bytesPerSec = bytes_per_sec
  }
  return overrides
}
const PREWARM_DEFAULTS = { max_objects: 10_000, max_bytes: 1024 ** 3, concurrency: 4 }

/** The prewarm request, or what is wrong with it (for the operator). */
function parsePrewarm(text: string): (PrewarmRequest & { bucket: string }) | string {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return 'the body must be JSON: {"bucket", "prefix", "max_objects", "max_bytes"}'
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the body must be a JSON object'
  const { bucket, prefix = '', max_objects = PREWARM_DEFAULTS.max_objects, max_bytes = PREWARM_DEFAULTS.max_bytes, concurrency = PREWARM_DEFAULTS.concurrency, ...rest } = body as Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) return `unknown field ${JSON.stringify(unknown[0])}`
  if (typeof bucket !== 'string' || bucket === '') return '"bucket" must be a bucket name'
  if (typeof prefix !== 'string') return '"prefix" must be a string'
  const whole = (value: unknown, max: number) => typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= max
  if (!whole(max_objects, 10_000_000)) return '"max_objects" must be a whole number from 1'
  if (!whole(max_bytes, Number.MAX_SAFE_INTEGER)) return '"max_bytes" must be a whole number of bytes from 1'
  if (!whole(concurrency, 32)) return '"concurrency" must be a whole number from 1 to 32'
  return { bucket, prefix, maxObjects: max_objects as number, maxBytes: max_bytes as number, concurrency: concurrency as number }
}
