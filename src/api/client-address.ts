import { BlockList, isIP } from 'node:net';

/** `::ffff:127.0.0.2` and `127.0.0.2` are one client. */
export const plainAddress = (address: string) =>
  address
    .trim()
    .replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '')
    .toLowerCase();

/**
 * One entry of MCPWORKS_TRUSTED_PROXIES: an IPv4 or IPv6 address in any written form, or a CIDR
 * range (`10.0.0.0/8`, `2001:db8::/32`). Undefined when it is neither.
 */
export function parseTrustedProxy(entry: string): { address: string; family: 'ipv4' | 'ipv6'; prefix?: number } | undefined {
  const [raw, bits, ...rest] = plainAddress(entry).split('/');
  const address = raw ?? '';
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return undefined;
  const family = version === 4 ? 'ipv4' : 'ipv6';
  if (bits === undefined) return { address, family };
  const prefix = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= (version === 4 ? 32 : 128))) return undefined;
  return { address, family, prefix };
}

/** The configured proxies as one matcher: any written form of an address, and ranges, match. */
export interface TrustedProxies {
  has(address: string | undefined): boolean;
}

const matchers = new WeakMap<readonly string[], TrustedProxies>();

export function trustedProxiesOf(entries: readonly string[]): TrustedProxies {
  const known = matchers.get(entries);
  if (known) return known;
  const list = new BlockList();
  for (const entry of entries) {
    const parsed = parseTrustedProxy(entry);
    // Config reading refuses bad entries at start; one reaching here is ignored, never trusted.
    if (!parsed) continue;
    if (parsed.prefix === undefined) list.addAddress(parsed.address, parsed.family);
    else list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  }
  // Asked for every connection and request: with no proxy configured (the default) there is
  // nothing to parse the address for.
  const none = entries.length === 0;
  const matcher: TrustedProxies = {
    has(address) {
      if (!address || none) return false;
      const plain = plainAddress(address);
      const version = isIP(plain);
      return version !== 0 && list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
    },
  };
  matchers.set(entries, matcher);
  return matcher;
}

/**
 * One X-Forwarded-For entry as a bare address: proxies may add the client's port
 * (`203.0.113.5:4711`, `[2001:db8::5]:4711`). Undefined when it is no IP address.
 */
export function forwardedAddress(entry: string): string | undefined {
  let hop = entry.trim();
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(hop);
  if (bracketed) hop = bracketed[1]!;
  else {
    const v4WithPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
    if (v4WithPort) hop = v4WithPort[1]!;
  }
  hop = plainAddress(hop);
  return isIP(hop) ? hop : undefined;
}

/** Why a trusted proxy's request names no client: its header is missing, or its entry is no address. */
export type ForwardedProblem = { kind: 'missing' } | { kind: 'unusable'; entry: string };

/**
 * The client a request is from, for per-client limits. Behind reverse proxies named in
 * MCPWORKS_TRUSTED_PROXIES, the right-most `X-Forwarded-For` entry that is not one of them (what
 * the nearest trusted proxy saw); from anyone else the header is ignored, so it cannot be spoofed.
 * A trusted proxy's request that names no usable client stays under the proxy's own address, and
 * `problem` says why (for the operator's log).
 */
export function forwardedClient(
  peer: string | undefined,
  forwardedFor: string | undefined,
  trustedProxies: readonly string[],
): { address: string | undefined; problem?: ForwardedProblem } {
  if (!peer || trustedProxies.length === 0) return { address: peer };
  const trusted = trustedProxiesOf(trustedProxies);
  if (!trusted.has(peer)) return { address: peer };
  if (!forwardedFor || !forwardedFor.trim()) return { address: peer, problem: { kind: 'missing' } };
  const hops = forwardedFor.split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const entry = hops[i]!.trim();
    const hop = forwardedAddress(entry);
    if (hop && trusted.has(hop)) continue;
    return hop ? { address: hop } : { address: peer, problem: { kind: 'unusable', entry: entry.slice(0, 64) } };
  }
  // Every entry is a trusted proxy: the left-most one is as far back as the header goes.
  return { address: peer };
}

export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | undefined,
  trustedProxies: readonly string[],
): string | undefined {
  return forwardedClient(peer, forwardedFor, trustedProxies).address;
}
