// test-database: embedded, body limits live in the HTTP layer
/**
 * Abuse of the HTTP surface (issue 10, items 4, 14, 15): oversized bodies on every route (and the
 * early refusal against raw requests: pipelined, absolute-form, `Expect: 100-continue`, dot
 * segments, a GET with a chunked body, behind a trusted proxy), same-site request forgery on the
 * account routes, and API keys reading usage beyond their scope. Each case
 * runs the attack through the real server and then checks that /healthz still answers and that
 * nothing was written or metered.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  callOk,
  connect,
  createAccount,
  createKey,
  postJson,
  startTestServer,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { ACCOUNT_MAX_BODY_BYTES, MCP_MAX_BODY_BYTES } from './body-limit.js';
import { BODY_MAX_DEPTH, BODY_MAX_VALUES } from './mcp-endpoint.js';
import { MAX_CHECKED_VALUES, MAX_CODE_BYTES } from '../core/limits.js';
import { fetchWithin } from '../test-support/processes.js';

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

async function healthy(): Promise<void> {
  // A generous bound only so that a hung server fails the test instead of stalling it.
  const response = await fetchWithin(10_000, `${server.url}/healthz`);
  assert.equal(response.status, 200);
  assert.equal((await response.json()).status, 'ok');
}

interface Upload {
  /** The status line's code, or undefined when the server closed before answering. */
  status: number | undefined;
  response: string;
  /** Body bytes the server let us hand to the kernel before it answered or closed. */
  written: number;
}

/**
 * One request over a raw socket: the head, then up to `budget` body bytes in 1 MB pieces (chunked
 * when `chunked`), stopping as soon as the server answers or closes.
 */
async function upload(
  path: string,
  headers: Record<string, string>,
  options: { budget: number; chunked?: boolean; prefix?: string; method?: string },
): Promise<Upload> {
  const socket: Socket = connectTcp({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  let response = '';
  let closed = false;
  socket.on('data', (data) => (response += data.toString('latin1')));
  socket.on('error', () => undefined);
  const closing = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  const answered = () => closed || response.includes('\r\n\r\n');
  const head = Object.entries({ host: `127.0.0.1:${port}`, ...headers, ...(options.chunked ? { 'transfer-encoding': 'chunked' } : {}) })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.write(`${options.method ?? 'POST'} ${path} HTTP/1.1\r\n${head}\r\n`);
  const piece = Buffer.alloc(MB, 'a');
  const frame = (data: Buffer) =>
    options.chunked ? Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]) : data;
  let written = 0;
  if (options.prefix) {
    socket.write(frame(Buffer.from(options.prefix)));
    written += options.prefix.length;
  }
  while (written < options.budget && !answered()) {
    const flushed = socket.write(frame(piece));
    written += piece.length;
    if (!flushed) await new Promise((resolve) => (socket.once('drain', resolve), socket.once('close', resolve)));
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (!answered() && options.chunked) socket.write('0\r\n\r\n');
  // Wait for the whole answer (the server closes after a refusal) or the close.
  const waitForAnswer = new Promise<void>((resolve) => {
    const check = () => {
      if (closed || /\r\n\r\n[\s\S]*\}/.test(response)) resolve();
    };
    socket.on('data', check);
    check();
  });
  await Promise.race([waitForAnswer, closing]);
  socket.destroy();
  const match = /^HTTP\/1\.1 (\d{3})/.exec(response);
  return { status: match ? Number(match[1]) : undefined, response, written };
}

async function namespaceWith(account: TestAccount): Promise<string> {
  const ns = `lim-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'svc' });
  await create.close();
  return ns;
}

async function usage(account: TestAccount) {
  const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
  return response.json();
}

async function sessionCookie(account: TestAccount): Promise<string> {
  const login = await postJson(`${server.url}/login`, { email: account.email, password: account.password });
  return (login.headers.get('set-cookie') ?? '').split(';')[0]!;
}

async function keyCount(account: TestAccount): Promise<number> {
  const listed = await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${account.token}` } });
  return (await listed.json()).keys.length;
}

describe('request bodies are limited before they are read', () => {
  test('a declared Content-Length over the limit is refused before the body or the key is read, on every route', async () => {
    const account = await createAccount(server.url);
    const ns = await namespaceWith(account);
    const cookie = await sessionCookie(account);
    const mcp = { authorization: `Bearer ${account.key}`, accept: 'application/json, text/event-stream' };
    const routes: Array<[string, Record<string, string>]> = [
      [`/mcp/create/${ns}`, { ...mcp, 'mcp-protocol-version': '2025-06-18' }],
      [`/mcp/create/${ns}`, { ...mcp, 'mcp-protocol-version': '2026-07-28' }],
      [`/mcp/run/${ns}`, { ...mcp, 'mcp-protocol-version': '2025-06-18' }],
      [`/mcp/run/${ns}?mode=tools`, { ...mcp, 'mcp-protocol-version': '2026-07-28' }],
      [`/mcp/run/${ns}`, {}], // no key at all: still 413, not 401
      ['/register', {}],
      ['/login', {}],
      ['/api/keys', { cookie }],
      ['/api/usage', { authorization: `Bearer ${account.key}` }],
      ['/nowhere', {}],
    ];
    const earlyBefore = server.server.services.bodiesRefusedEarly();
    let refused = 0;
    for (const [path, headers] of routes) {
      for (const type of ['application/json', 'text/plain', 'application/octet-stream']) {
        const result = await upload(path, { ...headers, 'content-type': type, 'content-length': String(400 * MB) }, { budget: 0 });
        assert.equal(result.status, 413, `${path} ${type}: ${result.response.slice(0, 200)}`);
        assert.match(result.response, /connection: close/i, 'the connection is not kept for the rest of the body');
        assert.match(result.response, /\r\ndate: \w{3}, \d{2} \w{3} \d{4} /i, 'a Date header, as every other answer has');
        // The route's own answer: a JSON-RPC error on MCP endpoints, the one error shape elsewhere.
        const body = JSON.parse(result.response.slice(result.response.indexOf('\r\n\r\n') + 4));
        if (path.startsWith('/mcp/'))
          assert.deepEqual(body.error, {
            code: -32600,
            message: `request body larger than ${MCP_MAX_BODY_BYTES} bytes`,
            data: { type: 'validation_error' },
          });
        else assert.deepEqual(body, { error: `request body larger than ${ACCOUNT_MAX_BODY_BYTES} bytes`, error_type: 'validation_error' });
        refused++;
      }
    }
    // GET and HEAD skip the body check only after the declared length was looked at.
    for (const [method, path] of [
      ['GET', '/healthz'],
      ['GET', `/mcp/run/${ns}`],
      ['HEAD', '/api/usage'],
    ] as const) {
      const result = await upload(
        path,
        { authorization: `Bearer ${account.key}`, 'content-length': String(400 * MB) },
        { budget: 0, method },
      );
      assert.equal(result.status, 413, `${method} ${path}: ${result.response.slice(0, 200)}`);
      refused++;
    }
    // Every one was answered from Node's request event, before the app built a request or read a byte of the body.
    assert.equal(server.server.services.bodiesRefusedEarly() - earlyBefore, refused);
    // Just within the limit is not refused for its size.
    const fits = await upload(
      `/mcp/run/${ns}`,
      { ...mcp, 'content-type': 'application/json', 'content-length': String(MCP_MAX_BODY_BYTES) },
      { budget: MCP_MAX_BODY_BYTES },
    );
    assert.notEqual(fits.status, 413, fits.response.slice(0, 200));
    const fitsAccount = await upload(
      '/register',
      { 'content-type': 'application/json', 'content-length': String(ACCOUNT_MAX_BODY_BYTES) },
      { budget: 0, prefix: `{"x":"${'a'.repeat(ACCOUNT_MAX_BODY_BYTES - 8)}"}` },
    );
    assert.equal(fitsAccount.status, 400, fitsAccount.response.slice(0, 200));
    await healthy();
    assert.equal((await usage(account)).executions, 0);
  });

  test('a 400 MB upload with a valid key is cut off at once: server memory stays flat, nothing is written', async () => {
    const account = await createAccount(server.url);
    const ns = await namespaceWith(account);
    const headers = {
      authorization: `Bearer ${account.key}`,
      accept: 'application/json, text/event-stream',
      'content-type': 'application/json',
    };
    const prefix = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'make_function', arguments: { service: 'svc', name: 'big', code: '' } },
    }).replace(/""\}\}\}$/, '"');
    const rssBefore = process.memoryUsage().rss;
    const results: Upload[] = [];
    for (const era of ['2025-06-18', '2026-07-28']) {
      // Declared length: the answer comes before the body, which is not read.
      results.push(
        await upload(
          `/mcp/create/${ns}`,
          { ...headers, 'mcp-protocol-version': era, 'content-length': String(400 * MB) },
          { budget: 96 * MB, prefix },
        ),
      );
      // No declared length: counted while streaming and cut off at the limit.
      results.push(
        await upload(`/mcp/create/${ns}`, { ...headers, 'mcp-protocol-version': era }, { budget: 96 * MB, prefix, chunked: true }),
      );
      results.push(
        await upload(
          `/mcp/run/${ns}`,
          { ...headers, 'mcp-protocol-version': era },
          { budget: 96 * MB, prefix: prefix.replace('make_function', 'execute'), chunked: true },
        ),
      );
    }
    const growth = process.memoryUsage().rss - rssBefore;
    for (const result of results) {
      // The refusal is 413 (or, when the server closes while the client still sends, a reset).
      assert.ok(result.status === 413 || result.status === undefined, result.response.slice(0, 200));
      assert.ok(result.written < 48 * MB, `the server kept reading: ${result.written} bytes accepted`);
    }
    assert.ok(growth < 100 * MB, `server RSS grew by ${Math.round(growth / MB)} MB`);
    await healthy();
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    assert.deepEqual(await callOk(create, 'list_functions', { service: 'svc' }), []);
    await create.close();
    assert.equal((await usage(account)).executions, 0);
  });

  test('a large MCP body over the value or depth caps is refused by a scan before it is parsed; large code still fits', async () => {
    const account = await createAccount(server.url);
    const ns = await namespaceWith(account);
    const headers = {
      authorization: `Bearer ${account.key}`,
      accept: 'application/json, text/event-stream',
      'content-type': 'application/json',
    };
    const post = async (path: string, era: string, body: string) => {
      const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { ...headers, 'mcp-protocol-version': era }, body });
      return { status: response.status, body: (await response.json()) as { error?: { message: string; data?: { type?: string } } } };
    };
    const call = (name: string, args: string) =>
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${name}","arguments":${args}}}`;
    // Many small values, then text that is not JSON at all: a parse would answer "Parse error";
    // the cap error shows the scan refused the body before any parse was tried.
    const values = (count: number) => `{"code":"print(1)","input":[${'0,'.repeat(count - 1)}0, not json`;
    for (const [path, era] of [
      [`/mcp/run/${ns}`, '2025-06-18'],
      [`/mcp/run/${ns}`, '2026-07-28'],
      [`/mcp/run/${ns}?mode=tools`, '2025-06-18'],
      [`/mcp/create/${ns}`, '2026-07-28'],
    ] as const) {
      const over = await post(path, era, call('execute', values(BODY_MAX_VALUES + 1)));
      assert.equal(over.status, 413, JSON.stringify(over.body).slice(0, 300));
      assert.match(over.body.error!.message, new RegExp(`request body holds more than ${BODY_MAX_VALUES} JSON values`));
      assert.equal(over.body.error!.data?.type, 'validation_error');
      // Padded past 64 KB with a string full of brackets, commas and escaped quotes (one value),
      // then nested past the depth allowance, then not JSON.
      const pad = JSON.stringify('[{,"\\'.repeat(20_000));
      const deep = await post(path, era, call('execute', `{"code":${pad},"input":${'['.repeat(BODY_MAX_DEPTH)} not json`));
      assert.equal(deep.status, 400, JSON.stringify(deep.body).slice(0, 300));
      assert.match(deep.body.error!.message, new RegExp(`request body is nested deeper than ${BODY_MAX_DEPTH} levels`));
    }
    // Under the caps, the same malformed text is parsed, and the parse refuses it.
    const under = await post(`/mcp/run/${ns}`, '2026-07-28', call('execute', values(MAX_CHECKED_VALUES / 2)));
    assert.equal(under.status, 400);
    assert.match(under.body.error!.message, /Parse error/);
    // A function with 1 MB of code (strings with brackets, commas and quotes) is created as before.
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    const line = 'x = "[{,\\"}]" + \'[,]\'  # é😀\n';
    const code = line.repeat(Math.floor((MAX_CODE_BYTES - 200) / Buffer.byteLength(line))) + 'def main(input):\n    return {"ok": True}\n';
    await callOk(create, 'make_function', { service: 'svc', name: 'bigcode', language: 'python', code });
    await create.close();
    await healthy();
    assert.equal((await usage(account)).executions, 0);
  });

  test('account routes: a chunked body past 64 KB is refused and creates nothing', async () => {
    const account = await createAccount(server.url);
    const cookie = await sessionCookie(account);
    const before = await keyCount(account);
    const prefix = `{"name":"${'n'.repeat(100)}`;
    for (const [path, headers] of [
      ['/api/keys', { cookie, 'content-type': 'application/json' }],
      ['/api/keys', { authorization: `Bearer ${account.token}`, 'content-type': 'application/json' }],
      ['/register', { 'content-type': 'application/json' }],
      ['/login', { 'content-type': 'application/json' }],
    ] as const) {
      const result = await upload(path, headers, { budget: 8 * MB, prefix, chunked: true });
      assert.ok(result.status === 413 || result.status === undefined, `${path}: ${result.response.slice(0, 200)}`);
      assert.ok(result.written < 6 * MB, `${path}: the server kept reading: ${result.written} bytes`);
    }
    assert.equal(await keyCount(account), before);
    await healthy();
  });
});

describe('same-site request forgery on the account routes', () => {
  test('cookie requests from another origin, or not JSON, change nothing; same-origin JSON works', async () => {
    const account = await createAccount(server.url);
    const cookie = await sessionCookie(account);
    const own = `http://127.0.0.1:${port}`;
    const otherPort = port === 65535 ? 65534 : port + 1;
    const keys = (await (await fetch(`${server.url}/api/keys`, { headers: { cookie } })).json()).keys as Array<{ id: string }>;
    const before = keys.length;
    const body = JSON.stringify({ name: 'csrf' });
    const attempts: Array<[string, string, Record<string, string>, number]> = [
      // The reported case: a text/plain "simple" request from a page on another localhost port.
      ['POST', '/api/keys', { 'content-type': 'text/plain', origin: `http://localhost:${otherPort}` }, 403],
      ['POST', '/api/keys', { 'content-type': 'application/json', origin: `http://localhost:${otherPort}` }, 403],
      ['POST', '/api/keys', { 'content-type': 'application/json', origin: `http://127.0.0.1:${otherPort}` }, 403],
      ['POST', '/api/keys', { 'content-type': 'application/json', origin: 'null' }, 403],
      ['POST', '/api/keys', { 'content-type': 'text/plain' }, 415],
      ['POST', '/api/keys', { 'content-type': 'application/x-www-form-urlencoded', origin: own }, 415],
      ['POST', '/api/keys', { 'content-type': 'multipart/form-data; boundary=x', origin: own }, 415],
      ['POST', '/api/keys', { 'content-type': 'application/json', origin: own, 'sec-fetch-site': 'same-site' }, 403],
      ['POST', '/api/keys', { 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' }, 403],
      ['DELETE', `/api/keys/${keys[0]!.id}`, { origin: `http://localhost:${otherPort}` }, 403],
      ['DELETE', `/api/keys/${keys[0]!.id}`, { 'sec-fetch-site': 'same-site' }, 403],
      ['DELETE', `/api/keys/${keys[0]!.id}`, { 'content-type': 'text/plain' }, 415],
    ];
    for (const [method, path, headers, status] of attempts) {
      const response = await fetch(`${server.url}${path}`, {
        method,
        headers: { cookie, ...headers },
        ...(method === 'POST' || headers['content-type'] ? { body: method === 'POST' ? body : 'x' } : {}),
      });
      assert.equal(response.status, status, `${method} ${path} ${JSON.stringify(headers)}`);
      assert.ok((await response.json()).error, 'a JSON error');
    }
    assert.equal(await keyCount(account), before, 'no key created or revoked');

    // Login forgery (a page logging the browser into the attacker's account) is refused the same way.
    const login = JSON.stringify({ email: account.email, password: account.password });
    for (const headers of [
      { 'content-type': 'text/plain' },
      { 'content-type': 'application/json', origin: `http://localhost:${otherPort}` },
    ] as Array<Record<string, string>>) {
      const response = await fetch(`${server.url}/login`, { method: 'POST', headers, body: login });
      assert.ok(response.status === 403 || response.status === 415, `login ${JSON.stringify(headers)}: ${response.status}`);
      assert.equal(response.headers.get('set-cookie'), null);
    }
    const register = await fetch(`${server.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ email: 'csrf@example.com', password: 'long enough pw' }),
    });
    assert.equal(register.status, 415);
    assert.equal(
      (await postJson(`${server.url}/login`, { email: 'csrf@example.com', password: 'long enough pw' })).status,
      401,
      'no account was registered',
    );

    // The server's own origin, as JSON: works (with and without Origin, and as a same-origin fetch).
    for (const headers of [{ origin: own }, {}, { origin: own, 'sec-fetch-site': 'same-origin' }] as Array<Record<string, string>>) {
      const ok = await postJson(`${server.url}/api/keys`, { name: 'mine' }, { cookie, ...headers });
      assert.equal(ok.status, 201, JSON.stringify(headers));
    }
    const revoke = await fetch(`${server.url}/api/keys/${keys[0]!.id}`, { method: 'DELETE', headers: { cookie, origin: own } });
    assert.equal(revoke.status, 200);
    assert.equal(await keyCount(account), before + 3 - 1);
    await healthy();
  });
});

describe('API keys honour their scopes and namespace limit on every route', () => {
  test('/api/usage needs the read scope and a key without a namespace limit', async () => {
    const account = await createAccount(server.url);
    const ask = async (key: string) => {
      const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${key}` } });
      return { status: response.status, body: await response.json() };
    };
    const executeOnly = await ask(await createKey(server.url, account, { scopes: ['execute'] }));
    assert.equal(executeOnly.status, 403);
    assert.equal(executeOnly.body.error_type, 'forbidden');
    assert.match(executeOnly.body.error, /'read' scope/);
    const writeOnly = await ask(await createKey(server.url, account, { scopes: ['write', 'execute'] }));
    assert.equal(writeOnly.status, 403);
    const limited = await ask(await createKey(server.url, account, { namespace: 'one-ns' }));
    assert.equal(limited.status, 403);
    assert.match(limited.body.error, /limited to namespace/);
    assert.equal(limited.body.executions, undefined, 'no numbers leak');
    const reader = await ask(await createKey(server.url, account, { scopes: ['read'] }));
    assert.equal(reader.status, 200);
    assert.equal(reader.body.executions, 0);
    assert.equal((await ask(account.key)).status, 200);
    await healthy();
  });

  test('the run endpoint: a key without execute, or limited to another namespace, runs nothing and is not metered', async () => {
    const account = await createAccount(server.url);
    const ns = await namespaceWith(account);
    const other = await namespaceWith(account);
    const readKey = await createKey(server.url, account, { scopes: ['read', 'write'] });
    const elsewhere = await createKey(server.url, account, { namespace: other });
    for (const era of ['v1', 'v2'] as const) {
      for (const mode of ['', '?mode=tools']) {
        for (const key of [readKey, elsewhere]) {
          const client = await connect(`${server.url}/mcp/run/${ns}${mode}`, key, era);
          const result = await client.callTool(mode ? '_env_status' : 'execute', mode ? {} : { code: 'result = 1' });
          assert.equal(result.isError, true, `${era} ${mode} ${key === readKey ? 'read key' : 'other-namespace key'}`);
          // The run endpoint's one error shape: error (a message) with error_type beside it.
          assert.equal(JSON.parse(result.content[0]!.text!).error_type, key === readKey ? 'forbidden' : 'not_found');
          if (mode)
            assert.deepEqual(
              (await client.listTools()).tools.map((t) => t.name),
              ['_env_status'],
              'no function tools listed',
            );
          await client.close();
        }
      }
    }
    assert.equal((await usage(account)).executions, 0);
    await healthy();
  });
});

/** Writes `bytes` on a fresh connection (to `at`) and collects what comes back until the server closes or 1.5 s pass. */
async function exchange(bytes: string, at = port): Promise<string> {
  const socket = connectTcp({ host: '127.0.0.1', port: at });
  await once(socket, 'connect');
  let response = '';
  socket.on('data', (data) => (response += data.toString('latin1')));
  socket.on('error', () => undefined);
  socket.write(bytes);
  await Promise.race([once(socket, 'close'), new Promise((resolve) => setTimeout(resolve, 1500).unref())]);
  socket.destroy();
  return response;
}

const host = () => `Host: 127.0.0.1:${port}\r\n`;
const statuses = (response: string) => [...response.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe("the early refusal in Node's request event, against raw requests (each case failed before its fix)", () => {
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

  test('an upload refused for its declared size costs its client ten requests of its share: a flood of them waits for it', async () => {
    // From an address of its own: the debt is this client's, not the other tests'.
    const from = '127.0.0.3';
    const refusedBefore = server.server.services.bodiesRefusedEarly();
    const deferredBefore = server.server.services.connections().deferred;
    // Each on a new connection, the next sent once the last is answered: 30 plain requests fit in
    // a client's burst of 100, so none would wait; at ten each they are past it within 10-odd.
    const rounds = 30;
    for (let i = 0; i < rounds; i++) {
      const socket = connectTcp({ host: '127.0.0.1', port, localAddress: from });
      socket.on('error', () => undefined);
      let response = '';
      const answered = new Promise<void>((resolve) => {
        socket.on('data', (data) => {
          response += data.toString('latin1');
          if (/\r\n\r\n[\s\S]*\}/.test(response)) resolve();
        });
        socket.once('close', () => resolve());
      });
      socket.write(`POST /api/login HTTP/1.1\r\n${host()}Content-Length: ${ACCOUNT_MAX_BODY_BYTES + 1}\r\n\r\n`);
      await answered;
      socket.destroy();
      assert.deepEqual(statuses(response), [413], response.slice(0, 300));
    }
    assert.equal(server.server.services.bodiesRefusedEarly() - refusedBefore, rounds);
    assert.ok(server.server.services.connections().deferred - deferredBefore >= 1, 'no refused upload waited for its share');
    await healthy();
  });

  test("GET with a chunked body is not read on without limit (nor past the client's byte budget)", async () => {
    // 64 MB offered: far past every route's limit and the kernel's buffers: without the early 400 the server read it all.
    const { written, response } = await upload('/healthz', {}, { budget: 64 * MB, chunked: true, method: 'GET' });
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
    const send = (bytes: string) => exchange(bytes, proxiedPort);
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
