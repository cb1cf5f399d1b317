// The ceiling for the cached read path: a bare node:http server answering the same 1 KiB, in its
// own process (as the proxy is), so neither shares an event loop with the load generator.
import http from 'node:http'

const body = Buffer.alloc(1024, 1)
const port = Number(process.argv[2])
http
  .createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length })
    res.end(body)
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'))
