// The bench's S3 origin, in its own process: s3rver with its store in a directory kept between runs
// (so a 1 GiB object is generated once, not per run), behind a thin relay that counts the GETs per
// path (GET /__origin_gets answers them as JSON; GET /__origin_bytes, the body bytes it sent), so a
// bench can show that a warm cache no longer reaches the origin. With --rate, each answer's body is
// sent at that many bytes per second at most (a distant S3). s3rver serves unsigned requests
// anonymously and does not check SigV4.
//
//   node bench/origin.mjs --port 0 --dir /tmp/yatagarasu-bench-origin --bucket bench \
//        --object obj-1k:1024 --object huge.bin:1073741824 [--rate 25000000]
//
// Prints one JSON line when ready: {"port": <relay port>, "seeded": [{key, size, seconds}]}.
// Missing objects (or ones of another size) are written with random bytes, streamed.
import { randomFillSync } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import http from 'node:http'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import S3rver from 's3rver'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    dir: { type: 'string', default: '/tmp/yatagarasu-bench-origin' },
    bucket: { type: 'string', default: 'bench' },
    object: { type: 'string', multiple: true, default: [] },
    rate: { type: 'string', default: '0' },
  },
})

mkdirSync(values.dir, { recursive: true })
const s3 = new S3rver({ address: '127.0.0.1', port: 0, directory: values.dir, silent: true, configureBuckets: [{ name: values.bucket }] })
const backend = await s3.run()
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
const gets = {}
const sent = {}
const rate = Number(values.rate)

/** One request to s3rver: resolves with status and headers; the body is piped into `sink`. */
function send(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: backend.port, method, path, headers: { ...headers, host: `127.0.0.1:${backend.port}` }, agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res))
    })
    req.on('error', reject)
    if (body === undefined) req.end()
    else body(req)
  })
}

/** Writes `size` random bytes as `key`, streamed 1 MiB at a time; resolves with the seconds taken. */
async function seed(key, size) {
  const started = performance.now()
  const chunk = Buffer.allocUnsafe(1024 * 1024)
  const res = await send('PUT', `/${values.bucket}/${key}`, { 'content-length': String(size), 'content-type': 'application/octet-stream' }, (req) => {
    let left = size
    const more = () => {
      while (left > 0) {
        const part = randomFillSync(chunk).subarray(0, Math.min(left, chunk.length))
        left -= part.length
        // A copy: the next fill must not change bytes still queued for the socket.
        if (!req.write(Buffer.from(part))) return void req.once('drain', more)
      }
      req.end()
    }
    more()
  })
  if (res.statusCode !== 200) throw new Error(`seeding ${key}: s3rver answered ${res.statusCode}`)
  return (performance.now() - started) / 1000
}

const seeded = []
for (const spec of values.object) {
  const at = spec.lastIndexOf(':')
  const key = spec.slice(0, at)
  const size = Number(spec.slice(at + 1))
  const head = await send('HEAD', `/${values.bucket}/${key}`, {})
  if (head.statusCode === 200 && Number(head.headers['content-length']) === size) continue
  seeded.push({ key, size, seconds: Number((await seed(key, size)).toFixed(1)) })
}

const relay = http.createServer((req, res) => {
  if (req.url === '/__origin_gets') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(gets))
  if (req.url === '/__origin_bytes') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(sent))
  const path = (req.url ?? '/').split('?')[0]
  if (req.method === 'GET') gets[path] = (gets[path] ?? 0) + 1
  const upstream = http.request({ host: '127.0.0.1', port: backend.port, method: req.method, path: req.url, headers: { ...req.headers, host: `127.0.0.1:${backend.port}` }, agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers)
    const count = (chunk) => (sent[path] = (sent[path] ?? 0) + chunk.length)
    if (rate === 0) {
      answer.on('data', count)
      return void answer.pipe(res)
    }
    let started = performance.now()
    let bytes = 0
    // Held back while ahead of --rate; counted once handed on. A reader that fell behind (it
    // stopped reading) does not get a burst: the pace starts again from now.
    const paced = async function* (body) {
      for await (const chunk of body) {
        const ahead = ((bytes + chunk.length) / rate) * 1000 - (performance.now() - started)
        if (ahead < -100) {
          started = performance.now() - (bytes / rate) * 1000
        } else if (ahead > 0) await sleep(ahead)
        bytes += chunk.length
        yield chunk
        count(chunk)
      }
    }
    pipeline(answer, paced, res).catch(() => {})
  })
  upstream.on('error', () => res.destroy())
  res.on('close', () => {
    if (!res.writableFinished) upstream.destroy()
  })
  req.pipe(upstream)
})
relay.keepAliveTimeout = 75_000
relay.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: relay.address().port, seeded })}\n`)
})
process.on('SIGTERM', () => process.exit(0))
