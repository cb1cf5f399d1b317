// An anchor for misses: the least a Node.js relay built on the usual libraries does. node:http in
// front, undici's Pool behind (what the proxy's origin reads used before its own HTTP/1.1 client,
// src/origin/http1-connection.ts), keep-alive, no auth, no signing, no timeouts, no metrics: the
// object's headers copied, its body piped with back-pressure. The proxy's miss rows can be read
// against the origin alone, nginx as a relay (bench/nginx-relay.sh) and this. Started by bench/paths.sh as a harness target with the
// node and flags the proxy runs with (PORT and ORIGIN_PORT come from the harness).
import http from 'node:http'
import { pipeline } from 'node:stream'
import { Pool } from 'undici'

const origin = `http://127.0.0.1:${process.env.ORIGIN_PORT}`
// undici's own header and body timeouts are off, as in the proxy's pool (origin-pool.ts).
const pool = new Pool(origin, { connections: 256, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 })
const PASSED = ['content-type', 'content-length', 'etag', 'last-modified', 'accept-ranges', 'content-range']

http
  .createServer((req, res) => {
    pool.request({ method: req.method === 'HEAD' ? 'HEAD' : 'GET', path: req.url ?? '/' }).then(
      ({ statusCode, headers, body }) => {
        // The client left while the origin answered (a load generator stopping mid-flight).
        if (res.destroyed) return body.destroy()
        const out = {}
        for (const name of PASSED) if (headers[name] !== undefined) out[name] = headers[name]
        res.writeHead(statusCode, out)
        // A body that fails mid-way cuts the response; a client that leaves destroys the body.
        pipeline(body, res, () => {})
      },
      () => {
        if (!res.destroyed) res.writeHead(502).end()
      }
    )
  })
  .listen(Number(process.env.PORT), '127.0.0.1')
