import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpLimits } from './http-limits.js';
import type { Logger } from '../core/logger.js';
import { forwardedClient, plainAddress, trustedProxiesOf, type ForwardedProblem } from './client-address.js';
import { clientKeyOf } from '../core/accounts.js';
import { refusalFor, routeAgnosticRefusal } from './mcp-refusals.js';
import { ClientPacer } from './client-pacing.js';

/**
 * The HTTP server's limit on a request's headers (Node's maxHeaderSize; its default is 16 KB): room
 * for the largest X-MCPWorks-Env the header's rules allow (32 KB decoded, 43,692 bytes in base64)
 * beside the other headers.
 */
export const MAX_HEADER_BYTES = 48 * 1024;

const normalizeAddress = (address: string | undefined) => plainAddress(address ?? '');
/** One client per IPv4 address or IPv6 /64 (a host is handed a whole /64), as sign-in limits count. */
const clientOf = (address: string | undefined) => clientKeyOf(normalizeAddress(address));

/** Written before the route is known: a JSON-RPC error that also carries error_type at the top. */
function refusalBody(message: string): string {
  return routeAgnosticRefusal('rate_limited', message);
}

function refusalResponse(message: string): Buffer {
  const body = refusalBody(message);
  return Buffer.from(
    `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`,
    'latin1',
  );
}

type Reason = 'total' | 'address';
const REFUSALS: Record<Reason, Buffer> = {
  total: refusalResponse('the server has too many open connections; retry shortly'),
  address: refusalResponse('too many open connections from your address; close some and retry'),
};

/**
 * Refused connections that still get a written 503 (a client behind a busy NAT learns why): a
 * bucket of this many, refilled at this rate per second. Past it a refused connection is closed
 * at accept, before a socket object exists: a flood costs an accept, a getpeername and a close.
 */
const POLITE_REFUSALS = 16;
/** How long a politely refused socket may wait for its peer to take the 503 before it is destroyed. */
const POLITE_LINGER_MS = 1000;
/** Refusals are counted and logged as one summary line per this interval, never a line each. */
const SUMMARY_INTERVAL_MS = 10_000;
/** A trusted proxy that names no usable client: one warning per kind of problem per this interval. */
const PROXY_WARNING_INTERVAL_MS = 60_000;

/** What the guard has seen, for operators' logs and for tests. */
export interface ConnectionStats {
  /** Connections admitted and still open (the ones the caps count). */
  open: number;
  /** Sockets the server holds: the admitted ones and politely refused ones not yet gone. */
  sockets: number;
  /** Refused: over the total cap, over the per-address cap. */
  refusedTotal: number;
  refusedAddress: number;
  /** Of the refused, how many were written a 503 (the rest were closed at accept). */
  refusedPolitely: number;
  /** Connections and requests that waited for their client's share of the request rate, and those waiting now. */
  deferred: number;
  waiting: number;
}

export interface GuardedListener {
  listener: RequestListener;
  stats(): ConnectionStats;
  /** Closes what waits for its share (the server is stopping). */
  stop(): void;
  /** Takes `requests` more from the share of the client that sent `req` (one the listener has started). */
  charge(req: IncomingMessage, requests: number): void;
}

/** Node's accept callback on a listening TCP handle (net.Server sets it at listen). */
type AcceptHandle = { onconnection?: (err: number, client: ClientHandle | undefined) => void; [HOOKED]?: true };
type ClientHandle = { getpeername?: (out: { address?: string }) => number; close(): void; [VERDICT]?: Verdict };
type Verdict = { client: string; paid?: true } | { refused: Reason };
const HOOKED = Symbol('mcpworks.acceptHooked');
const VERDICT = Symbol('mcpworks.verdict');
/** On a socket whose accept already took its client's token: its first request goes without another. */
const PAID = Symbol('mcpworks.firstRequestPaid');
/** On a request: the client whose share it was started in. */
const CLIENT = Symbol('mcpworks.client');

/**
 * Caps what clients can hold of the listener, so idle or half-sent connections cannot use up the
 * server's file descriptors: a total cap, and a per-address cap (a trusted reverse proxy is exempt
 * from the latter; its clients are capped by in-flight requests under their forwarded address).
 *
 * The check runs in the listening handle's accept callback, before Node makes a socket, an HTTP
 * parser or anything per connection, and a refused connection never counts against the caps; a
 * flood of thousands of connections then costs the event loop microseconds each. Returns the
 * request listener to serve through (it applies the forwarded-client cap).
 */
export function guardConnections(
  server: Server,
  limits: HttpLimits,
  logger: Logger,
  listener: RequestListener,
  options: { baseHost?: string | undefined } = {},
): GuardedListener {
  const trusted = trustedProxiesOf(limits.trustedProxies);
  const proxyWarnedAt = new Map<ForwardedProblem['kind'], number>();
  // Every user behind a proxy whose header names nobody shares the proxy's share: the operator must hear of it.
  const warnProxy = (proxy: string, problem: ForwardedProblem) => {
    const now = Date.now();
    const last = proxyWarnedAt.get(problem.kind);
    if (last !== undefined && now - last < PROXY_WARNING_INTERVAL_MS) return;
    proxyWarnedAt.set(problem.kind, now);
    const why =
      problem.kind === 'missing'
        ? 'sent no X-Forwarded-For header'
        : `sent a right-most X-Forwarded-For entry that is not an IP address (${JSON.stringify(problem.entry)})`;
    logger.warn(
      { proxy, problem: problem.kind, setting: 'MCPWORKS_TRUSTED_PROXIES', window_s: PROXY_WARNING_INTERVAL_MS / 1000 },
      `a trusted proxy (MCPWORKS_TRUSTED_PROXIES) ${why}: its requests are limited as one client, under the proxy's address; have the proxy set X-Forwarded-For to the client's address`,
    );
  };
  const perPeer = new Map<string, number>();
  const perForwarded = new Map<string, number>();
  const stats: ConnectionStats = { open: 0, sockets: 0, refusedTotal: 0, refusedAddress: 0, refusedPolitely: 0, deferred: 0, waiting: 0 };
  // Each client's share of new requests: a connection is paced at accept (it waits unread, as a
  // handle, until its turn), a further request on a kept-alive connection when it arrives.
  // At most two seconds' worth of a client's share waits (and never more than its connection cap).
  const pacer = new ClientPacer(limits.requestsPerSecondPerIp, Math.min(limits.maxConnectionsPerIp, 2 * limits.requestsPerSecondPerIp));
  let polite = POLITE_REFUSALS;
  let politeRefilledAt = Date.now();
  let summary: { timer: NodeJS.Timeout; total: number; address: number; peers: Map<string, number> } | undefined;

  const release = (map: Map<string, number>, key: string) => {
    const n = (map.get(key) ?? 1) - 1;
    if (n <= 0) map.delete(key);
    else map.set(key, n);
  };

  /** Counts the connection in if it fits both caps. */
  const admit = (address: string): Verdict => {
    const peer = normalizeAddress(address);
    const client = clientOf(peer);
    if (stats.open >= limits.maxConnections) return { refused: 'total' };
    const held = perPeer.get(client) ?? 0;
    if (held >= limits.maxConnectionsPerIp && !trusted.has(peer)) return { refused: 'address' };
    stats.open += 1;
    perPeer.set(client, held + 1);
    return { client };
  };

  const takePolite = (): boolean => {
    const now = Date.now();
    polite = Math.min(POLITE_REFUSALS, polite + ((now - politeRefilledAt) * POLITE_REFUSALS) / 1000);
    politeRefilledAt = now;
    if (polite < 1) return false;
    polite -= 1;
    return true;
  };

  const noteRefusal = (reason: Reason, address: string) => {
    if (reason === 'total') stats.refusedTotal++;
    else stats.refusedAddress++;
    if (!summary) {
      const window = { total: 0, address: 0, peers: new Map<string, number>(), timer: undefined as unknown as NodeJS.Timeout };
      window.timer = setTimeout(() => {
        summary = undefined;
        const top = [...window.peers.entries()]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 3)
          .map(([client, count]) => ({ client, count }));
        logger.warn(
          {
            refused_total_cap: window.total,
            refused_address_cap: window.address,
            top,
            limits: { total: limits.maxConnections, per_address: limits.maxConnectionsPerIp },
            window_s: SUMMARY_INTERVAL_MS / 1000,
          },
          'connections refused',
        );
      }, SUMMARY_INTERVAL_MS);
      window.timer.unref();
      summary = window;
    }
    summary[reason]++;
    // Bounded: a flood from many addresses keeps at most this many keys for the summary.
    const client = clientOf(address);
    if (summary.peers.has(client) || summary.peers.size < 1000) summary.peers.set(client, (summary.peers.get(client) ?? 0) + 1);
  };

  /** The accept-time check: a refused connection past the polite budget is closed here, with no socket made. */
  const hookAccept = () => {
    const handle = (server as unknown as { _handle?: AcceptHandle })._handle;
    const accept = handle?.onconnection;
    if (!handle || typeof accept !== 'function' || handle[HOOKED]) return;
    handle[HOOKED] = true;
    handle.onconnection = function (this: unknown, err: number, client: ClientHandle | undefined) {
      if (err || !client || typeof client.getpeername !== 'function') return accept.call(this, err, client);
      const info: { address?: string } = {};
      if (client.getpeername(info) !== 0 || !info.address) {
        // Gone already (reset before we got to it): nothing to serve.
        client.close();
        return;
      }
      const verdict = admit(info.address);
      if ('refused' in verdict) {
        noteRefusal(verdict.refused, info.address);
        if (!takePolite()) {
          client.close();
          return;
        }
      }
      if ('refused' in verdict || trusted.has(normalizeAddress(info.address))) {
        client[VERDICT] = verdict;
        return accept.call(this, err, client);
      }
      // Admitted (it counts against the caps while it waits): made a socket when its client's turn comes.
      const paid: Verdict = { client: verdict.client, paid: true };
      const go = () => {
        client[VERDICT] = paid;
        accept.call(this, 0, client);
      };
      const drop = () => {
        stats.open -= 1;
        release(perPeer, verdict.client);
        client.close();
      };
      // Its client has as much waiting as may wait: refused, as over its cap.
      if (pacer.enter(verdict.client, go, drop) === 'full') {
        noteRefusal('address', info.address);
        drop();
      }
    };
  };
  server.on('listening', hookAccept);

  // Requests Node's parser refuses before any route sees them (headers over 48 KB, a timeout, bad
  // HTTP) get the same JSON-RPC shaped body as the other refusals written before the route is known.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const message = (socket as unknown as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (error.code === 'ECONNRESET' || !socket.writable || message?.headersSent) return void socket.destroy();
    const [status, reason, text] =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? [
            431,
            'Request Header Fields Too Large',
            `request headers too large (${MAX_HEADER_BYTES / 1024} KB at most in all, X-MCPWorks-Env included: its 32 KB of JSON are about 43 KB in base64)`,
          ]
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', 'the request was not received in time']
          : [400, 'Bad Request', 'malformed HTTP request'];
    const body = routeAgnosticRefusal('validation_error', text);
    // As Node's own handler: written, then the socket is gone (a peer that never reads cannot hold it).
    socket.on('error', () => undefined);
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    socket.destroy();
  });

  // The HTTP server's own connection handling (its parser, its timeouts) runs only for admitted sockets.
  const httpListeners = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    stats.sockets++;
    socket.once('close', () => stats.sockets--);
    const handle = (socket as unknown as { _handle?: ClientHandle })._handle;
    let verdict = handle?.[VERDICT];
    if (handle) delete handle[VERDICT];
    if (!verdict) {
      // Accepted without the hook (it is Node-internal; should it ever be missing): the same check here.
      const address = socket.remoteAddress;
      if (!address) return void socket.destroy();
      verdict = admit(address);
      if ('refused' in verdict) {
        noteRefusal(verdict.refused, address);
        if (!takePolite()) return void socket.destroy();
      }
    }
    if ('refused' in verdict) {
      // Refused before any request is parsed: a short 503, then the socket is gone (at the latest
      // after POLITE_LINGER_MS, should the peer never read it). It never counted against the caps.
      stats.refusedPolitely++;
      socket.on('error', () => undefined);
      socket.end(REFUSALS[verdict.refused]);
      setTimeout(() => socket.destroy(), POLITE_LINGER_MS).unref();
      return;
    }
    const client = verdict.client;
    if (verdict.paid) (socket as Socket & { [PAID]?: boolean })[PAID] = true;
    socket.once('close', () => {
      stats.open -= 1;
      release(perPeer, client);
    });
    for (const httpListener of httpListeners) httpListener.call(server, socket);
  });

  /** Starts `start` within `client`'s share of new requests (now, or when its turn comes). */
  const paced = (client: string, req: IncomingMessage, res: ServerResponse, start: () => void) => {
    (req as IncomingMessage & { [CLIENT]?: string })[CLIENT] = client;
    const socket = req.socket as Socket & { [PAID]?: boolean };
    if (socket[PAID]) {
      socket[PAID] = false;
      return start();
    }
    const refuse = (type: 'rate_limited' | 'unavailable', message: string) => {
      if (res.headersSent || res.writableEnded) return;
      const body = refusalFor(req, options.baseHost, type, message, { retry_after: 1 });
      res
        .writeHead(503, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'retry-after': '1',
          connection: 'close',
        })
        .end(body);
    };
    // A request whose client went away while it waited is not started.
    const go = () => (res.destroyed || req.destroyed ? undefined : start());
    if (pacer.enter(client, go, () => refuse('unavailable', 'the server is shutting down')) === 'full')
      refuse('rate_limited', 'too many requests waiting from your address; retry shortly');
  };

  const guarded = (req: IncomingMessage, res: ServerResponse) => {
    const peer = normalizeAddress(req.socket.remoteAddress);
    if (!trusted.has(peer)) return paced(clientOf(peer), req, res, () => listener(req, res));
    // Only a configured proxy's X-Forwarded-For is believed (the same reading as sign-in throttling).
    const forwarded = req.headers['x-forwarded-for'];
    const { address: client, problem } = forwardedClient(
      peer,
      Array.isArray(forwarded) ? forwarded.join(',') : forwarded,
      limits.trustedProxies,
    );
    if (problem) warnProxy(peer, problem);
    if (!client || client === peer) return paced(clientOf(peer), req, res, () => listener(req, res));
    const forwardedKey = clientOf(client);
    return paced(forwardedKey, req, res, () => {
      const inFlight = (perForwarded.get(forwardedKey) ?? 0) + 1;
      if (inFlight > limits.maxConnectionsPerIp) {
        const body = refusalFor(req, options.baseHost, 'rate_limited', 'too many requests in flight from your address; retry shortly', {
          retry_after: 1,
        });
        res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'retry-after': '1' }).end(body);
        return;
      }
      perForwarded.set(forwardedKey, inFlight);
      res.once('close', () => release(perForwarded, forwardedKey));
      listener(req, res);
    });
  };
  return {
    listener: guarded,
    stats: () => {
      const pacing = pacer.stats();
      return { ...stats, deferred: pacing.deferred, waiting: pacing.waiting };
    },
    stop: () => pacer.close(),
    charge: (req, requests) => {
      const client = (req as IncomingMessage & { [CLIENT]?: string })[CLIENT];
      if (client !== undefined) pacer.charge(client, requests);
    },
  };
}
