import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpLimits } from './config.js';
import type { Logger } from './logger.js';

const REFUSED = Symbol('mcpworks.refused');

/** `::ffff:127.0.0.2` and `127.0.0.2` are one client. */
function normalizeAddress(address: string | undefined): string {
  const value = (address ?? '').toLowerCase();
  return value.startsWith('::ffff:') && value.includes('.') ? value.slice(7) : value;
}

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
    open += 1;
    perPeer.set(peer, (perPeer.get(peer) ?? 0) + 1);
    socket.once('close', () => {
      open -= 1;
      release(perPeer, peer);
    });
    const overTotal = open > limits.maxConnections;
    const overPeer = !trusted.has(peer) && perPeer.get(peer)! > limits.maxConnectionsPerIp;
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
    // Only a configured proxy's X-Forwarded-For is believed, and only its last hop (the address the
    // proxy itself saw); earlier entries are whatever the client wrote.
    const forwarded = req.headers['x-forwarded-for'];
    const client = normalizeAddress((Array.isArray(forwarded) ? forwarded.join(',') : forwarded ?? '').split(',').pop()?.trim());
    if (!client) return listener(req, res);
    const inFlight = (perForwarded.get(client) ?? 0) + 1;
    if (inFlight > limits.maxConnectionsPerIp) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(refusalBody('too many requests in flight from your address; retry shortly'));
      return;
    }
    perForwarded.set(client, inFlight);
    res.once('close', () => release(perForwarded, client));
    return listener(req, res);
  };
}
