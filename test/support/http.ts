// A raw HTTP client for tests: sends the path exactly as given (fetch would resolve `..` and
// re-encode), and returns status, headers and the whole body.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** A loopback port nothing listens on right now (for servers that must be told their port). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

export interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  text: string
  json<T = unknown>(): T
}

export function send(
  base: string,
  path: string,
  options: { method?: string; headers?: Record<string, string | string[]> } = {}
): Promise<RawResponse> {
  const url = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('error', reject)
        res.on('end', () => {
          const body = Buffer.concat(chunks)
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            text: body.toString('utf8'),
            json: <T>() => JSON.parse(body.toString('utf8')) as T,
          })
        })
      }
    )
    req.on('error', reject)
    req.end()
  })
}

/** What a client really received: the body ended cleanly (`complete`) or the connection was cut. */
export interface Received {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  /** The body ended cleanly ('end'), rather than the connection being cut. */
  complete: boolean
}

/**
 * A request that reports a cut connection instead of failing. `onFirst` runs once the first bytes
 * came (`after` bytes at least: 1 by default), the response paused meanwhile (a client that stops
 * reading).
 */
export function receive(
  base: string,
  path: string,
  options: { headers?: Record<string, string>; method?: string; onFirst?: () => Promise<void>; after?: number } = {}
): Promise<Received> {
  const url = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path, method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      let received = 0
      let complete = false
      let first = options.onFirst
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        received += chunk.length
        if (first === undefined || received < (options.after ?? 1)) return
        const run = first
        first = undefined
        res.pause()
        run().then(
          () => res.resume(),
          (err: unknown) => {
            req.destroy()
            reject(err)
          }
        )
      })
      res.on('end', () => {
        complete = true
      })
      res.on('error', () => {})
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete }))
    })
    req.on('error', reject)
    req.end()
  })
}
