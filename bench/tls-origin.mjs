// The origin of bench/tls-origin.sh: an https server answering every GET with the same object
// (1 KiB unless SIZE bytes are given; S3's headers, no signature check), counting TLS connections
// and resumed sessions, which it prints when it gets SIGTERM.
// Usage: node bench/tls-origin.mjs PORT CERT KEY [SIZE]
import https from 'node:https'
import { readFileSync } from 'node:fs'

const [port, certFile, keyFile, size = '1024'] = process.argv.slice(2)
const body = Buffer.alloc(Number(size), 120)
const headers = {
  'content-type': 'application/octet-stream',
  'content-length': String(body.length),
  etag: '"0f343b0931126a20f133d67c2b018a3b"',
  'last-modified': 'Sun, 06 Dec 2026 00:00:00 GMT',
  'accept-ranges': 'bytes',
}
let connections = 0
let resumed = 0
const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) => {
  res.writeHead(200, headers)
  res.end(body)
})
server.on('secureConnection', (socket) => {
  connections++
  if (socket.isSessionReused()) resumed++
})
server.listen(Number(port), '127.0.0.1', () => console.log('READY'))
process.on('SIGTERM', () => {
  console.log(`tls connections ${connections}, resumed ${resumed}`)
  process.exit(0)
})
