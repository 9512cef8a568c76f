import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpLimits } from './config.js';
import type { Logger } from './logger.js';
import { clientAddress, plainAddress } from './client-address.js';
import { clientKeyOf } from '../core/accounts.js';

const REFUSED = Symbol('mcpworks.refused');

const normalizeAddress = (address: string | undefined) => plainAddress(address ?? '');
/** One client per IPv4 address or IPv6 /64 (a host is handed a whole /64), as sign-in limits count. */
const clientOf = (address: string | undefined) => clientKeyOf(normalizeAddress(address));

function refusalBody(message: string): string {
  return JSON.stringify({ error: { type: 'rate_limited', message } });
}

/**
 * Caps what clients can hold of the listener, so idle or half-sent connections cannot use up the
 * server's file descriptors: a total cap, and a per-address cap (a trusted reverse proxy is exempt
 * from the latter; its clients are capped by in-flight requests under their forwarded address).
 * Returns the request listener to serve through (it applies the forwarded-client cap).
 */
export function guardConnections(server: Server, limits: HttpLimits, logger: Logger, listener: RequestListener): RequestListener {
  const trusted = new Set(limits.trustedProxies.map(normalizeAddress));
  const perPeer = new Map<string, number>();
  const perForwarded = new Map<string, number>();
  let open = 0;

  const release = (map: Map<string, number>, key: string) => {
    const n = (map.get(key) ?? 1) - 1;
    if (n <= 0) map.delete(key);
    else map.set(key, n);
  };

  // Runs after the HTTP server's own connection listener (registered when it was created).
  server.on('connection', (socket: Socket) => {
    const peer = normalizeAddress(socket.remoteAddress);
    const client = clientOf(peer);
    open += 1;
    perPeer.set(client, (perPeer.get(client) ?? 0) + 1);
    socket.once('close', () => {
      open -= 1;
      release(perPeer, client);
    });
    const overTotal = open > limits.maxConnections;
    const overPeer = !trusted.has(peer) && perPeer.get(client)! > limits.maxConnectionsPerIp;
    if (!overTotal && !overPeer) return;
    // Refused before any request is parsed: a short 503, then the socket is gone.
    (socket as Socket & { [REFUSED]?: boolean })[REFUSED] = true;
    const message = overTotal ? 'the server has too many open connections; retry shortly' : 'too many open connections from your address; close some and retry';
    logger.warn({ peer, open, limit: overTotal ? limits.maxConnections : limits.maxConnectionsPerIp }, overTotal ? 'connection refused: total cap' : 'connection refused: per-address cap');
    const body = refusalBody(message);
    socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`);
    setTimeout(() => socket.destroy(), 1000).unref();
  });

  return (req: IncomingMessage, res: ServerResponse) => {
    if ((req.socket as Socket & { [REFUSED]?: boolean })[REFUSED]) return;
    const peer = normalizeAddress(req.socket.remoteAddress);
    if (!trusted.has(peer)) return listener(req, res);
    // Only a configured proxy's X-Forwarded-For is believed (the same reading as sign-in throttling).
    const forwarded = req.headers['x-forwarded-for'];
    const client = clientAddress(peer, Array.isArray(forwarded) ? forwarded.join(',') : forwarded, limits.trustedProxies);
    if (!client || client === peer) return listener(req, res);
    const forwardedClient = clientOf(client);
    const inFlight = (perForwarded.get(forwardedClient) ?? 0) + 1;
    if (inFlight > limits.maxConnectionsPerIp) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(refusalBody('too many requests in flight from your address; retry shortly'));
      return;
    }
    perForwarded.set(forwardedClient, inFlight);
    res.once('close', () => release(perForwarded, forwardedClient));
    return listener(req, res);
  };
}
