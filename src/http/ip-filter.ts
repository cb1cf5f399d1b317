// Allow/deny lists on client addresses. The blocklist always denies; a non-empty allowlist admits
// only its ranges. The global filter (`server.ip_filter`) is checked before routing, a bucket's own
// after: an address must pass both.
import type { IpFilterConfig } from '../config/schema.ts'
import type { IpFilter } from '../types.ts'
import { AddressRanges, parseAddress } from './ip-range.ts'

class Lists implements IpFilter {
  readonly #allow: AddressRanges
  readonly #block: AddressRanges

  constructor(config: IpFilterConfig) {
    this.#allow = new AddressRanges(config.allowlist)
    this.#block = new AddressRanges(config.blocklist)
  }

  admits(text: string): boolean {
    // An address that does not parse (a Unix socket peer, say) is denied: fail closed.
    const address = parseAddress(text)
    if (address === undefined || this.#block.contains(address)) return false
    return this.#allow.empty || this.#allow.contains(address)
  }
}

/** Null when no filter is configured (no work per request then). */
export function ipFilterOf(config: IpFilterConfig | null): IpFilter | null {
  return config === null ? null : new Lists(config)
}
