// IPv4/IPv6 addresses and CIDR ranges (ipaddr.js). An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`,
// what a dual-stack socket reports) is treated as the IPv4 address it carries, so one IPv4 rule
// covers both forms. IPv4 must be four decimal parts: ipaddr.js also reads `10/8` (0.0.0.0/8),
// `192.168.1/24` and octal `010.0.0.1`, which would silently mean other ranges than intended.
import ipaddr from 'ipaddr.js'

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6
type Range = [IpAddress, number]

export function parseAddress(text: string): IpAddress | undefined {
  if (!text.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined
  try {
    return ipaddr.process(text)
  } catch {
    return undefined
  }
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128). Undefined when malformed. */
export function parseRange(text: string): Range | undefined {
  const slash = text.indexOf('/')
  if (slash === -1) {
    const address = parseAddress(text)
    return address === undefined ? undefined : [address, address.kind() === 'ipv4' ? 32 : 128]
  }
  if (parseAddress(text.slice(0, slash)) === undefined || !/^\d{1,3}$/.test(text.slice(slash + 1))) return undefined
  try {
    const [address, bits] = ipaddr.parseCIDR(text)
    if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96]
    }
    return [address, bits]
  } catch {
    return undefined
  }
}

/** A set of ranges; malformed entries are refused by config validation before this is built. */
export class AddressRanges {
  readonly #ranges: Range[]

  constructor(ranges: readonly string[]) {
    this.#ranges = ranges.flatMap((text) => {
      const range = parseRange(text)
      return range === undefined ? [] : [range]
    })
  }

  get empty(): boolean {
    return this.#ranges.length === 0
  }

  contains(address: IpAddress): boolean {
    const kind = address.kind()
    for (const range of this.#ranges) {
      if (range[0].kind() === kind && address.match(range)) return true
    }
    return false
  }
}
