// A real redis-server for tests, started on a free loopback port with persistence off.
import { spawn, type ChildProcess } from 'node:child_process'
import { createConnection } from 'node:net'
import { freePort } from './http.ts'

export interface TestRedis {
  url: string
  port: number
  /** Kills the server (Redis down). */
  kill(): Promise<void>
  /** Starts it again on the same port. */
  restart(): Promise<void>
  /** Stops the process with SIGSTOP (Redis hung: connections stay open, nothing answers). */
  pause(): void
  /** SIGCONT: it answers again, queued commands first. */
  resume(): void
  stop(): Promise<void>
}


function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('+PONG'))
    })
    socket.once('error', () => resolve(false))
  })
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const launch = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    })
    for (let i = 0; i < 200; i++) {
      if (await ping(port)) return
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    throw new Error('redis-server did not start (is it installed? .ci/run installs it)')
  }
  const kill = async () => {
    const running = child
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  const signal = (name: 'SIGSTOP' | 'SIGCONT') => {
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) throw new Error('redis-server is not running')
    child.kill(name)
  }
  await launch()
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill,
    restart: launch,
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    stop: kill,
  }
}
