// test-database: embedded, body limits live in the HTTP layer
/**
 * The early refusal (body-precheck.ts) against requests written byte by byte on a socket: pipelined
 * requests, an absolute-form target, `Expect: 100-continue`, dot-segment paths, a GET with a chunked
 * body, and a pipelined refusal behind a trusted proxy (its in-flight slot released). Each failed
 * before its fix (a review of the early 413).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../test-support/harness.js';
import { ACCOUNT_MAX_BODY_BYTES } from './body-limit.js';

let server: TestServer;
let port: number;
before(async () => {
  server = await startTestServer({ http: { headersTimeoutMs: 5000, requestTimeoutMs: 5000 } });
  port = server.server.port;
});
after(async () => {
  await server?.stop();
});

const MB = 1024 * 1024;

/** Writes `bytes` on a fresh connection and collects what comes back until the server closes or `quietMs` pass. */
async function exchange(bytes: string, quietMs = 1500): Promise<string> {
  const socket = connectTcp({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  let response = '';
  socket.on('data', (data) => (response += data.toString('latin1')));
  socket.on('error', () => undefined);
  socket.write(bytes);
  await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, quietMs).unref())]);
  socket.destroy();
  return response;
}

const host = () => `Host: 127.0.0.1:${port}\r\n`;
const statuses = (response: string) => [...response.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe('the early 413 against raw requests', () => {
  test('pipelined: the answers of earlier requests on the connection are not lost to the 413', async () => {
    const response = await exchange(
      `GET /healthz HTTP/1.1\r\n${host()}\r\nPOST /api/login HTTP/1.1\r\n${host()}Content-Length: ${ACCOUNT_MAX_BODY_BYTES + 1}\r\n\r\n`,
    );
    // Written at once, only the 413 arrived, as if it answered GET /healthz.
    assert.deepEqual(statuses(response), [200, 413], response.slice(0, 300));
  });

  test("absolute-form request target (RFC 9112 3.2.2): the route limit is the path's, not 64 KB", async () => {
    const size = ACCOUNT_MAX_BODY_BYTES * 2;
    const response = await exchange(
      `POST http://127.0.0.1:${port}/mcp/run/demo HTTP/1.1\r\n${host()}Content-Type: application/json\r\nContent-Length: ${size}\r\n\r\n${'x'.repeat(size)}`,
    );
    // The app routes it to the MCP endpoint (8 MB): without a key, 401 (not 413 "larger than 65536 bytes").
    assert.deepEqual(statuses(response).slice(0, 1), [401], response.slice(0, 300));
  });

  test('Expect: 100-continue with an oversized Content-Length is not told to go on before its 413', async () => {
    const response = await exchange(
      `POST /api/login HTTP/1.1\r\n${host()}Expect: 100-continue\r\nContent-Length: ${ACCOUNT_MAX_BODY_BYTES + 1}\r\n\r\n`,
    );
    assert.deepEqual(statuses(response), [413], response.slice(0, 300));
  });

  test('an oversized declared body on a dot-segment path is still refused early', async () => {
    const before = server.server.services.bodiesRefusedEarly();
    const response = await exchange(
      `POST /mcp/agent/../../api/login HTTP/1.1\r\n${host()}Content-Length: ${ACCOUNT_MAX_BODY_BYTES + 1}\r\n\r\n`,
    );
    assert.deepEqual(statuses(response), [413], response.slice(0, 300));
    // Read as a webhook path, it got the webhook's 10 MB and the app answered it instead.
    assert.equal(server.server.services.bodiesRefusedEarly() - before, 1);
  });

  test("GET with a chunked body is not read on without limit (nor past the client's byte budget)", async () => {
    const socket = connectTcp({ host: '127.0.0.1', port });
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    let closed = false;
    let response = '';
    socket.on('data', (data) => (response += data.toString('latin1')));
    socket.once('close', () => (closed = true));
    socket.write(`GET /healthz HTTP/1.1\r\n${host()}Transfer-Encoding: chunked\r\n\r\n`);
    const piece = Buffer.concat([Buffer.from(`${MB.toString(16)}\r\n`), Buffer.alloc(MB, 97), Buffer.from('\r\n')]);
    let written = 0;
    // 64 MB: far past every route's limit and the kernel's buffers: without the early 400 the server read it all.
    while (written < 64 * MB && !closed) {
      const flushed = socket.write(piece);
      written += MB;
      if (!flushed) {
        const drained = await Promise.race([
          once(socket, 'drain').then(
            () => true,
            () => false,
          ),
          once(socket, 'close').then(
            () => false,
            () => false,
          ),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000).unref()),
        ]);
        if (!drained) break;
      }
    }
    socket.destroy();
    assert.ok(written < 32 * MB, `the server took ${written / MB} MB of a GET's chunked body`);
    assert.deepEqual(statuses(response), [400], response.slice(0, 300));
    assert.match(response, /a GET or HEAD request carries no body/);
  });
});

describe('the early 413 behind a trusted proxy', () => {
  let proxied: TestServer;
  before(async () => {
    proxied = await startTestServer({ http: { trustedProxies: ['127.0.0.1'], maxConnectionsPerIp: 4 } });
  });
  after(async () => {
    await proxied?.stop();
  });

  test("a pipelined early 413 does not leak its forwarded client's in-flight slots", async () => {
    const proxiedPort = proxied.server.port;
    const send = async (bytes: string) => {
      const socket = connectTcp({ host: '127.0.0.1', port: proxiedPort });
      await once(socket, 'connect');
      let response = '';
      socket.on('data', (data) => (response += data.toString('latin1')));
      socket.on('error', () => undefined);
      socket.write(bytes);
      await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, 1500).unref())]);
      socket.destroy();
      return response;
    };
    const head = (ip: string) => `Host: 127.0.0.1:${proxiedPort}\r\nX-Forwarded-For: ${ip}\r\n`;
    for (let i = 0; i < 3; i++)
      await send(
        `GET /healthz HTTP/1.1\r\n${head('203.0.113.9')}\r\nPOST /api/login HTTP/1.1\r\n${head('203.0.113.9')}Content-Length: ${ACCOUNT_MAX_BODY_BYTES + 1}\r\n\r\n`,
      );
    // Every connection is closed: the client holds nothing in flight, so two pipelined requests both pass (4 allowed).
    // Queued 413s that were never attached to the socket never released their slot: 200,503 for good.
    const response = await send(`GET /healthz HTTP/1.1\r\n${head('203.0.113.9')}\r\nGET /healthz HTTP/1.1\r\n${head('203.0.113.9')}\r\n`);
    assert.deepEqual(statuses(response), [200, 200], response.slice(0, 300));
  });
});
