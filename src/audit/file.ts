// Audit file output: JSON lines appended asynchronously (sonic-boom), rotated by size:
// audit.log -> audit.log.1 -> ... -> audit.log.<max_backup_files>, the oldest deleted.
// A path that cannot be opened or written is reported once and its records are dropped (and
// counted) until the next reload: the audit log never breaks serving.
import { mkdirSync, statSync } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { LineBatch, lineOutput, type Output } from '../telemetry/log.ts'

export interface FileOutputOptions {
  path: string
  maxBytes: number
  maxBackups: number
  /** Called once when the file cannot be written; later records are dropped. */
  onFailure: (err: Error) => void
  onDrop: () => void
}

export class AuditFile {
  readonly #options: FileOutputOptions
  readonly #output: Output
  readonly #batch: LineBatch
  #bytes: number
  #broken = false
  #rotating = false

  constructor(options: FileOutputOptions) {
    this.#options = options
    this.#bytes = sizeOf(options.path)
    try {
      mkdirSync(dirname(options.path), { recursive: true })
    } catch {
      // Reported by the open below.
    }
    this.#output = lineOutput({ dest: options.path, append: true })
    this.#output.on('error', (err: Error) => {
      // pino flushes its destinations synchronously at exit, which throws for a file that never
      // opened: there is nothing to flush (as pino itself does after EPIPE).
      this.#output.flushSync = () => undefined
      if (this.#broken) return
      this.#broken = true
      options.onFailure(err)
    })
    this.#batch = new LineBatch(this.#output)
  }

  write(line: string): void {
    if (this.#broken) return this.#options.onDrop()
    const bytes = Buffer.byteLength(line)
    if (this.#bytes > 0 && this.#bytes + bytes > this.#options.maxBytes && !this.#rotating) this.#rotate()
    this.#bytes += bytes
    this.#batch.write(line)
  }

  async close(): Promise<void> {
    this.#batch.stop()
    if (this.#broken) {
      this.#output.destroy()
      return
    }
    await new Promise<void>((resolve) => this.#batch.flush(() => resolve()))
    await new Promise<void>((resolve) => {
      this.#output.once('close', () => resolve())
      this.#output.end()
    })
  }

  /**
   * Shifts the backups (asynchronously: this runs on a request's path), then reopens `path`.
   * Lines written meanwhile still go to the file being rotated out.
   */
  #rotate(): void {
    this.#batch.drain()
    this.#bytes = 0
    this.#rotating = true
    void shiftBackups(this.#options.path, this.#options.maxBackups)
      .then(
        // sonic-boom finishes a write in progress on the old file, then opens a new one at `path`.
        () => this.#output.reopen(),
        (err: unknown) => {
          this.#broken = true
          this.#options.onFailure(err as Error)
        }
      )
      .finally(() => (this.#rotating = false))
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

/** audit.log -> audit.log.1 -> ... -> audit.log.<maxBackups>, the oldest deleted. */
async function shiftBackups(path: string, maxBackups: number): Promise<void> {
  if (maxBackups === 0) return rm(path, { force: true })
  await rm(`${path}.${maxBackups}`, { force: true })
  for (let i = maxBackups - 1; i >= 1; i--) await renameIfExists(`${path}.${i}`, `${path}.${i + 1}`)
  await renameIfExists(path, `${path}.1`)
}

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await rename(from, to)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}
