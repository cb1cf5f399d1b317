// A streamed body that can skip the web stream: the origin hands the pipeline a web
// ReadableStream (ports.ts), but when that stream goes to the client untouched, its producer can
// write its Node source straight into the response instead. Each chunk through a web stream costs
// a reader promise and a controller enqueue, and each response a reader; on a 1 KiB miss that was
// a tenth of the proxy's CPU, and on a 10 MiB one the reads bounded the throughput.
import type { ServerResponse } from 'node:http'

/**
 * Writes the body into `response` (whose head is written) at the client's pace, ending it at the
 * body's end and cutting it (destroy) when the body fails. Returns what stops it early (client
 * gone), or undefined, with nothing done, when the stream was already read or cancelled.
 */
export type DirectPipe = (response: ServerResponse) => (() => void) | undefined

const pipes = new WeakMap<ReadableStream<Uint8Array>, DirectPipe>()

/** Producer side: `stream` may be sent with `pipe` instead of being read. */
export function offerDirectPipe(stream: ReadableStream<Uint8Array>, pipe: DirectPipe): void {
  pipes.set(stream, pipe)
}

/** Consumer side: the direct way to send `stream`, if its producer offered one. */
export function directPipeOf(stream: ReadableStream<Uint8Array>): DirectPipe | undefined {
  return pipes.get(stream)
}
