// serve: the object, by RFC 9110 rules the proxy owns whatever the backend does:
// - HEAD asks the backend for metadata only (HeadObject) and answers with the headers a GET would;
// - GET sends a single Range on to the backend in the same request (no extra round trip), and
//   answers multi-range requests with the whole object;
// - preconditions (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) are evaluated
//   here against the object's validators; If-Range drops a Range whose validator no longer matches.
// A GET whose answer is 304/412 cancels the backend body it no longer needs.
import type { Handler } from 'hono'
import { ProxyError } from '../errors.ts'
import {
  evaluatePreconditions,
  ifRangeAllows,
  type ConditionalHeaders,
} from '../http/conditional.ts'
import { notModifiedHeaders, objectHeaders } from '../http/headers.ts'
import { contentRange, parseRange, resolveRange, unsatisfiedRange } from '../http/range.ts'
import type { ObjectBody, ReadOptions } from '../ports.ts'
import type { AppEnv, ObjectMeta } from '../types.ts'

export function serve(): Handler<AppEnv> {
  return async function serve(c) {
    const { bucket, key } = c.var.route
    const conditions: ConditionalHeaders = {
      ifMatch: c.req.header('if-match'),
      ifNoneMatch: c.req.header('if-none-match'),
      ifModifiedSince: c.req.header('if-modified-since'),
      ifUnmodifiedSince: c.req.header('if-unmodified-since'),
    }
    const parsed = parseRange(c.req.header('range'))
    const range = parsed === 'multiple' ? undefined : parsed
    const ifRange = c.req.header('if-range')
    const outgoing = c.env?.outgoing
    const options: ReadOptions = {
      signal: c.req.raw.signal,
      abortResponse:
        outgoing === undefined
          ? undefined
          : (error) => {
              c.error = error
              outgoing.destroy()
            },
    }

    if (c.req.method === 'HEAD') {
      const meta = await bucket.source.head(key, options)
      const outcome = evaluatePreconditions(conditions, meta)
      if (outcome !== 'proceed') return preconditionAnswer(outcome, meta)
      if (range === undefined || !ifRangeAllows(ifRange, meta)) {
        return new Response(null, { status: 200, headers: objectHeaders(meta, meta.size) })
      }
      const selected = resolveRange(range, meta.size)
      if (selected === undefined) {
        throw new ProxyError('RANGE_NOT_SATISFIABLE', {
          headers: { 'content-range': unsatisfiedRange(meta.size) },
        })
      }
      const headers = objectHeaders(meta, selected.end - selected.start + 1)
      headers['content-range'] = contentRange(selected, meta.size)
      return new Response(null, { status: 206, headers })
    }

    let body: ObjectBody = await bucket.source.get(key, range, options)
    const outcome = evaluatePreconditions(conditions, body.meta)
    if (outcome !== 'proceed') {
      await body.stream.cancel()
      return preconditionAnswer(outcome, body.meta)
    }
    if (body.range !== undefined && !ifRangeAllows(ifRange, body.meta)) {
      await body.stream.cancel()
      body = await bucket.source.get(key, undefined, options)
    }
    c.set('transfer', body)
    const { meta } = body
    if (body.range === undefined) {
      return new Response(body.stream, { status: 200, headers: objectHeaders(meta, meta.size) })
    }
    const headers = objectHeaders(meta, body.range.end - body.range.start + 1)
    headers['content-range'] = contentRange(body.range, meta.size)
    return new Response(body.stream, { status: 206, headers })
  }
}

function preconditionAnswer(outcome: 'not-modified' | 'failed', meta: ObjectMeta): Response {
  if (outcome === 'failed') throw new ProxyError('HTTP_PRECONDITION_FAILED')
  return new Response(null, { status: 304, headers: notModifiedHeaders(meta) })
}
