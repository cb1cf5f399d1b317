// The listening proxy: an HTTP server that hands each request to the current app generation,
// swaps generations on reload (requests in flight finish on the one they started on), and drains
// on shutdown. Used by main.ts, the demo, the tests and the bench alike.
import { randomUUID } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { getRequestListener } from '@hono/node-server'
import type { Hono } from 'hono'
import { createApp } from './app.ts'
import { loadConfig } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { ERROR_CATALOGUE, type ErrorCode } from './errors.ts'
import { buildRuntime, type Runtime } from './runtime.ts'
import type { Logger } from './telemetry/log.ts'
import { Metrics } from './telemetry/metrics.ts'
import type { AppEnv } from './types.ts'

interface Generation {
  runtime: Runtime
  app: Hono<AppEnv>
  inFlight: number
  retired: boolean
}

export interface ReloadResult {
  ok: boolean
  generation: number
  error?: string
}

export interface Proxy {
  readonly port: number
  readonly url: string
  /** The Prometheus endpoint (`metrics.port`), when metrics are enabled. */
  readonly metricsUrl: string | undefined
  readonly generation: number
  /** Re-reads the config file; on any error the running generation keeps serving. */
  reload(): Promise<ReloadResult>
  /** Stops accepting, lets requests in flight finish (up to the timeout), closes everything. */
  shutdown(timeoutMs?: number): Promise<void>
}

export async function startProxy(config: Config, logger: Logger): Promise<Proxy> {
  const startedAt = Date.now()
  // Process-wide, kept across reloads (metrics.* changes need a restart).
  const metrics = config.metrics.enabled ? new Metrics() : undefined
  let current = makeGeneration(await buildRuntime(config, { logger, metrics, generation: 1, startedAt }))
  metrics?.configGeneration.set(1)
  let draining = false

  const listener = getRequestListener(
    (request, env) => {
      const generation = current
      generation.inFlight++
      env.outgoing.once('close', () => release(generation))
      if (draining) env.outgoing.setHeader('connection', 'close')
      return generation.app.fetch(request, env)
    },
    { errorHandler: () => errorResponse('GUARD_BAD_REQUEST') }
  )

  const server = http.createServer(
    {
      maxHeaderSize: config.server.max_header_size,
      headersTimeout: config.server.headers_timeout_seconds * 1000,
      requestTimeout: config.server.headers_timeout_seconds * 1000,
      keepAliveTimeout: config.server.keepalive_timeout_seconds * 1000,
    },
    listener
  )
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) return socket.destroy()
    const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'GUARD_HEADERS_TOO_LARGE' : 'GUARD_BAD_REQUEST'
    const { status, message } = ERROR_CATALOGUE[code]
    const requestId = randomUUID()
    const body = JSON.stringify({ error: { code, message, request_id: requestId } })
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `cache-control: no-store\r\nx-request-id: ${requestId}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `connection: close\r\n\r\n${body}`
    )
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(config.server.port, config.server.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const host = config.server.host === '0.0.0.0' || config.server.host === '::' ? '127.0.0.1' : config.server.host
  const urlOf = (p: number) => `http://${host.includes(':') ? `[${host}]` : host}:${p}`

  const metricsServer =
    metrics === undefined
      ? undefined
      : await listen(
          http.createServer((req, res) => {
            if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
              res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
              return
            }
            updateCacheGauges(metrics, current.runtime)
            metrics.registry.metrics().then(
              (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
              () => res.writeHead(500).end()
            )
          }),
          config.metrics.port,
          config.server.host
        )

  function release(generation: Generation): void {
    generation.inFlight--
    // After the other 'close' listeners of this response (the access log and audit record of the
    // generation's last request are written before its outputs close).
    if (generation.retired && generation.inFlight === 0) setImmediate(() => void generation.runtime.close())
  }

  return {
    port,
    url: urlOf(port),
    metricsUrl: metricsServer === undefined ? undefined : `${urlOf((metricsServer.address() as AddressInfo).port)}/metrics`,
    get generation() {
      return current.runtime.generation
    },

    async reload() {
      const previous = current
      const next = previous.runtime.generation + 1
      try {
        const nextConfig = await loadConfig(previous.runtime.config.file)
        current = makeGeneration(await buildRuntime(nextConfig, { logger, metrics, generation: next, startedAt }, previous.runtime))
      } catch (err) {
        metrics?.configReloads.inc({ result: 'failure' })
        const error = err instanceof Error ? err.message : String(err)
        logger.error({ generation: previous.runtime.generation, error }, 'reload failed; keeping the running configuration')
        return { ok: false, generation: previous.runtime.generation, error }
      }
      metrics?.configReloads.inc({ result: 'success' })
      metrics?.configGeneration.set(next)
      previous.retired = true
      if (previous.inFlight === 0) void previous.runtime.close()
      logger.info({ generation: next }, 'configuration reloaded')
      return { ok: true, generation: next }
    },

    async shutdown(timeoutMs = config.server.shutdown_timeout_seconds * 1000) {
      draining = true
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs)
      })
      const outcome = await Promise.race([closed.then(() => 'drained' as const), deadline])
      clearTimeout(timer)
      if (outcome === 'timeout') {
        logger.warn({ timeout_ms: timeoutMs }, 'shutdown timeout: closing the connections still open')
        server.closeAllConnections()
        await closed
      }
      await current.runtime.close()
      metricsServer?.closeAllConnections()
      await new Promise((resolve) => (metricsServer === undefined ? resolve(undefined) : metricsServer.close(resolve)))
    },
  }
}

async function listen(server: http.Server, port: number, host: string): Promise<http.Server> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}

/** Cache sizes are read from the tiers when Prometheus scrapes, not kept up to date per request. */
function updateCacheGauges(metrics: Metrics, runtime: Runtime): void {
  for (const tier of runtime.cache?.store.tiers ?? []) {
    const stats = tier.stats()
    if (stats.entries !== null) metrics.cacheEntries.set({ tier: tier.name }, stats.entries)
    if (stats.bytes !== null) metrics.cacheBytes.set({ tier: tier.name }, stats.bytes)
    metrics.cacheEvictions.set({ tier: tier.name }, stats.evictions)
  }
}

function makeGeneration(runtime: Runtime): Generation {
  runtime.start()
  return { runtime, app: createApp(runtime), inFlight: 0, retired: false }
}

/** Requests refused before the app sees them (unparseable target, bad Host). */
function errorResponse(code: ErrorCode): Response {
  const { status, message } = ERROR_CATALOGUE[code]
  const requestId = randomUUID()
  return new Response(JSON.stringify({ error: { code, message, request_id: requestId } }), {
    status,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      'x-request-id': requestId,
    },
  })
}
