// A real Redis Cluster for tests: six redis-server processes (3 masters, 3 replicas) on loopback,
// persistence off, a short node timeout so a failover takes seconds, joined by
// `redis-cli --cluster create`. Helpers to find where a key lives, and to kill (SIGKILL), hang
// (SIGSTOP) or resume (SIGCONT) a node, and to wait for the cluster to heal.
// Every process is killed by stop(), and by the exit and signal handlers below if a test dies first.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'

/** Short enough that a failover takes a few seconds, long enough for a busy 2-core machine. */
export const NODE_TIMEOUT_MS = 1000
const START_DEADLINE_MS = 60_000

export interface ClusterNode {
  port: number
  /** `127.0.0.1:<port>`, as ioredis and CLUSTER NODES name it. */
  address: string
  process: ChildProcess
}

export interface NodeView {
  id: string
  address: string
  role: 'master' | 'replica'
  /** The master's node id for a replica. */
  masterId: string | undefined
  failed: boolean
  /** Slot ranges served (masters), inclusive. */
  ranges: Array<[number, number]>
}

export interface TestRedisCluster {
  nodes: ClusterNode[]
  /** `host:port` seeds for `cache.redis.cluster_nodes`. */
  seeds: string[]
  /** The cluster's view of its nodes (CLUSTER NODES), asked of a live, answering node. */
  view(): Promise<NodeView[]>
  masters(): Promise<ClusterNode[]>
  /** The master serving `key`'s slot now. */
  masterOf(key: string): Promise<ClusterNode>
  /** Sends one command to `node` (undefined when it fails or does not answer within 1 s). */
  command(node: ClusterNode, ...args: string[]): Promise<unknown>
  /** `cluster_state` as `node` sees it (`undefined` when it does not answer in time). */
  state(node: ClusterNode): Promise<string | undefined>
  /** SIGKILL (a crash). */
  kill(node: ClusterNode): Promise<void>
  /** SIGSTOP: the node hangs, its connections stay open and nothing answers. */
  pause(node: ClusterNode): Promise<void>
  /** SIGCONT after pause. */
  resume(node: ClusterNode): void
  /**
   * Resolves with the node that serves what `master` served before it was killed or paused, once
   * that is another node and every running node reports `cluster_state:ok`.
   */
  waitForFailover(master: ClusterNode): Promise<ClusterNode>
  /** Resolves when every node that is running and not paused reports `cluster_state:ok`. */
  waitUntilOk(): Promise<void>
  stop(): Promise<void>
}

const running = new Set<ChildProcess>()
let handlersInstalled = false

/** Kills what is left when the test process ends without stop() (a failed `before`, a signal). */
function installExitHandlers(): void {
  if (handlersInstalled) return
  handlersInstalled = true
  const killAll = () => {
    for (const child of running) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
  }
  process.on('exit', killAll)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAll()
      process.kill(process.pid, signal)
    })
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/**
 * A port whose cluster bus port (+10000) is free too. Both are taken below Linux's ephemeral range
 * (32768+), so an outgoing connection of another test cannot grab one between the check and
 * redis-server binding it.
 */
async function freeNodePort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 1000; i++) {
    const port = 12_000 + Math.floor(Math.random() * 10_000)
    if (taken.has(port) || taken.has(port + 10_000)) continue
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) {
      taken.add(port).add(port + 10_000)
      return port
    }
  }
  throw new Error('no free port pair for a cluster node')
}

/**
 * One connection per node for the tests' own commands (polled often during a failover: a fresh
 * connection each time would cost the busy test process more than the proxy does). A command that
 * fails or gets no answer in time (a paused node) yields undefined.
 */
function controlConnections() {
  const clients = new Map<number, Redis>()
  const call = async (port: number, args: string[]): Promise<unknown> => {
    let client = clients.get(port)
    if (client === undefined || client.status === 'end') {
      client = new Redis({ port, host: '127.0.0.1', commandTimeout: 1000, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null })
      client.on('error', () => {})
      clients.set(port, client)
    }
    return client.call(args[0] as string, ...args.slice(1)).catch(() => undefined)
  }
  return {
    call,
    ask: async (port: number, args: string[]) => {
      const reply = await call(port, args)
      return reply === undefined || reply === null ? undefined : String(reply)
    },
    close: () => {
      for (const client of clients.values()) client.disconnect()
    },
  }
}

function parseNodes(text: string): NodeView[] {
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [id = '', address = '', flags = '', master = '-', , , , , ...slots] = line.split(' ')
      const ranges = slots
        .filter((s) => !s.startsWith('[')) // slots being migrated
        .map((range) => {
          const [from = 0, to = from] = range.split('-').map(Number)
          return [from, to] as [number, number]
        })
      return {
        id,
        address: address.split('@')[0] ?? '',
        role: flags.includes('master') ? ('master' as const) : ('replica' as const),
        masterId: master === '-' ? undefined : master,
        // `fail?` is only suspected (PFAIL); `fail` is agreed by a majority of masters.
        failed: flags.split(',').includes('fail'),
        ranges,
      }
    })
}

async function until<T>(read: () => Promise<T | undefined>, what: string, deadlineMs = START_DEADLINE_MS): Promise<T> {
  const deadline = Date.now() + deadlineMs
  while (Date.now() < deadline) {
    const value = await read()
    if (value !== undefined) return value
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`redis cluster: timed out waiting for ${what}`)
}

function waitListening(node: ClusterNode, ask: (port: number, args: string[]) => Promise<string | undefined>, spawnError: () => Error | undefined): Promise<void> {
  return until(async () => {
    const error = spawnError()
    if (error !== undefined) throw new Error(`redis-server did not start (is it installed? .ci/run installs it): ${error.message}`)
    if (node.process.exitCode !== null) throw new Error(`redis-server on ${node.port} exited (code ${node.process.exitCode})`)
    return (await ask(node.port, ['PING'])) === 'PONG' ? true : undefined
  }, `redis-server on ${node.port} to answer`).then(() => undefined)
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.once('error', reject)
    child.once('exit', (code) => (code === 0 ? resolve(output) : reject(new Error(`${command} exited with ${code}: ${output}`))))
  })
}

export async function startRedisCluster(): Promise<TestRedisCluster> {
  installExitHandlers()
  const dir = await mkdtemp(join(tmpdir(), 'yatagarasu-redis-cluster-'))
  const taken = new Set<number>()
  const nodes: ClusterNode[] = []
  const paused = new Set<ClusterNode>()
  let spawnError: Error | undefined
  const control = controlConnections()
  const { ask } = control
  const stop = async () => {
    control.close()
    await Promise.all(nodes.map((node) => kill(node)))
    await rm(dir, { recursive: true, force: true })
  }
  const kill = async (node: ClusterNode) => {
    const child = node.process
    paused.delete(node)
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await exited
  }
  try {
    for (let i = 0; i < 6; i++) {
      const port = await freeNodePort(taken)
      const child = spawn(
        'redis-server',
        [
          '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
          '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout', String(NODE_TIMEOUT_MS), '--dir', dir,
          // A replica syncs at once instead of after the default 5 s wait for other replicas.
          '--repl-diskless-sync-delay', '0',
        ],
        { stdio: 'ignore' }
      )
      running.add(child)
      child.once('exit', () => running.delete(child))
      child.once('error', (err) => {
        running.delete(child)
        spawnError = err
      })
      nodes.push({ port, address: `127.0.0.1:${port}`, process: child })
    }
    await Promise.all(nodes.map((node) => waitListening(node, ask, () => spawnError)))
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => n.address), '--cluster-replicas', '1', '--cluster-yes'])
  } catch (err) {
    await stop()
    throw err
  }

  const live = () => nodes.filter((n) => n.process.exitCode === null && n.process.signalCode === null && !paused.has(n))
  const byAddress = (address: string) => {
    const node = nodes.find((n) => n.address === address)
    if (node === undefined) throw new Error(`unknown cluster node ${address}`)
    return node
  }
  const view = async () => {
    for (const node of live()) {
      const text = await ask(node.port, ['CLUSTER', 'NODES'])
      if (text !== undefined) return parseNodes(text)
    }
    throw new Error('no cluster node answers')
  }
  const state = async (node: ClusterNode) => (await ask(node.port, ['CLUSTER', 'INFO']))?.match(/cluster_state:(\w+)/)?.[1]
  /** ok on every live node, all slots covered, and every live replica's link to its master up. */
  const healthy = async () => {
    for (const node of live()) {
      const info = await ask(node.port, ['CLUSTER', 'INFO'])
      if (info === undefined || !info.includes('cluster_state:ok') || !info.includes('cluster_slots_ok:16384')) return undefined
      const replication = await ask(node.port, ['INFO', 'replication'])
      if (replication === undefined || (replication.includes('role:slave') && !replication.includes('master_link_status:up'))) return undefined
    }
    return true
  }
  const waitUntilOk = () => until(healthy, 'cluster_state:ok on every node').then(() => undefined)
  try {
    await waitUntilOk()
    // Every master has its replica attached (so each can fail over).
    await until(async () => {
      const all = await view()
      const replicas = all.filter((n) => n.role === 'replica' && !n.failed)
      return replicas.length === 3 ? true : undefined
    }, 'three attached replicas')
  } catch (err) {
    await stop()
    throw err
  }

  /** A slot each killed or paused master served, to find who serves it after a failover. */
  const slotOf = new Map<ClusterNode, number>()
  const ownerOf = (all: NodeView[], slot: number) =>
    all.find((n) => n.role === 'master' && !n.failed && n.ranges.some(([from, to]) => slot >= from && slot <= to))
  const remember = async (node: ClusterNode) => {
    const seen = (await view()).find((n) => n.address === node.address)
    const first = seen?.ranges[0]
    if (seen?.role === 'master' && first !== undefined) slotOf.set(node, first[0])
  }

  return {
    nodes,
    seeds: nodes.map((n) => n.address),
    view,
    async masters() {
      return (await view()).filter((n) => n.role === 'master' && !n.failed && n.ranges.length > 0).map((n) => byAddress(n.address))
    },
    async masterOf(key) {
      const node = live()[0]
      if (node === undefined) throw new Error('no cluster node is running')
      const slot = Number(await ask(node.port, ['CLUSTER', 'KEYSLOT', key]))
      const owner = ownerOf(await view(), slot)
      if (owner === undefined) throw new Error(`no master serves slot ${slot}`)
      return byAddress(owner.address)
    },
    command: (node, ...args) => control.call(node.port, args),
    state,
    async kill(node) {
      await remember(node)
      await kill(node)
    },
    async pause(node) {
      await remember(node)
      paused.add(node)
      node.process.kill('SIGSTOP')
    },
    resume(node) {
      paused.delete(node)
      node.process.kill('SIGCONT')
    },
    async waitForFailover(master) {
      const slot = slotOf.get(master)
      if (slot === undefined) throw new Error(`${master.address} was not a master when it was stopped`)
      const promoted = await until(async () => {
        const owner = ownerOf(await view(), slot)
        return owner === undefined || owner.address === master.address ? undefined : byAddress(owner.address)
      }, `a replica of ${master.address} to be promoted`)
      await waitUntilOk()
      return promoted
    },
    waitUntilOk,
    stop,
  }
}
