/** The listener's limits: a setting of the HTTP layer, filled in by the composition root (src/app/config.ts). */
import { MB } from '../core/units.js';

/** What one client, or all of them, may hold of the listener. */
export interface HttpLimits {
  /** Open connections in all (beyond it, new ones get 503 and are closed). */
  maxConnections: number;
  /** Open connections from one peer address; for a trusted proxy, in-flight requests per forwarded client. */
  maxConnectionsPerIp: number;
  /**
   * New requests one client (address, IPv6 /64, or forwarded client) may start a second, after a
   * burst of as many; more wait their turn (a new connection unread, before Node parses it).
   */
  requestsPerSecondPerIp: number;
  /** Request-body bytes read a second for one client (burst: as many); beyond it, reading its body waits. */
  bodyBytesPerSecondPerIp: number;
  /** Time to receive a request's headers, from the connection's (or the previous request's) start. */
  headersTimeoutMs: number;
  /** Time to receive a whole request, headers and body; the response (a long run, an SSE stream) is not bounded by it. */
  requestTimeoutMs: number;
  /**
   * How long an idle kept-alive connection is held for its next request. Responses advertise
   * KEEP_ALIVE_HINT_MARGIN_MS less (`Keep-Alive: timeout=N`): a client that honours it lets go
   * first, instead of writing a request on a connection the server is closing (a reset).
   */
  keepAliveTimeoutMs: number;
  /** Peer addresses of reverse proxies whose X-Forwarded-For names the client (empty: the header is never read). */
  trustedProxies: string[];
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxConnections: 4096,
  maxConnectionsPerIp: 128,
  requestsPerSecondPerIp: 100,
  bodyBytesPerSecondPerIp: 8 * MB,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  // Longer than the idle timeouts of common clients and proxies in front (undici, httpx, Java's, a load balancer's 60 s).
  keepAliveTimeoutMs: 65_000,
  trustedProxies: [],
};

/** How much shorter the advertised keep-alive is than the time the server really holds an idle connection. */
export const KEEP_ALIVE_HINT_MARGIN_MS = 5000;

/** The `Keep-Alive` response header: the idle time a client may count on, whole seconds, below the server's own. */
export function keepAliveHint(limits: Pick<HttpLimits, 'keepAliveTimeoutMs'>): string {
  return `timeout=${Math.max(1, Math.floor((limits.keepAliveTimeoutMs - KEEP_ALIVE_HINT_MARGIN_MS) / 1000))}`;
}
