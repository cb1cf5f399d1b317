// Builds the OPA wasm ABI test module (abi-test-policy.wat) with wabt, as a .wasm file and as an
// `opa build`-style bundle (bundle.tar.gz holding /policy.wasm and /data.json).
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createGzip } from 'node:zlib'
import { pack } from 'tar-stream'
import wabt from 'wabt'

export async function buildAbiTestPolicy(dir: string): Promise<{ wasm: string; bundle: string }> {
  const source = await readFile(join(import.meta.dirname, 'abi-test-policy.wat'), 'utf8')
  const module = (await wabt()).parseWat('abi-test-policy.wat', source)
  const binary = Buffer.from(module.toBinary({}).buffer)
  module.destroy()
  const wasm = join(dir, 'policy.wasm')
  await writeFile(wasm, binary)

  const archive = pack()
  archive.entry({ name: '/policy.wasm' }, binary)
  archive.entry({ name: '/data.json' }, '{}')
  archive.finalize()
  const chunks: Buffer[] = []
  const gzip = archive.pipe(createGzip())
  for await (const chunk of gzip) chunks.push(chunk as Buffer)
  const bundle = join(dir, 'bundle.tar.gz')
  await writeFile(bundle, Buffer.concat(chunks))
  return { wasm, bundle }
}
