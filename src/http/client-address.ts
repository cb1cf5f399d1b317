// The client's address. With no trusted proxies it is the socket peer. When the peer is a trusted
// proxy, X-Forwarded-For is read from the right (each proxy appends the address it saw): the first
// hop that is not itself a trusted proxy is the client. A client can write anything at the left of
// the header, so nothing left of the first untrusted hop is believed.
import type { IncomingHttpHeaders } from 'node:http'
import { AddressRanges, parseAddress } from './ip-range.ts'

export type ClientAddressOf = (peer: string | undefined, headers: IncomingHttpHeaders | undefined) => string

export function clientAddressResolver(trustedProxies: readonly string[]): ClientAddressOf {
  if (trustedProxies.length === 0) return (peer) => unmapped(peer ?? '')
  const trusted = new AddressRanges(trustedProxies)
  return (peer, headers) => {
    const peerAddress = peer === undefined ? undefined : parseAddress(peer)
    if (peerAddress === undefined || !trusted.contains(peerAddress)) return unmapped(peer ?? '')
    let client = peerAddress.toString()
    const header = headers?.['x-forwarded-for'] ?? ''
    const hops = (Array.isArray(header) ? header.join(',') : header).split(',')
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseAddress((hops[i] as string).trim())
      // A malformed hop ends the walk: the last good address is the best we know.
      if (hop === undefined) break
      client = hop.toString()
      if (!trusted.contains(hop)) break
    }
    return client
  }
}

/** `::ffff:10.0.0.1` (a dual-stack socket's view of an IPv4 peer) as `10.0.0.1`. */
function unmapped(peer: string): string {
  return peer.startsWith('::ffff:') && peer.includes('.') ? peer.slice(7) : peer
}
