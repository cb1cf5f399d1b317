// Signed requests against a real HTTP server that records what arrives: within one second,
// identical requests share a signature; any difference (key, a signed header, the credentials)
// is signed anew, and the signed headers are sent as signed.
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { SignedRequests } from './signed-request.ts'

let server: http.Server
const seen: http.IncomingHttpHeaders[] = []
let endpoint = ''

before(async () => {
  server = http.createServer((req, res) => {
    seen.push(req.headers)
    res.end('ok')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  endpoint = `127.0.0.1:${port}`
})
after(() => new Promise<void>((resolve) => server.close(() => resolve())))

function requests(credentials: () => { accessKeyId: string; secretAccessKey: string }): SignedRequests {
  return new SignedRequests({
    target: async () => ({ protocol: 'http:', hostname: '127.0.0.1', port: Number(endpoint.split(':')[1]), host: endpoint, base: '/bucket/', signingRegion: 'us-east-1', signingService: 's3' }),
    credentials: async () => credentials(),
    connectTimeoutMs: 1000,
    maxSockets: 4,
  })
}

/** Sends, reads the answer, and returns the headers the server saw. */
async function sent(r: SignedRequests, key: string, headers?: Record<string, string>): Promise<http.IncomingHttpHeaders> {
  const response = await r.send('GET', key, headers, new AbortController().signal)
  await new Promise<void>((resolve, reject) => response.body.consume({ data() {}, end: resolve, error: reject }, true))
  return seen.at(-1) as http.IncomingHttpHeaders
}

/** Runs `work` at the start of a second, so that it does not straddle two. */
async function withinOneSecond<T>(work: () => Promise<T>): Promise<T> {
  for (;;) {
    const second = Math.floor(Date.now() / 1000)
    await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 5))
    const result = await work()
    if (Math.floor(Date.now() / 1000) === second + 1) return result
  }
}

describe('signed requests', () => {
  it('signs identical requests in one second alike, and any difference anew', async () => {
    const keys = { accessKeyId: 'AKID', secretAccessKey: 'one' }
    const r = requests(() => keys)
    await withinOneSecond(async () => {
      const first = await sent(r, 'a.txt')
      const again = await sent(r, 'a.txt')
      assert.equal(again.authorization, first.authorization)
      assert.equal(again['x-amz-date'], first['x-amz-date'])

      const other = await sent(r, 'b.txt')
      assert.notEqual(other.authorization, first.authorization)

      const ranged = await sent(r, 'a.txt', { range: 'bytes=0-1' })
      assert.equal(ranged.range, 'bytes=0-1')
      assert.match(ranged.authorization ?? '', /SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,/)
      assert.notEqual(ranged.authorization, first.authorization)
    })
    r.close()
  })

  it('signs anew once the credentials change', async () => {
    let keys = { accessKeyId: 'AKID', secretAccessKey: 'one' }
    const r = requests(() => keys)
    await withinOneSecond(async () => {
      const first = await sent(r, 'a.txt')
      keys = { accessKeyId: 'AKID', secretAccessKey: 'two' }
      const rotated = await sent(r, 'a.txt')
      assert.notEqual(rotated.authorization, first.authorization)
    })
    r.close()
  })
})
