// Audit syslog output: RFC 5424 messages, `<PRI>1 TIMESTAMP HOST yatagarasu PID audit - JSON`,
// over UDP (one datagram per record) or TCP (octet-counting framing, RFC 6587, reconnecting).
// Records that cannot be sent are dropped and counted; sending never blocks a request.
import dgram from 'node:dgram'
import net from 'node:net'
import { hostname } from 'node:os'
import type { SYSLOG_FACILITIES } from '../config/schema.ts'

const FACILITY_CODES: Record<(typeof SYSLOG_FACILITIES)[number], number> = {
  kern: 0, user: 1, mail: 2, daemon: 3, auth: 4, syslog: 5, lpr: 6, news: 7, uucp: 8, cron: 9, authpriv: 10, ftp: 11,
  ntp: 12, security: 13, console: 14, 'solaris-cron': 15, local0: 16, local1: 17, local2: 18, local3: 19, local4: 20,
  local5: 21, local6: 22, local7: 23,
}
/** Severity 6: informational. */
const SEVERITY = 6
/** A TCP connection that cannot keep up drops records instead of buffering without bound. */
const MAX_TCP_BUFFER = 4 * 1024 * 1024

export interface SyslogOptions {
  address: string
  protocol: 'udp' | 'tcp'
  facility: (typeof SYSLOG_FACILITIES)[number]
  onDrop: () => void
}

export class AuditSyslog {
  readonly #options: SyslogOptions
  readonly #host: string
  readonly #port: number
  readonly #header: string
  #udp: dgram.Socket | undefined
  #tcp: net.Socket | undefined
  #tcpReady = false
  #closed = false

  constructor(options: SyslogOptions) {
    this.#options = options
    const split = options.address.lastIndexOf(':')
    this.#host = options.address.slice(0, split).replace(/^\[|\]$/g, '')
    this.#port = Number(options.address.slice(split + 1))
    this.#header = ` ${hostname() || '-'} yatagarasu ${process.pid} audit - `
    if (options.protocol === 'udp') {
      this.#udp = dgram.createSocket(net.isIPv6(this.#host) ? 'udp6' : 'udp4')
      this.#udp.on('error', () => options.onDrop())
      this.#udp.unref()
    } else {
      this.#connect()
    }
  }

  write(json: string, timestamp: string): void {
    const message = `<${FACILITY_CODES[this.#options.facility] * 8 + SEVERITY}>1 ${timestamp}${this.#header}${json}`
    if (this.#udp !== undefined) {
      this.#udp.send(message, this.#port, this.#host, (err) => {
        if (err) this.#options.onDrop()
      })
      return
    }
    const tcp = this.#tcp
    if (!this.#tcpReady || tcp === undefined || tcp.writableLength > MAX_TCP_BUFFER) return this.#options.onDrop()
    tcp.write(`${Buffer.byteLength(message)} ${message}`)
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#udp?.close()
    if (this.#tcp !== undefined) await new Promise<void>((resolve) => this.#tcp?.end(resolve))
  }

  #connect(): void {
    if (this.#closed) return
    const socket = net.connect(this.#port, this.#host)
    this.#tcp = socket
    socket.unref()
    socket.on('connect', () => (this.#tcpReady = true))
    socket.on('error', () => undefined)
    socket.on('close', () => {
      this.#tcpReady = false
      // Reconnect after a pause; records meanwhile are dropped and counted.
      if (!this.#closed) setTimeout(() => this.#connect(), 1000).unref()
    })
  }
}
