// Structured logs with pino: JSON by default, human-readable text when `logging.format: text`.
// Nothing that can carry a secret (headers, query strings, tokens) is ever passed to the logger.
import { writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger } from 'pino'
import type { Config } from '../config/schema.ts'

export type { Logger }

/** Bytes of log lines gathered before they are handed to the output in one write. */
const BATCH_BYTES = 64 * 1024
const DRAIN_EVERY_MS = 250
/** How long a shutdown waits for its last log lines to reach a slow reader before exiting. */
const EXIT_FLUSH_MS = 2000
/** At exit, a full pipe is waited on for at most this many 10 ms pauses before lines are given up. */
const EXIT_WRITE_WAITS = 100
const EXIT_WAIT = new Int32Array(new SharedArrayBuffer(4))
/** A stalled stdout drops lines past this much pending output instead of growing without bound. */
const MAX_PENDING_BYTES = 64 * 1024 * 1024

export function createLogger(config: Config['logging'], destination?: DestinationStream): Logger {
  const options = { level: config.level, base: { service: 'yatagarasu' } }
  if (destination !== undefined) return pino(options, destination)
  if (config.format === 'text') {
    // Loaded only for text logs (~3 MB of resident memory the JSON default never needs).
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty')
    return pino(options, pretty({ colorize: false, sync: true }))
  }
  return pino(options, stdoutLines())
}

let stdout: LineBatch | undefined

/** Exits once the lines logged so far are written (or EXIT_FLUSH_MS passed: a stalled reader). */
export function exitAfterFlush(logger: Logger, code: number): void {
  setTimeout(() => process.exit(code), EXIT_FLUSH_MS)
  logger.flush(() => process.exit(code))
}

/**
 * The process's one writer to standard output, shared by the logger and the audit log's stdout
 * output: two writers on one pipe could interleave partial lines under back-pressure.
 */
export function stdoutLines(): LineBatch {
  if (stdout !== undefined) return stdout
  const output = lineOutput({ dest: 1, maxLength: MAX_PENDING_BYTES })
  // Lines that cannot be written (standard output is a file on a full disk, or fails with EIO)
  // must not take the service down: they wait (up to MAX_PENDING_BYTES, then are dropped) and go
  // out once it takes writes again. Standard error says so once per failure. Without a listener,
  // the error killed the process, and its exit hung in sonic-boom's flushSync.
  let failing = false
  output.on('error', (err: NodeJS.ErrnoException) => {
    if (failing) return
    failing = true
    const line = { level: 'error', time: Date.now(), service: 'yatagarasu', code: err.code, msg: 'log output failed: lines wait, and are dropped past 64 MB, until it takes writes again' }
    try {
      writeSync(2, `${JSON.stringify(line)}\n`)
    } catch {
      // Standard error fails too (the same file): nothing more to tell.
    }
  })
  output.on('write', () => (failing = false))
  // main.ts flushes lifecycle lines at once and on shutdown.
  const batched = new LineBatch(output)
  // process.exit() skips timers: write what is gathered synchronously on the way out.
  process.once('exit', () => batched.flushSync())
  stdout = batched
  return batched
}

export type Output = ReturnType<typeof pino.destination>

/**
 * A non-blocking output (sonic-boom) for a LineBatch: takes bytes, not strings, so each batch is
 * encoded once (a string output measures the byte length of its pending text on every write).
 */
export function lineOutput(options: { dest: number | string; maxLength?: number; append?: boolean }): Output {
  return pino.destination({ ...options, sync: false, minLength: 0, contentMode: 'buffer' })
}

/**
 * Gathers log lines into ~64 KiB of bytes and hands them to a `lineOutput` (sonic-boom), which does
 * the non-blocking writes (EAGAIN, partial writes, sync flush at exit). The access log is on the hot
 * path: each write is a hand-off to libuv's thread pool, so batches are large (64 KiB measured ~4%
 * faster than 16 KiB on a cached 1 KiB GET; 256 KiB was slower). Each line is encoded into the
 * batch as it arrives, so no string of pending lines is kept; a line known to be ASCII (the access
 * log's usual line) is copied byte for byte, without a UTF-8 pass. A quiet output's lines are not
 * held back for more than DRAIN_EVERY_MS.
 */
export class LineBatch implements DestinationStream {
  readonly #output: Output
  readonly #timer: NodeJS.Timeout
  /** The batch being filled; a new one after each hand-over (the output keeps the old until written). */
  #bytes = Buffer.allocUnsafeSlow(BATCH_BYTES)
  #used = 0
  /** Bytes handed to the output and not yet written, and who waits for them (`flush`). */
  #unwritten = 0
  #waiting: Array<(err?: Error) => void> = []
  constructor(output: Output) {
    this.#output = output
    // sonic-boom's flushSync (called at exit, by pino too) retries a write that fails for good
    // (ENOSPC, EIO) forever, and the process never exits: while the output fails, its waiting
    // lines are given up at exit instead.
    const flushSync = output.flushSync
    output.on('error', () => (output.flushSync = () => undefined))
    output.on('write', () => (output.flushSync = flushSync))
    // sonic-boom's own flush(cb) does not wait for writes in flight when minLength is 0: count
    // what it wrote, and what it dropped (over maxLength), against what it was handed.
    output.on('write', (n: number) => this.#done(n))
    output.on('drop', (bytes: Buffer) => this.#done(bytes.length))
    this.#timer = setInterval(() => this.drain(), DRAIN_EVERY_MS)
    this.#timer.unref()
  }

  /** Hands over what is gathered and stops the periodic drain (the output stays open). */
  stop(): void {
    clearInterval(this.#timer)
    this.drain()
  }

  /** A line of any characters (pino's lines, audit records). */
  write(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (!this.#room(line.length * 3)) return this.#hand(Buffer.from(line))
    this.#used += this.#bytes.write(line, this.#used, 'utf8')
  }

  /** A line the caller knows is ASCII only: its UTF-8 bytes are its characters. */
  writeAscii(line: string): void {
    if (!this.#room(line.length)) return this.#hand(Buffer.from(line, 'latin1'))
    this.#used += this.#bytes.write(line, this.#used, 'latin1')
  }

  /** Hands the gathered lines to the output now. */
  drain(): void {
    const used = this.#used
    if (used === 0) return
    this.#used = 0
    // The output keeps what it is handed until written. A batch at least half full is handed over
    // as it is; a smaller one (a timer drain on a quiet output) is copied out, so a stalled output
    // does not pin 64 KiB per few lines.
    if (used >= BATCH_BYTES / 2) {
      const bytes = this.#bytes.subarray(0, used)
      this.#bytes = Buffer.allocUnsafeSlow(BATCH_BYTES)
      this.#hand(bytes)
    } else {
      this.#hand(Buffer.from(this.#bytes.subarray(0, used)))
    }
  }

  /** pino's `logger.flush(cb)`: everything gathered so far reaches the file descriptor, then `cb`. */
  flush(cb?: (err?: Error) => void): void {
    this.drain()
    if (cb === undefined) return
    if (this.#unwritten <= 0) return process.nextTick(cb)
    // An output that fails meanwhile answers the waiters instead of leaving them hanging.
    if (this.#waiting.length === 0) this.#output.once('error', this.#settle)
    this.#waiting.push(cb)
  }

  /**
   * Writes everything synchronously (at exit). The gathered lines are written here directly: handed
   * to the output they would start an asynchronous write, which sonic-boom's flushSync leaves to the
   * thread pool, and the process would exit before it ran.
   */
  flushSync(): void {
    const output = this.#output
    try {
      output.flushSync()
      // sonic-boom sets `fd` once open; its type declarations leave it out.
      const fd = (output as unknown as { fd: number }).fd
      if (this.#used > 0 && fd >= 0) writeAllSync(fd, this.#bytes.subarray(0, this.#used))
    } catch {
      // Not open yet, already closed or broken: nothing more can be written.
    }
    this.#used = 0
    this.#unwritten = 0
    this.#settle()
  }

  /** Whether `size` more bytes fit in a batch, draining the current one when they do not fit in it. */
  #room(size: number): boolean {
    if (this.#used + size <= BATCH_BYTES) return true
    this.drain()
    return size <= BATCH_BYTES
  }

  /** Hands bytes (a batch, or one line larger than a batch) to the output. */
  #hand(bytes: Buffer): void {
    // sonic-boom's types know only strings; a 'buffer' output takes bytes. After a broken pipe
    // pino's guard makes `write` a no-op that returns nothing: those bytes will never be written.
    const accepted = this.#output.write(bytes as unknown as string) as boolean | undefined
    if (accepted !== undefined) this.#unwritten += bytes.length
  }

  #done(bytes: number): void {
    this.#unwritten -= bytes
    if (this.#unwritten <= 0) this.#settle()
  }

  readonly #settle = (err?: Error): void => {
    if (this.#waiting.length === 0) return
    const waiting = this.#waiting
    this.#waiting = []
    this.#output.off('error', this.#settle)
    for (const cb of waiting) process.nextTick(cb, err)
  }
}

/** Writes all of `bytes` to `fd` now, waiting out a full non-blocking pipe (exit path only). */
function writeAllSync(fd: number, bytes: Buffer): void {
  let offset = 0
  let waits = 0
  while (offset < bytes.length) {
    try {
      offset += writeSync(fd, bytes, offset)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || ++waits > EXIT_WRITE_WAITS) throw err
      Atomics.wait(EXIT_WAIT, 0, 0, 10)
    }
  }
}
