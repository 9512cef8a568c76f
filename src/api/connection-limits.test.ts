// test-database: embedded, connection caps and timeouts live in the HTTP layer
/**
 * Connection exhaustion (issue 10, item 5): idle and half-sent requests from one address cannot
 * hold more than its share of the listener, nor all of it, nor for longer than the header and
 * request timeouts; long runs are not cut. The attacker connects from 127.0.0.2 (another loopback
 * source address), so /healthz from 127.0.0.1 shows whether everyone else is still served.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as connectTcp } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { startServer } from '../app/start-server.js';
import {
  callOk,
  connect,
  createAccount,
  errorOf,
  parseResult,
  seedEmbeddedDatabase,
  startTestServer,
  testDataRoot,
  type TestServer,
} from '../test-support/harness.js';
import { fetchWithin } from '../test-support/processes.js';

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
/** The body of the last response on a connection (every response here carries content-length or closes). */
const lastBody = (answer: string) => JSON.parse(answer.slice(answer.lastIndexOf('\r\n\r\n') + 4));

/** Polls `done` (a state, never a duration) until it holds; the bound only keeps a hung server from stalling the suite. */
async function until(done: () => boolean, what: string): Promise<void> {
  await within(
    (async () => {
      while (!done()) await new Promise((resolve) => setTimeout(resolve, 20));
    })(),
    20_000,
    what,
  );
}

async function healthz(server: TestServer): Promise<number> {
  // A generous bound only so that a hung server fails the test instead of stalling it.
  const response = await fetchWithin(10_000, `${server.url}/healthz`);
  await response.arrayBuffer();
  return response.status;
}

const HALF_SENT = (i: number) =>
  i % 2 ? `POST /mcp/run/x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-forwarded-for: 10.9.9.${i}\r\n` : '';

describe('per-address cap, header and request timeouts', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      // The request timeout is well above the header timeout, so each is seen on its own.
      http: {
        maxConnections: 64,
        maxConnectionsPerIp: 16,
        headersTimeoutMs: 2000,
        requestTimeoutMs: 10_000,
        // Clients are told 1 s (the hint is 5 s below it): the keep-alive test waits that, and 2 s more.
        keepAliveTimeoutMs: 6000,
        trustedProxies: ['127.0.0.3'],
      },
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('a kept-alive connection is held past the idle time its responses advertise: a client that honours it never writes into a closing connection (no reset)', async () => {
    const socket = connectTcp({ host: '127.0.0.1', port: server.server.port });
    socket.on('error', () => undefined);
    let data = '';
    let closed = false;
    socket.on('data', (chunk) => (data += chunk.toString('latin1')));
    socket.once('close', () => (closed = true));
    const request = 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n';
    const responses = () => data.split('HTTP/1.1 ').length - 1;
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(request);
    await until(() => responses() === 1 || closed, 'the first answer');
    assert.equal(status(data), 200, data);
    const hint = /^keep-alive: timeout=(\d+)\r$/im.exec(data);
    assert.ok(hint, `a Keep-Alive hint: ${data}`);
    const seconds = Number(hint[1]);
    assert.ok(seconds >= 1, data);
    // A client may reuse the connection until the advertised idle time runs out, and its request may
    // be under way a while longer (latency, a busy client): the server holds it seconds past that.
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000 + 2000));
    assert.equal(closed, false, 'the server closed the connection within 2 s of the idle time it advertised');
    socket.write(request);
    await until(() => responses() === 2 || closed, 'the second answer on the kept connection');
    assert.equal(responses(), 2, `answered on the same connection: ${data}`);
    assert.equal(status(data.slice(data.lastIndexOf('HTTP/1.1 '))), 200);
    socket.destroy();
  });

  test('idle and half-sent connections from one address: beyond the cap refused at once, the rest dropped at the header timeout', async () => {
    const before = server.server.services.connections();
    const held = await hold(server, 40, '127.0.0.2', HALF_SENT);
    // While the attacker holds its 16 connections, everyone else is served.
    const [health, answers] = await Promise.all([
      healthz(server),
      within(Promise.all(held.map((h) => h.closed)), 8000, 'the header timeout closes the kept connections'),
    ]);
    assert.equal(health, 200);
    const after = server.server.services.connections();
    assert.equal(after.refusedAddress - before.refusedAddress, 24);
    // The first few refused get a written 503 (the rest are closed at accept, with nothing written).
    const refused = answers.filter((a) => status(a) === 503);
    assert.equal(refused.length, after.refusedPolitely - before.refusedPolitely);
    assert.ok(refused.length >= 1, answers.map(status).join(','));
    assert.match(refused[0]!, /too many open connections from your address/);
    // Written before the route is known: a JSON-RPC error object (MCP endpoints) that also carries error_type at the top (account routes).
    const refusal = JSON.parse(refused[0]!.slice(refused[0]!.indexOf('\r\n\r\n') + 4));
    assert.equal(refusal.jsonrpc, '2.0');
    assert.equal(typeof refusal.error.code, 'number');
    assert.equal(refusal.error.data.type, 'rate_limited');
    assert.equal(refusal.error_type, 'rate_limited');
    // The 16 kept ones are closed by the header timeout (Node answers 408 to a started request).
    for (const answer of answers.filter((a) => status(a) !== 503)) assert.ok(answer === '' || status(answer) === 408, answer);
    assert.ok(answers.filter((a) => status(a) === 408).length >= 1, answers.map(status).join(','));
    // Its connections are released: the same address is served again.
    const again = await hold(server, 1, '127.0.0.2', () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n');
    assert.equal(status(await again[0]!.closed), 200);
  });

  test('a flood of connections that never read what the server sends: refused at accept, not held, not counted; others served', async () => {
    const account = await createAccount(server.url);
    const before = server.server.services.connections();
    // 400 half-sent requests from one address, none of whose sockets is ever read.
    const sockets = await Promise.all(
      Array.from({ length: 400 }, () => {
        const socket = connectTcp({ host: '127.0.0.1', port: server.server.port, localAddress: '127.0.0.9' });
        socket.pause();
        socket.on('error', () => undefined);
        return new Promise<typeof socket>((resolve) => {
          socket.once('connect', () => {
            socket.write('POST /mcp/run/x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n');
            resolve(socket);
          });
          socket.once('close', () => resolve(socket));
        });
      }),
    );
    try {
      // Connected is not yet accepted: wait (bounded) until the server has seen all 400.
      const seen = () => server.server.services.connections().refusedAddress - before.refusedAddress;
      await within(
        (async () => {
          while (seen() < 384) await new Promise((resolve) => setTimeout(resolve, 20));
        })(),
        8000,
        'the server accepts (and refuses) the flood',
      ).catch(() => undefined);
      const flooded = server.server.services.connections();
      assert.equal(flooded.refusedAddress - before.refusedAddress, 384);
      // Most were closed at accept, before a socket object or a parser existed.
      assert.ok(flooded.refusedPolitely - before.refusedPolitely < flooded.refusedAddress - before.refusedAddress, JSON.stringify(flooded));
      // Refused connections never count against the caps: the total (64) is not used up.
      assert.ok(flooded.open <= 16 + 16, JSON.stringify(flooded));
      // The written 503s are not waited on: every socket the server holds is an admitted one (the
      // header timeout, 2 s, then closes those too; a refused socket kept would stay until the end).
      await within(
        (async () => {
          while (server.server.services.connections().sockets > server.server.services.connections().open)
            await new Promise((resolve) => setTimeout(resolve, 50));
        })(),
        8000,
        'the refused sockets are let go',
      );
      // Meanwhile everyone else is served: health, a real user's login, a new key's first use.
      assert.equal(await healthz(server), 200);
      const login = await fetch(`${server.url}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: account.email, password: account.password }),
      });
      assert.equal(login.status, 200);
      const create = await connect(`${server.url}/mcp/create/flood-${Math.random().toString(36).slice(2, 8)}`, account.key);
      assert.ok((await create.listTools()).tools.length > 0);
      await create.close();
      const usage = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
      assert.equal(usage.status, 200);
      assert.equal((await usage.json()).executions, 0);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });

  test('a trusted proxy is not capped per connection; its clients are capped per forwarded address', async () => {
    // Complete headers and a body that never comes: each is a request in flight until the request timeout.
    const stuck = (client: string) => () =>
      `POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\nx-forwarded-for: 198.51.100.7, ${client}\r\n\r\n{"email":`;
    const held = await hold(server, 20, '127.0.0.3', stuck('10.0.0.1'));
    // Another client behind the same proxy, and the health check, are served meanwhile.
    const other = await hold(
      server,
      1,
      '127.0.0.3',
      () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nconnection: close\r\n\r\n',
    );
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
    const before = server.server.services.connections();
    const held = (
      await Promise.all(
        ['127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8'].map((address) => hold(server, 16, address, HALF_SENT)),
      )
    ).flat();
    // 80 connections, each address within its cap of 16, against a total of 64 (the test's own
    // keep-alive connections from 127.0.0.1 may hold a few more of them).
    const holding = server.server.services.connections();
    assert.ok(holding.open <= 64, 'the server held at most 64 connections');
    const answers = await within(Promise.all(held.map((h) => h.closed)), 8000, 'the header timeout closes the kept connections');
    const after = server.server.services.connections();
    assert.ok(after.refusedTotal - before.refusedTotal >= 16, JSON.stringify(after));
    assert.equal(after.refusedAddress, before.refusedAddress, 'no address was over its own cap');
    assert.ok(
      answers.some((a) => /the server has too many open connections/.test(a)),
      'refused for the total, not per address',
    );
    assert.equal(await healthz(server), 200);
  });
});

describe('refusals logged as a summary; each client paced to its share of new requests and body bytes', () => {
  const lines: string[] = [];
  let dataDir: string;
  let running: Awaited<ReturnType<typeof startServer>>;
  let server: TestServer;
  before(async () => {
    const logs = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-conn-log-'));
    await seedEmbeddedDatabase(dataDir);
    running = await startServer(
      {
        host: '127.0.0.1',
        port: 0,
        dataDir,
        databaseUrl: undefined,
        tiers: DEFAULT_TIERS,
        http: {
          maxConnections: 128,
          maxConnectionsPerIp: 16,
          requestsPerSecondPerIp: 2,
          bodyBytesPerSecondPerIp: 1024,
          trustedProxies: ['127.0.0.20/30'],
        },
      },
      pino({ level: 'info' }, logs),
    );
    server = { url: running.url, server: running } as TestServer;
  });
  after(async () => {
    await running?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('refused connections are counted, not logged one by one: one summary line per window', async () => {
    const refusedLines = () => lines.filter((line) => /connections refused/.test(line));
    const held = await hold(server, 116, '127.0.0.13', () => '');
    const seen = () => running.services.connections().refusedAddress;
    await within(
      (async () => {
        while (seen() < 100) await new Promise((resolve) => setTimeout(resolve, 20));
      })(),
      8000,
      'the server refuses the flood',
    );
    // (Over the cap of 16, or past what may wait for the address's share of new requests.)
    assert.ok(seen() >= 100, String(seen()));
    // Nothing logged per refusal...
    assert.equal(refusedLines().length, 0, refusedLines().join(''));
    // ...then one line for the window, with the counts.
    await within(
      (async () => {
        while (refusedLines().length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      })(),
      20_000,
      'the summary line comes',
    );
    const [summary, ...more] = refusedLines();
    assert.equal(more.length, 0);
    const entry = JSON.parse(summary!);
    assert.ok(entry.refused_address_cap >= 100, summary);
    assert.deepEqual(entry.top[0], { client: '127.0.0.13', count: entry.refused_address_cap });
    for (const h of held) h.destroy();
  });

  test('a flood of new connections waits unread for its share; another client is served first', async () => {
    const before = running.services.connections();
    const request = () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n';
    const held = await hold(server, 16, '127.0.0.14', request);
    const counted = () => {
      const now = running.services.connections();
      return now.deferred - before.deferred + (now.refusedAddress - before.refusedAddress);
    };
    await within(
      (async () => {
        while (counted() < 12) await new Promise((resolve) => setTimeout(resolve, 20));
      })(),
      8000,
      'the flood is accepted into its queue or refused',
    );
    // Waiting connections are handles only: no socket, no parser has read their bytes.
    const waiting = running.services.connections();
    assert.ok(waiting.waiting >= 3, JSON.stringify(waiting));
    assert.ok(waiting.sockets <= waiting.open - 3, JSON.stringify(waiting));
    // Another client is served while the flood still waits (2 a second).
    assert.equal(await healthz(server), 200);
    assert.ok(running.services.connections().waiting > 0, 'the other client was served before the flood');
    // What waited is served in its turn; past two seconds' worth waiting, refused as over the cap.
    const answers = await within(Promise.all(held.map((h) => h.closed)), 30_000, 'the flood is served at its rate');
    const after = running.services.connections();
    assert.ok(after.refusedAddress - before.refusedAddress >= 1, JSON.stringify(after));
    assert.ok(answers.filter((a) => status(a) === 200).length >= 5, answers.map(status).join(','));
    assert.ok(answers.filter((a) => status(a) !== 200).length >= 1, answers.map(status).join(','));
    for (const answer of answers.filter((a) => status(a) !== 200))
      assert.ok(answer === '' || /too many open connections from your address/.test(answer), answer);
  });

  test('requests on a kept-alive connection are paced too; past what may wait, 503', async () => {
    const before = running.services.connections();
    const requests =
      Array.from({ length: 12 }, () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n').join('') +
      'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n';
    const [held] = await hold(server, 1, '127.0.0.15', () => requests);
    const answer = await within(held!.closed, 30_000, 'the pipelined requests are answered');
    const codes = [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    // The connection's first request used the token its accept took; of the 12 others, those
    // within the address's tokens start, 4 (two seconds' worth) wait, the next gets 503 and the
    // connection is closed (answers go out in request order).
    assert.ok(running.services.connections().deferred - before.deferred >= 4, JSON.stringify(running.services.connections()));
    assert.equal(codes.at(-1), 503, codes.join(','));
    assert.ok(codes.length >= 6 && codes.length < 13, codes.join(','));
    assert.deepEqual(codes.slice(0, -1), Array(codes.length - 1).fill(200));
    assert.match(answer, /too many requests waiting from your address/);
    assert.equal(await healthz(server), 200);
  });

  test("a client's body is read at its share of bytes a second; others are served meanwhile", async () => {
    // 48 KB of a sign-up's JSON body, all sent at once, against 1 KB a second for its address.
    const body = JSON.stringify({ email: 'paced@example.com', password: 'x'.repeat(48 * 1024) });
    const [held] = await hold(
      server,
      1,
      '127.0.0.16',
      () =>
        `POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    );
    let answered = false;
    void held!.closed.then(() => (answered = true));
    // Another client's request (a body too) is answered while the paced one is still being read.
    const other = await fetch(`${server.url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'nobody@example.com' }),
    });
    assert.equal(other.status, 400);
    assert.equal(await healthz(server), 200);
    assert.equal(answered, false, 'the paced body was read ahead of its share');
    held!.destroy();
  });

  test('behind a trusted proxy (a CIDR range), forwarded clients with ports are each paced under their own address', async () => {
    const before = running.services.connections();
    // Nine users behind proxies in 127.0.0.20/30, as Azure Application Gateway and others write them:
    // with ports. Were they one client (the proxy's), 2 a second would make most of them wait or 503.
    const forwarded = [
      ...[1, 2, 3, 4].map((i) => `198.51.100.${i}:4711`),
      ...[1, 2, 3, 4].map((i) => `[2001:db8:${i}::5]:4711`),
      '198.51.100.9:80',
    ];
    const held = (
      await Promise.all(
        forwarded.map((client, i) =>
          hold(
            server,
            1,
            i === 8 ? '127.0.0.22' : '127.0.0.20',
            () => `GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 192.0.2.1, ${client}\r\nconnection: close\r\n\r\n`,
          ),
        ),
      )
    ).flat();
    const answers = await within(Promise.all(held.map((h) => h.closed)), 20_000, 'the forwarded clients are answered');
    assert.deepEqual(answers.map(status), Array(forwarded.length).fill(200));
    assert.equal(running.services.connections().deferred, before.deferred, 'no forwarded client waited: each had its own share');
  });

  test("a trusted proxy naming no usable client: limited under the proxy's address, and one warning per problem names the setting", async () => {
    const warnings = () => lines.filter((line) => /MCPWORKS_TRUSTED_PROXIES/.test(line)).map((line) => JSON.parse(line));
    const before = running.services.connections();
    const headers = [
      '',
      '',
      '',
      'x-forwarded-for: unknown\r\n',
      'x-forwarded-for: 198.51.100.7, _hidden\r\n',
      'x-forwarded-for: unknown\r\n',
    ];
    const held = (
      await Promise.all(
        headers.map((header) =>
          hold(server, 1, '127.0.0.21', () => `GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n${header}connection: close\r\n\r\n`),
        ),
      )
    ).flat();
    const answers = await within(Promise.all(held.map((h) => h.closed)), 20_000, "the proxy's requests are answered");
    assert.ok(
      answers.every((a) => status(a) === 200 || status(a) === 503),
      answers.map(status).join(','),
    );
    // Six requests under one key whose share is 2 a second: some waited (or were refused).
    const after = running.services.connections();
    assert.ok(after.deferred > before.deferred || answers.some((a) => status(a) === 503), JSON.stringify(after));
    const seen = warnings();
    assert.deepEqual(seen.map((w) => w.problem).sort(), ['missing', 'unusable'], JSON.stringify(seen));
    for (const warning of seen) {
      assert.equal(warning.proxy, '127.0.0.21');
      assert.equal(warning.setting, 'MCPWORKS_TRUSTED_PROXIES');
      assert.match(warning.msg, /X-Forwarded-For/);
    }
  });

  test("pacing 503s take the route's shape: the one error shape on /api/login, JSON-RPC on /mcp/", async () => {
    const login = 'POST /api/login HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}';
    const mcp = 'POST /mcp/run/x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}';
    const [onLogin, onMcp] = (
      await Promise.all([hold(server, 1, '127.0.0.17', () => login.repeat(12)), hold(server, 1, '127.0.0.18', () => mcp.repeat(12))])
    ).flat();
    const loginAnswer = await within(onLogin!.closed, 30_000, 'the pipelined sign-ins are answered');
    assert.equal(status(loginAnswer.slice(loginAnswer.lastIndexOf('HTTP/1.1 '))), 503);
    const refused = errorOf(lastBody(loginAnswer));
    assert.equal(refused.type, 'rate_limited');
    assert.match(refused.message, /too many requests waiting from your address/);
    assert.equal(refused.retry_after, 1);
    const mcpAnswer = await within(onMcp!.closed, 30_000, 'the pipelined MCP posts are answered');
    assert.equal(status(mcpAnswer.slice(mcpAnswer.lastIndexOf('HTTP/1.1 '))), 503);
    const rpc = lastBody(mcpAnswer);
    assert.equal(rpc.jsonrpc, '2.0');
    assert.equal(rpc.error.data.type, 'rate_limited');
    assert.match(rpc.error.message, /too many requests waiting from your address/);
  });

  test("shutdown: requests waiting their turn get 503 in their route's shape; the body budget is closed with the server", async () => {
    const before = running.services.connections();
    const [held] = await hold(server, 1, '127.0.0.19', () => 'GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n'.repeat(5));
    await until(
      () => running.services.connections().waiting > 0 && running.services.connections().deferred > before.deferred,
      'requests wait their turn',
    );
    assert.equal(running.services.bodyBudget?.closed, false);
    await running.close();
    const answer = await held!.closed;
    assert.equal(status(answer.slice(answer.lastIndexOf('HTTP/1.1 '))), 503);
    const refused = errorOf(lastBody(answer));
    assert.equal(refused.type, 'unavailable');
    assert.match(refused.message, /shutting down/);
    assert.equal(running.services.bodyBudget?.closed, true, 'its sweep timer is cleared');
  });
});
