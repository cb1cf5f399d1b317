// `npm run demo` works on a fresh machine: it serves the sample objects, its printed token opens
// the private bucket, and Ctrl-C stops everything with exit code 0.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { it } from 'node:test'
import { send } from '../support/http.ts'

it('serves the sample objects and accepts the printed token, then stops on Ctrl-C', async () => {
  const root = join(import.meta.dirname, '../..')
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'scripts/demo.ts')], {
    cwd: root,
    env: { ...process.env, DEMO_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  let out = ''
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('Ctrl-C stops')) resolve()
    })
    child.on('exit', () => reject(new Error(`demo exited early:\n${out}`)))
  })
  const url = /running at (http:\/\/\S+)/.exec(out)?.[1]
  const token = /Authorization: Bearer ([\w.-]+)/.exec(out)?.[1]
  assert.ok(url !== undefined && token !== undefined, out)

  const hello = await send(url, '/public/hello.txt')
  assert.equal(hello.status, 200)
  assert.equal(hello.text, 'Hello from yatagarasu!\n')
  assert.equal((await send(url, '/public/logo.png')).headers['content-type'], 'image/png')
  assert.equal((await send(url, '/public/big.bin', { method: 'HEAD' })).headers['content-length'], String(50 * 1024 * 1024))
  assert.equal((await send(url, '/private/report.txt')).status, 401)
  const report = await send(url, '/private/report.txt', { headers: { authorization: `Bearer ${token}` } })
  assert.equal(report.status, 200)
  assert.equal((await send(url, `/private/report.txt?token=${token}`)).status, 200)
  // The demo caches, and its printed admin token reloads it (what the k6 reload scenario needs).
  assert.equal((await send(url, '/public/hello.txt')).headers['x-cache'], 'HIT')
  const admin = /admin token: (\w+)/.exec(out)?.[1]
  const reload = await send(url, '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${admin}` } })
  assert.equal(reload.status, 200)
  assert.equal(reload.json<{ generation: number }>().generation, 2)

  child.kill('SIGINT')
  assert.equal(await exited, 0)
})
