// A streamed body that can skip the web stream: the pipeline reads origin bodies as web
// ReadableStreams (ports.ts), but when one goes to the client untouched its producer can write its
// Node source straight into the response instead. Each chunk through a web stream costs a reader
// promise and a controller enqueue, and each response a reader; on a 1 KiB miss that was a tenth
// of the proxy's CPU, and on a 10 MiB one the reads bounded the throughput. Building the web stream
// alone costs 4-10 us and ~1.5 KB of heap that lives as long as the request (measured on Node 24),
// so a body that is piped never builds it.
import type { ServerResponse } from 'node:http'

/**
 * Writes the body into `response` (whose head is written) at the client's pace, ending it at the
 * body's end and cutting it (destroy) when the body fails. Returns what stops it early (client
 * gone), or undefined, with nothing done, when the stream was already read or cancelled.
 */
export type DirectPipe = (response: ServerResponse) => (() => void) | undefined

/** A body that is either piped into the response or, when something reads it, a web stream. */
export interface PipeableBody {
  /** The bytes as a web stream, built when first asked for (then `pipe` declines). */
  readonly stream: ReadableStream<Uint8Array>
  pipe: DirectPipe
}
