// The header value a response-* override is sent as. A header carries Latin-1 at most, and Node
// writes Content-Disposition as UTF-8 when the length is known (a Latin-1 byte above 0x7f is not
// valid UTF-8 on its own), so:
//   control characters (CR/LF would split the headers)   -> refused
//   content-disposition beyond ASCII                      -> RFC 6266: the filename parameter as
//       an ASCII fallback plus filename*=UTF-8''<percent-encoded>; any other non-ASCII parameter
//       is refused
//   any other header beyond Latin-1                       -> its UTF-8 bytes, as S3 sends them

/** The value to send, or undefined when it cannot be sent (the request is refused). */
export function overrideValue(header: string, value: string): string | undefined {
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) return undefined
  if (header === 'content-disposition') return /[^\x00-\x7e]/.test(value) ? disposition(value) : value
  return /[^\u0000-\u00ff]/.test(value) ? Buffer.from(value, 'utf8').toString('latin1') : value
}

function disposition(value: string): string | undefined {
  const parts = value.split(';').map((p) => p.trim())
  const out: string[] = []
  for (const [i, part] of parts.entries()) {
    if (!/[^\x00-\x7e]/.test(part)) {
      out.push(part)
      continue
    }
    const match = i === 0 ? null : /^filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))$/i.exec(part)
    if (match === null || parts.some((p) => /^filename\*\s*=/i.test(p))) return undefined
    const name = (match[1] ?? match[2] ?? '').replace(/\\(.)/g, '$1')
    const fallback = name.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_')
    out.push(`filename="${fallback}"`, `filename*=UTF-8''${encodeRfc5987(name)}`)
  }
  return out.join('; ')
}

function encodeRfc5987(text: string): string {
  return encodeURIComponent(text).replace(/['()*]/g, (c) => `%${(c.charCodeAt(0) as number).toString(16).toUpperCase()}`)
}
