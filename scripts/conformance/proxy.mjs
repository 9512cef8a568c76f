#!/usr/bin/env node
// Loopback proxy for the MCP conformance suite.
//
// The conformance runner (`@modelcontextprotocol/conformance server --url …`) sends no
// Authorization header, while the create endpoint requires `Authorization: Bearer <key>`.
// This proxy listens on 127.0.0.1 only, adds the key, and forwards every request made to
// `/mcp` (any method: POST, GET for SSE streams, DELETE) to `/mcp/create/{namespace}` on the
// upstream server, streaming request and response bodies untouched (SSE included).
//
// Configuration comes from the environment only — the key must never appear in argv:
//   MCPWORKS_CONFORMANCE_KEY        API key to send (required)
//   MCPWORKS_CONFORMANCE_UPSTREAM   upstream base URL, loopback only (required), e.g. http://127.0.0.1:8787
//   MCPWORKS_CONFORMANCE_NAMESPACE  namespace in the create path (default: conformance)
//   MCPWORKS_CONFORMANCE_PORT       port to listen on (default: 0 = any free port)
//
// Once listening it prints one line to stdout: `proxy listening http://127.0.0.1:PORT/mcp`.
import http from 'node:http';

const key = process.env.MCPWORKS_CONFORMANCE_KEY;
const upstreamBase = process.env.MCPWORKS_CONFORMANCE_UPSTREAM;
const namespace = process.env.MCPWORKS_CONFORMANCE_NAMESPACE || 'conformance';
const port = Number(process.env.MCPWORKS_CONFORMANCE_PORT || 0);

function fail(message) {
  process.stderr.write(`conformance proxy: ${message}\n`);
  process.exit(2);
}

if (!key) fail('MCPWORKS_CONFORMANCE_KEY is not set');
if (!upstreamBase) fail('MCPWORKS_CONFORMANCE_UPSTREAM is not set');
const upstream = new URL(upstreamBase);
if (upstream.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(upstream.hostname)) {
  fail(`upstream must be plain http on loopback, got ${upstream.origin}`);
}
const targetPath = `/mcp/create/${encodeURIComponent(namespace)}`;

// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; Node sets its own framing.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function forwardable(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name.toLowerCase())) continue;
    out[name] = value;
  }
  return out;
}

const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://proxy.invalid');
  if (url.pathname !== '/mcp' && url.pathname !== '/mcp/') {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: `conformance proxy serves /mcp only, not ${url.pathname}` }));
    return;
  }

  // Host and Origin pass through unchanged, so the server's own DNS-rebinding checks are what is tested.
  const headers = forwardable(req.headers);
  delete headers.authorization;
  headers.authorization = `Bearer ${key}`;

  const upstreamReq = http.request(
    {
      protocol: upstream.protocol,
      hostname: upstream.hostname.replace(/^\[|\]$/g, ''),
      port: upstream.port || 80,
      method: req.method,
      path: targetPath + url.search,
      headers,
      agent,
    },
    (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, forwardable(upstreamRes.headers));
      res.flushHeaders();
      upstreamRes.on('data', (chunk) => {
        // Write each chunk as it arrives: SSE events must not wait for a buffer to fill.
        res.write(chunk);
      });
      upstreamRes.on('end', () => res.end());
      upstreamRes.on('error', () => res.destroy());
    },
  );
  upstreamReq.on('error', (error) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: `upstream unreachable: ${error.message}` }));
  });
  // The client going away (e.g. closing an SSE stream) closes the upstream request too.
  res.on('close', () => {
    if (!res.writableFinished) upstreamReq.destroy();
  });
  req.pipe(upstreamReq);
});

server.keepAliveTimeout = 5_000;
server.listen(port, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`proxy listening http://127.0.0.1:${address.port}/mcp\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  agent.destroy();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
