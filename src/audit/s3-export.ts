// Audit S3 output: records gathered in memory and written every `export_interval_seconds` as one
// JSON-lines object, `<path_prefix>YYYY/MM/DD/<time>-<host>-<pid>-<seq>.jsonl`, to a separate
// audit bucket: the only write the proxy ever makes. A failed upload keeps its batch for the next
// interval; past MAX_PENDING records the oldest are dropped (and counted).
import { hostname } from 'node:os'
import type { S3Client } from '@aws-sdk/client-s3'

const MAX_PENDING = 100_000
/** An upload that hangs must not hold the batches behind it, or shutdown, for longer. */
const UPLOAD_TIMEOUT_MS = 30_000
/** How long shutdown waits for the last upload. */
const CLOSE_TIMEOUT_MS = 10_000

export interface S3ExportOptions {
  bucket: string
  region: string
  endpoint: string | undefined
  accessKey: string | undefined
  secretKey: string | undefined
  pathPrefix: string
  intervalMs: number
  onFailure: (err: Error) => void
  onDrop: (count: number) => void
}

export class AuditS3Export {
  readonly #options: S3ExportOptions
  /** The SDK is loaded on the first upload: a proxy without audit uploads never loads it. */
  #client: S3Client | undefined
  readonly #timer: NodeJS.Timeout
  readonly #source = `${hostname() || 'host'}-${process.pid}`
  #pending: string[] = []
  #sequence = 0
  #uploading: Promise<void> | undefined

  constructor(options: S3ExportOptions) {
    this.#options = options
    this.#timer = setInterval(() => void this.flush(), options.intervalMs)
    this.#timer.unref()
  }

  write(line: string): void {
    this.#pending.push(line)
    if (this.#pending.length > MAX_PENDING) {
      const over = this.#pending.length - MAX_PENDING
      this.#pending.splice(0, over)
      this.#options.onDrop(over)
    }
  }

  /** Uploads what is gathered as one object (one upload at a time). */
  async flush(): Promise<void> {
    if (this.#uploading !== undefined) return this.#uploading
    if (this.#pending.length === 0) return
    const batch = this.#pending
    this.#pending = []
    const now = new Date()
    const day = now.toISOString().slice(0, 10).replaceAll('-', '/')
    const key = `${this.#options.pathPrefix}${day}/${now.toISOString().replace(/[:.]/g, '-')}-${this.#source}-${this.#sequence++}.jsonl`
    const put = { Bucket: this.#options.bucket, Key: key, Body: batch.join(''), ContentType: 'application/x-ndjson' }
    this.#uploading = this.#upload(put)
      .then(
        () => undefined,
        (err: Error) => {
          // Kept for the next interval, oldest first.
          this.#pending = batch.concat(this.#pending)
          this.#options.onFailure(err)
        }
      )
      .finally(() => {
        this.#uploading = undefined
      })
    return this.#uploading
  }

  async #upload(put: { Bucket: string; Key: string; Body: string; ContentType: string }): Promise<void> {
    const { PutObjectCommand, S3Client } = await import('@aws-sdk/client-s3')
    const { NodeHttpHandler } = await import('@smithy/node-http-handler')
    const options = this.#options
    // One upload at a time (flush), so the client is built once.
    this.#client ??= new S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.endpoint !== undefined,
      credentials:
        options.accessKey !== undefined && options.secretKey !== undefined
          ? { accessKeyId: options.accessKey, secretAccessKey: options.secretKey }
          : undefined,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({ connectionTimeout: 5000, requestTimeout: UPLOAD_TIMEOUT_MS }),
    })
    await this.#client.send(new PutObjectCommand(put), { abortSignal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS) })
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)))
    await Promise.race([(async () => {
      await this.#uploading
      await this.flush()
    })(), deadline])
    clearTimeout(timer)
    // What could not be uploaded by now is lost: say so in the metric.
    if (this.#pending.length > 0) this.#options.onDrop(this.#pending.length)
    this.#pending = []
    this.#client?.destroy()
  }
}
