// test-database: embedded, connection caps and timeouts live in the HTTP layer
/**
 * Connection exhaustion (issue 10, item 5): idle and half-sent requests from one address cannot
 * hold more than its share of the listener, nor all of it, nor for longer than the header and
 * request timeouts; long runs are not cut. The attacker connects from 127.0.0.2 (another loopback
 * source address), so /healthz from 127.0.0.1 shows whether everyone else is still served.
 */
import assert from 'node:assert/strict';
import { connect as connectTcp } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { callOk, connect, createAccount, parseResult, startTestServer, type TestServer } from '../test-support/harness.js';

interface Held {
  /** Everything the server sent on this connection, once it closed it. */
  closed: Promise<string>;
  destroy(): void;
}

/** Opens `count` connections from `localAddress` (all at once), each sending `payload` and then nothing. */
async function hold(server: TestServer, count: number, localAddress: string, payload: (i: number) => string): Promise<Held[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) => {
      const socket = connectTcp({ host: '127.0.0.1', port: server.server.port, localAddress });
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(data)));
      return new Promise<Held>((resolve) =>
        socket.once('connect', () => {
          const text = payload(i);
          if (text) socket.write(text);
          resolve({ closed, destroy: () => socket.destroy() });
        }),
      );
    }),
  );
}

/**
 * A liveness bound, not a measurement: several times the configured timeout, and below the next
 * longer one (a header timeout left unset falls back to the request timeout, 10 s here; an unset
 * request timeout to Node's 300 s), so a server that ignored a timeout fails.
 */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const status = (response: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);

async function healthz(server: TestServer): Promise<number> {
  // A generous bound only so that a hung server fails the test instead of stalling it.
  const response = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  await response.arrayBuffer();
  return response.status;
}

const HALF_SENT = (i: number) => (i % 2 ? `POST /mcp/run/x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-forwarded-for: 10.9.9.${i}\r\n` : '');

describe('per-address cap, header and request timeouts', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      // The request timeout is well above the header timeout, so each is seen on its own.
      http: { maxConnections: 64, maxConnectionsPerIp: 16, headersTimeoutMs: 2000, requestTimeoutMs: 10_000, trustedProxies: ['127.0.0.3'] },
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('idle and half-sent connections from one address: beyond the cap refused at once, the rest dropped at the header timeout', async () => {
    const held = await hold(server, 40, '127.0.0.2', HALF_SENT);
    // While the attacker holds its 16 connections, everyone else is served.
    const [health, answers] = await Promise.all([healthz(server), within(Promise.all(held.map((h) => h.closed)), 8000, 'the header timeout closes the kept connections')]);
    assert.equal(health, 200);
    const refused = answers.filter((a) => status(a) === 503);
    assert.equal(refused.length, 24, answers.map(status).join(','));
    assert.match(refused[0]!, /too many open connections from your address/);
    // The 16 kept ones are closed by the header timeout (Node answers 408 to a started request).
    assert.equal(answers.filter((a) => status(a) !== 503).length, 16);
    for (const answer of answers.filter((a) => status(a) !== 503)) assert.ok(answer === '' || status(answer) === 408, answer);
    // Its connections are released: the same address is served again.
    const again = await hold(server, 1, '127.0.0.2', () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n');
    assert.equal(status(await again[0]!.closed), 200);
  });

  test('a trusted proxy is not capped per connection; its clients are capped per forwarded address', async () => {
    // Complete headers and a body that never comes: each is a request in flight until the request timeout.
    const stuck = (client: string) => () => `POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\nx-forwarded-for: 198.51.100.7, ${client}\r\n\r\n{"email":`;
    const held = await hold(server, 20, '127.0.0.3', stuck('10.0.0.1'));
    // Another client behind the same proxy, and the health check, are served meanwhile.
    const other = await hold(server, 1, '127.0.0.3', () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nconnection: close\r\n\r\n');
    assert.equal(status(await other[0]!.closed), 200);
    assert.equal(await healthz(server), 200);
    const answers = await within(Promise.all(held.map((h) => h.closed)), 40_000, 'the request timeout ends the stuck requests');
    const codes = answers.map(status).sort();
    // 16 requests of 10.0.0.1 in flight (ended by the request timeout), the other 4 refused; no connection refused.
    assert.equal(codes.filter((c) => c === 503).length, 4, codes.join(','));
    assert.equal(codes.filter((c) => c === 408).length, 16, codes.join(','));
    for (const answer of answers.filter((a) => status(a) === 503)) assert.match(answer, /in flight from your address/);
  });

  test('runs longer than the request and header timeouts are not cut (both protocol eras)', async () => {
    const account = await createAccount(server.url);
    const ns = `long-${Math.random().toString(36).slice(2, 10)}`;
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_namespace', { name: ns });
    const results = await Promise.all(
      (['v1', 'v2'] as const).map(async (era) => {
        const run = await connect(`${server.url}/mcp/run/${ns}`, account.key, era);
        const result = await run.callTool('execute', { code: 'import time\ntime.sleep(11)\nresult = "done"' });
        await run.close();
        return result;
      }),
    );
    for (const result of results) assert.equal(parseResult(result), 'done', JSON.stringify(result));
  });

  test('many addresses together hold at most the total cap, and only until the header timeout', async () => {
    const held = (await Promise.all(['127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8'].map((address) => hold(server, 16, address, HALF_SENT)))).flat();
    // 80 connections, each address within its cap of 16, against a total of 64 (the test's own
    // keep-alive connections from 127.0.0.1 may hold a few more of them).
    const answers = await within(Promise.all(held.map((h) => h.closed)), 8000, 'the header timeout closes the kept connections');
    const refused = answers.filter((a) => status(a) === 503);
    assert.ok(refused.length >= 16, answers.map(status).join(','));
    assert.ok(refused.some((a) => /the server has too many open connections/.test(a)), 'refused for the total, not per address');
    assert.ok(answers.length - refused.length <= 64, 'the server held at most 64 connections');
    assert.equal(await healthz(server), 200);
  });
});
