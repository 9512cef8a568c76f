import { isIP } from 'node:net';

/** `::ffff:127.0.0.2` and `127.0.0.2` are one client. */
export const plainAddress = (address: string) => address.trim().replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '').toLowerCase();

/**
 * The address a request comes from, for per-client limits. Behind reverse proxies named in
 * MCPWORKS_TRUSTED_PROXIES, the right-most `X-Forwarded-For` entry that is not one of them (what
 * the nearest trusted proxy saw); from anyone else the header is ignored, so it cannot be spoofed.
 */
export function clientAddress(peer: string | undefined, forwardedFor: string | undefined, trustedProxies: readonly string[]): string | undefined {
  if (!peer || trustedProxies.length === 0) return peer;
  const trusted = new Set(trustedProxies.map(plainAddress));
  if (!trusted.has(plainAddress(peer)) || !forwardedFor) return peer;
  const hops = forwardedFor.split(',').map(plainAddress);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!;
    if (trusted.has(hop)) continue;
    return isIP(hop) ? hop : peer;
  }
  return peer;
}
