/**
 * The round-robin HTTP proxy of `mcpworks cluster`: what a load balancer in front of several `serve`
 * nodes does, small enough to read. Each request goes to the next node in turn; bodies stream both
 * ways unbuffered (MCP answers are often SSE streams that stay open), headers pass through, and a
 * client that goes away closes the node's request too (the 2026 era cancels a call that way).
 *
 * A node that refuses the connection is skipped, and the request goes to the next one: nothing of
 * its body has been read then, so nothing is sent twice. A node that fails after the request went
 * out is not retried (it may have acted on it): the client gets a 502, or a cut stream.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ProxyOptions {
  /** The nodes' base URLs (http://host:port). */
  targets: readonly string[];
  host?: string;
  /** 0: any free port. */
  port?: number;
  /** How long a node that refused a connection is passed over before it is tried again. */
  downForMs?: number;
  /** One line per event worth an operator's eye (a node skipped, a node back). */
  log?: (line: string) => void;
}

export interface RunningProxy {
  url: string;
  /** Requests sent to each node so far (index as in targets). */
  forwarded(): number[];
  close(): Promise<void>;
}

/** RFC 9110 7.6.1: these describe one connection, not the message; never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The answer's header naming the node that answered it. */
export const NODE_HEADER = 'x-cluster-node';

/** Failures that mean the node never took the connection: safe to try the next node. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

interface Target {
  index: number;
  host: string;
  port: number;
  downUntil: number;
  forwarded: number;
}

function endToEnd(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  // A header named in Connection is hop-by-hop as well.
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  const kept: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name) && !named.has(name)) kept[name] = value;
  }
  return kept;
}

function badGateway(res: http.ServerResponse, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: message, error_type: 'unavailable' });
  res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'retry-after': '1' });
  res.end(body);
}

export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const downForMs = options.downForMs ?? 2000;
  const log = options.log ?? (() => undefined);
  const targets: Target[] = options.targets.map((t, index) => {
    const url = new URL(t);
    return { index, host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80), downUntil: 0, forwarded: 0 };
  });
  if (targets.length === 0) throw new Error('the proxy needs at least one node');
  // Kept-alive connections to the nodes; an idle one is closed after 30 s, before a node (65 s)
  // closes it under a request just sent.
  const agent = new http.Agent({ keepAlive: true, timeout: 30_000 });
  let next = 0;

  /** The next node in turn that is not passed over and not tried yet for this request. */
  const pick = (tried: Set<Target>): Target | undefined => {
    const now = Date.now();
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(next + i) % targets.length]!;
      if (!tried.has(t) && t.downUntil <= now) {
        next = (t.index + 1) % targets.length;
        return t;
      }
    }
    // Every node is passed over: try the ones not tried yet anyway rather than refuse outright.
    return targets.find((t) => !tried.has(t));
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, tried: Set<Target>): void => {
    const target = pick(tried);
    if (!target) {
      badGateway(res, `no node of the cluster took the request (${targets.length} tried)`);
      return;
    }
    tried.add(target);
    const headers = endToEnd(req.headers);
    const client = req.socket.remoteAddress ?? '';
    const earlier = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = earlier ? `${String(earlier)}, ${client}` : client;
    let connected = false;
    const upstream = http.request(
      { agent, host: target.host, port: target.port, method: req.method, path: req.url, headers, setHost: false },
      (answer) => {
        if (target.downUntil > 0) log(`node ${target.index + 1} (${target.host}:${target.port}) answers again`);
        target.downUntil = 0;
        // Which node answered (1-based, as `mcpworks cluster` numbers them): for an operator's curl -i and the tests.
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, {
          ...endToEnd(answer.headers),
          [NODE_HEADER]: String(target.index + 1),
        });
        // The status and headers at once: an SSE stream's client is waiting for them.
        res.flushHeaders();
        answer.pipe(res);
        // A node that dies mid-answer: the client sees a cut stream, not a complete answer.
        answer.once('aborted', () => res.destroy());
        answer.once('error', () => res.destroy());
      },
    );
    upstream.once('socket', (socket: Socket) => {
      socket.setNoDelay(true);
      const send = () => {
        connected = true;
        target.forwarded++;
        req.pipe(upstream);
      };
      // The body is read only once the node has the connection, so a refused one can go elsewhere.
      if (socket.connecting) socket.once('connect', send);
      else send();
    });
    upstream.once('error', (error: NodeJS.ErrnoException) => {
      if (!connected && NOT_CONNECTED.has(error.code ?? '') && !res.headersSent) {
        if (target.downUntil <= Date.now())
          log(
            `node ${target.index + 1} (${target.host}:${target.port}) refused a connection (${error.code}); passed over for ${downForMs} ms`,
          );
        target.downUntil = Date.now() + downForMs;
        forward(req, res, tried);
        return;
      }
      badGateway(res, `node ${target.index + 1} failed during the request (${error.code ?? error.message})`);
    });
    // The client went away before the answer ended: the node's request ends too.
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  };

  const server = http.createServer((req, res) => forward(req, res, new Set()));
  // Long runs and SSE streams: no time limit on a request here; the nodes keep their own.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    forwarded: () => targets.map((t) => t.forwarded),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
