// deploy/kubernetes: every overlay renders with the kubectl on PATH (kustomize v5, or the v2.0.3
// built into Debian's kubernetes-client), and what it renders agrees with the config it mounts:
// ports and probes, the Prometheus annotations, the secrets the config reads, the config passing
// `yatagarasu --check`, the PodDisruptionBudget's selector, the shutdown budget.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parseAllDocuments, parseDocument } from 'yaml'
import { parseConfig } from '../../src/config/load.ts'
import type { Config } from '../../src/config/schema.ts'

const ROOT = join(import.meta.dirname, '../..')
const OVERLAYS = join(ROOT, 'deploy/kubernetes/overlays')

// The parts of the Kubernetes objects the checks read.
interface Labels {
  [name: string]: string
}
interface Probe {
  httpGet?: { path?: string; port?: number | string }
}
interface Container {
  name: string
  image?: string
  args?: string[]
  ports?: Array<{ name?: string; containerPort: number }>
  env?: Array<{
    name: string
    value?: string
    valueFrom?: { secretKeyRef?: { name: string; key: string } }
  }>
  livenessProbe?: Probe
  readinessProbe?: Probe
  startupProbe?: Probe
  lifecycle?: { preStop?: { exec?: { command?: string[] } } }
  securityContext?: { readOnlyRootFilesystem?: boolean }
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string; readOnly?: boolean }>
}
interface PodSpec {
  terminationGracePeriodSeconds?: number
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number }
  containers: Container[]
  volumes?: Array<{ name: string; configMap?: { name: string }; emptyDir?: object }>
  affinity?: { podAntiAffinity?: object }
  topologySpreadConstraints?: object[]
}
interface Deployment {
  kind: 'Deployment'
  metadata: { name: string }
  spec: {
    replicas?: number
    selector: { matchLabels: Labels }
    template: { metadata: { labels: Labels; annotations?: Labels }; spec: PodSpec }
  }
}
interface Service {
  kind: 'Service'
  spec: { selector: Labels; ports: Array<{ port: number; targetPort: number | string }> }
}
interface ConfigMap {
  kind: 'ConfigMap'
  metadata: { name: string }
  data: Record<string, string>
}
interface Pdb {
  kind: 'PodDisruptionBudget'
  spec: {
    selector: { matchLabels: Labels }
    minAvailable?: number | string
    maxUnavailable?: number | string
  }
}

interface Rendered {
  deployment: Deployment
  container: Container
  service: Service
  configMap: ConfigMap
  pdb: Pdb
  /** The mounted config.yaml as the proxy reads it (with test values for the secrets). */
  config: Config
  configText: string
  /** Test values for the variables the Deployment sets from the Secret. */
  secretEnv: Record<string, string>
}

function kubectl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('kubectl', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
        reject(
          new Error(
            'kubectl is not on PATH: install it (on Debian: apt-get install kubernetes-client, ' +
              'as .ci/run does) to check the Kubernetes manifests in deploy/kubernetes'
          )
        )
      } else if (err !== null) {
        reject(new Error(`kubectl ${args.join(' ')} failed: ${stderr || err.message}`))
      } else {
        resolve(stdout)
      }
    })
  })
}

function only<T extends { kind: string }>(objects: Array<{ kind: string }>, kind: T['kind']): T {
  const found = objects.filter((o) => o.kind === kind)
  assert.equal(found.length, 1, `expected exactly one ${kind}, rendered ${found.length}`)
  return found[0] as T
}

/** Stand-ins for the Secret's values, long enough for every check the config makes. */
function secretValues(container: Container): Record<string, string> {
  const env: Record<string, string> = {}
  for (const variable of container.env ?? []) {
    if (variable.valueFrom?.secretKeyRef === undefined) continue
    env[variable.name] = randomBytes(32).toString('hex')
  }
  return env
}

async function render(overlay: string): Promise<Rendered> {
  const text = await kubectl(['kustomize', join(OVERLAYS, overlay)])
  const objects = parseAllDocuments(text).map((doc) => doc.toJS() as { kind: string })
  const deployment = only<Deployment>(objects, 'Deployment')
  const containers = deployment.spec.template.spec.containers
  assert.equal(containers.length, 1)
  const container = containers[0] as Container
  const configMap = only<ConfigMap>(objects, 'ConfigMap')
  const configText = configMap.data['config.yaml']
  assert.ok(configText !== undefined, 'the ConfigMap holds config.yaml')
  const secretEnv = secretValues(container)
  const config = await parseConfig(configText, `${overlay}/config.yaml`, secretEnv)
  return {
    deployment,
    container,
    service: only<Service>(objects, 'Service'),
    configMap,
    pdb: only<Pdb>(objects, 'PodDisruptionBudget'),
    config,
    configText,
    secretEnv,
  }
}

function portNumber(container: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return container.ports?.find((p) => p.name === port)?.containerPort
}

function selects(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([name, value]) => labels[name] === value)
}

/** Every string value in a parsed YAML document (comments are not values). */
function stringsIn(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(stringsIn)
  if (value !== null && typeof value === 'object') return Object.values(value).flatMap(stringsIn)
  return []
}

/** Runs the real CLI, as an operator would before applying. */
function check(file: string, env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--check', '--config', file],
      {
        cwd: ROOT,
        env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env },
      },
      (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : Number(err.code ?? 1), output: stdout + stderr })
    )
  })
}

// The shipped config.yaml's conventions: proxy port from its address, metrics port its default.
let shipped: Config
let dir: string

before(async () => {
  shipped = await parseConfig(await readFile(join(ROOT, 'config.yaml'), 'utf8'), 'config.yaml', {
    AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'example',
    JWT_SECRET: randomBytes(32).toString('hex'),
  })
  dir = await mkdtemp(join(tmpdir(), 'yatagarasu-deploy-'))
})

after(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

it('ships the single and ha-redis-cluster overlays', async () => {
  assert.deepEqual((await readdir(OVERLAYS)).sort(), ['ha-redis-cluster', 'single'])
})

it('runs node as PID 1 in the image, so `kill -HUP 1` in the pod reaches the proxy', async () => {
  const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8')
  // Exec form: no shell in between that would receive the signal instead.
  assert.match(dockerfile, /^ENTRYPOINT \["node", ("--[a-z-]+=\d+", )*"dist\/main\.js"\]$/m)
})

for (const overlay of ['single', 'ha-redis-cluster']) {
  describe(`overlay ${overlay}`, () => {
    // Rendered once, on first use: without kubectl every test fails with the message saying so.
    let rendering: Promise<Rendered> | undefined
    const rendered = () => (rendering ??= render(overlay))

    it('listens and is probed on the port of the mounted config, the shipped config\'s port', async () => {
      const r = await rendered()
      const http = portNumber(r.container, 'http')
      assert.equal(r.config.server.port, shipped.server.port)
      assert.equal(http, r.config.server.port)
      const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8')
      assert.match(dockerfile, new RegExp(`^EXPOSE ${http}$`, 'm'))

      const { livenessProbe, readinessProbe, startupProbe } = r.container
      assert.equal(livenessProbe?.httpGet?.path, '/health')
      assert.equal(portNumber(r.container, livenessProbe?.httpGet?.port), http)
      assert.equal(readinessProbe?.httpGet?.path, '/ready')
      assert.equal(portNumber(r.container, readinessProbe?.httpGet?.port), http)
      if (startupProbe !== undefined) {
        assert.equal(startupProbe.httpGet?.path, '/health')
        assert.equal(portNumber(r.container, startupProbe.httpGet?.port), http)
      }

      assert.equal(r.service.spec.ports.length, 1)
      assert.equal(portNumber(r.container, r.service.spec.ports[0]?.targetPort), http)
      const pods = r.deployment.spec.template.metadata.labels
      assert.ok(selects(r.service.spec.selector, pods), 'the Service selects the pods')
    })

    it('annotates the metrics port of the mounted config for Prometheus', async () => {
      const r = await rendered()
      assert.equal(r.config.metrics.enabled, true)
      assert.equal(r.config.metrics.port, shipped.metrics.port)
      const annotations = r.deployment.spec.template.metadata.annotations ?? {}
      assert.equal(annotations['prometheus.io/scrape'], 'true')
      assert.equal(annotations['prometheus.io/port'], String(r.config.metrics.port))
      assert.equal(annotations['prometheus.io/path'], '/metrics')
      assert.equal(portNumber(r.container, 'metrics'), r.config.metrics.port)
    })

    it('mounts the ConfigMap as a directory (no subPath: updates reach the pod) at --config', async () => {
      const r = await rendered()
      const volume = r.deployment.spec.template.spec.volumes?.find(
        (v) => v.configMap?.name === r.configMap.metadata.name
      )
      assert.ok(volume !== undefined, 'a volume from the rendered ConfigMap')
      const mount = r.container.volumeMounts?.find((m) => m.name === volume.name)
      assert.ok(mount !== undefined)
      assert.equal(mount.subPath, undefined)
      assert.deepEqual(r.container.args, ['--config', posix.join(mount.mountPath, 'config.yaml')])
    })

    it('reads every variable of the config from a Secret, never from a literal', async () => {
      const r = await rendered()
      const variables = stringsIn(parseDocument(r.configText).toJS()).flatMap((value) =>
        [...value.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1] as string)
      )
      assert.ok(variables.length > 0)
      for (const name of new Set(variables)) {
        const entry = r.container.env?.find((e) => e.name === name)
        assert.ok(entry?.valueFrom?.secretKeyRef !== undefined, `${name} comes from a secretKeyRef`)
        assert.equal(entry.value, undefined)
      }
      assert.ok(r.config.admin?.token !== undefined, 'the admin token (for /admin/reload) is configured')
    })

    it('passes yatagarasu --check', async () => {
      const r = await rendered()
      // The disk tier's directory is the pod's volume; --check creates it, so point it at a
      // temporary directory here (after checking that it is a writable volume in the pod).
      const doc = parseDocument(r.configText)
      const diskDir = doc.getIn(['cache', 'disk', 'dir'])
      if (typeof diskDir === 'string') {
        const mount = r.container.volumeMounts?.find((m) => m.mountPath === diskDir)
        assert.ok(mount !== undefined && mount.readOnly !== true, `${diskDir} is a writable volume`)
        doc.setIn(['cache', 'disk', 'dir'], join(dir, `${overlay}-disk`))
      }
      const file = join(dir, `${overlay}.yaml`)
      await writeFile(file, doc.toString())
      const { code, output } = await check(file, r.secretEnv)
      assert.equal(code, 0, output)
      assert.match(output, /is valid: 2 bucket\(s\)/)
    })

    it('has a PodDisruptionBudget that selects the Deployment\'s pods', async () => {
      const r = await rendered()
      const pods = r.deployment.spec.template.metadata.labels
      assert.ok(Object.keys(r.pdb.spec.selector.matchLabels).length > 0)
      assert.ok(selects(r.pdb.spec.selector.matchLabels, pods))
      assert.ok(selects(r.deployment.spec.selector.matchLabels, pods))
    })

    it('lets the drain finish before the kubelet kills the pod, as a non-root user', async () => {
      const r = await rendered()
      const spec = r.deployment.spec.template.spec
      const command = r.container.lifecycle?.preStop?.exec?.command ?? []
      assert.equal(command[0], 'sleep')
      const pause = Number(command[1])
      assert.ok(spec.terminationGracePeriodSeconds !== undefined)
      const drain = r.config.server.shutdown_timeout_seconds
      assert.ok(
        spec.terminationGracePeriodSeconds > pause + drain,
        `terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} > ${pause} + ${drain}`
      )
      assert.equal(spec.securityContext?.runAsNonRoot, true)
      assert.ok((spec.securityContext?.runAsUser ?? 0) > 0)
      assert.equal(r.container.securityContext?.readOnlyRootFilesystem, true)
    })

    if (overlay === 'single') {
      it('runs one replica caching in memory, then on disk', async () => {
        const r = await rendered()
        assert.equal(r.deployment.spec.replicas, 1)
        assert.deepEqual(r.config.cache?.layers, ['memory', 'disk'])
        const dir = r.config.cache?.disk?.dir
        const mount = r.container.volumeMounts?.find((m) => m.mountPath === dir)
        const volume = r.deployment.spec.template.spec.volumes?.find((v) => v.name === mount?.name)
        assert.ok(volume?.emptyDir !== undefined, 'the disk tier is on an emptyDir')
      })
    } else {
      it('runs spread replicas sharing a Redis Cluster, two kept through disruptions', async () => {
        const r = await rendered()
        const replicas = r.deployment.spec.replicas ?? 1
        assert.ok(replicas >= 3)
        assert.deepEqual(r.config.cache?.layers, ['memory', 'redis'])
        assert.ok((r.config.cache?.redis?.cluster_nodes.length ?? 0) >= 1)
        for (const node of r.config.cache?.redis?.cluster_nodes ?? []) {
          assert.match(node, /^[a-z0-9.-]+\.svc\.cluster\.local:\d+$/, 'a Service DNS name and port')
        }
        assert.equal(r.config.redis?.cluster_nodes.length, r.config.cache?.redis?.cluster_nodes.length)
        const spec = r.deployment.spec.template.spec
        assert.ok(spec.affinity?.podAntiAffinity !== undefined)
        assert.ok((spec.topologySpreadConstraints ?? []).length > 0)
        assert.equal(r.pdb.spec.maxUnavailable, undefined)
        assert.equal(typeof r.pdb.spec.minAvailable, 'number')
        const minAvailable = r.pdb.spec.minAvailable as number
        assert.ok(minAvailable >= 2 && minAvailable < replicas, `minAvailable ${minAvailable}`)
      })
    }
  })
}
