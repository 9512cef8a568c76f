// test-database: embedded, protocol shapes of the MCP endpoints (no database behaviour involved)
// Issue 12, item 4: JSON-RPC batches follow the negotiated protocol version (accepted, each message
// metered like a request of its own, under 2025-03-26; refused with a JSON-RPC error under
// 2025-06-18 and 2026-07-28), and every refusal on an MCP endpoint is a JSON-RPC error object
// (the spec's 429 quota bodies excepted; those are tested in guard-metering.test.ts).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  callOk,
  connect,
  createAccount,
  MODERN_PROTOCOL,
  parseResult,
  startTestServer,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { MCP_MAX_BODY_BYTES } from './body-limit.js';
import { MAX_HEADER_BYTES } from './connection-guard.js';
import { MAX_ENV_HEADER_DECODED_BYTES } from '../core/env-header.js';

const HELLO = 'def main(input_data):\n    return {"n": 1}\n';
const ACCEPT = 'application/json, text/event-stream';

let server: TestServer;
let account: TestAccount;
let ns: string;

before(async () => {
  server = await startTestServer();
  account = await createAccount(server.url);
  ns = `rf-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'm' });
  await callOk(create, 'make_function', { service: 'm', name: 'hello', code: HELLO });
  await create.close();
});
after(() => server.stop());

const toolsUrl = () => `${server.url}/mcp/run/${ns}?mode=tools`;

/** The JSON-RPC messages of an answer (JSON or SSE). */
async function messagesOf(response: Response): Promise<any[]> {
  const text = await response.text();
  if (!text) return [];
  if ((response.headers.get('content-type') ?? '').includes('text/event-stream')) {
    return text
      .split(/\n\n/)
      .map((event) =>
        event
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join(''),
      )
      .filter(Boolean)
      .map((data) => JSON.parse(data));
  }
  const body = JSON.parse(text);
  return Array.isArray(body) ? body : [body];
}

/** A 2025-era session opened by hand at `version`: its id. */
async function session(url: string, version: string): Promise<string> {
  const headers = { authorization: `Bearer ${account.key}`, 'content-type': 'application/json', accept: ACCEPT };
  const init = await fetch(url, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: version, capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    }),
  });
  const [answer] = await messagesOf(init);
  assert.equal(answer.result.protocolVersion, version);
  const id = init.headers.get('mcp-session-id')!;
  const versionHeader: Record<string, string> = version === '2025-03-26' ? {} : { 'mcp-protocol-version': version };
  const initialized = await fetch(url, {
    method: 'POST',
    headers: { ...headers, ...versionHeader, 'mcp-session-id': id },
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  });
  assert.equal(initialized.status, 202);
  return id;
}

async function executions(): Promise<number> {
  const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
  return ((await response.json()) as any).executions;
}

function assertJsonRpcRefusal(body: any, what: string): void {
  assert.equal(body?.jsonrpc, '2.0', `${what}: ${JSON.stringify(body)}`);
  assert.equal(body.id, null, what);
  assert.equal(typeof body.error?.code, 'number', what);
  assert.equal(typeof body.error?.message, 'string', what);
  assert.equal(typeof body.error?.data?.type, 'string', `${what}: data.type, the error type (README "Refusals are JSON-RPC errors")`);
  assert.equal(body.result, undefined, what);
}

describe('JSON-RPC batches follow the negotiated protocol version', () => {
  test('2025-03-26: a batch of two tools/call and a ping is served, each call metered once', async () => {
    const id = await session(toolsUrl(), '2025-03-26');
    const before = await executions();
    const response = await fetch(toolsUrl(), {
      method: 'POST',
      headers: { authorization: `Bearer ${account.key}`, 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': id },
      body: JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'm__hello', arguments: {} } },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'm__hello', arguments: {} } },
        { jsonrpc: '2.0', id: 3, method: 'ping' },
        { jsonrpc: '2.0', method: 'notifications/roots/list_changed' },
      ]),
    });
    assert.equal(response.status, 200);
    const answers = (await messagesOf(response)).filter((m) => m.id !== undefined).sort((a, b) => a.id - b.id);
    assert.deepEqual(
      answers.map((m) => m.id),
      [1, 2, 3],
    );
    for (const call of answers.slice(0, 2)) assert.deepEqual(JSON.parse(call.result.content[0].text), { n: 1 }, JSON.stringify(call));
    assert.deepEqual(answers[2].result, {});
    assert.equal((await executions()) - before, 2);
  });

  test('2025-03-26: a batch of notifications only is accepted (202); initialize in a batch and an empty batch are refused', async () => {
    const id = await session(toolsUrl(), '2025-03-26');
    const post = (body: unknown) =>
      fetch(toolsUrl(), {
        method: 'POST',
        headers: { authorization: `Bearer ${account.key}`, 'content-type': 'application/json', accept: ACCEPT, 'mcp-session-id': id },
        body: JSON.stringify(body),
      });
    assert.equal((await post([{ jsonrpc: '2.0', method: 'notifications/roots/list_changed' }])).status, 202);
    for (const body of [
      [],
      [
        {
          jsonrpc: '2.0',
          id: 9,
          method: 'initialize',
          params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
        },
      ],
    ]) {
      const refused = await post(body);
      assert.equal(refused.status, 400);
      assertJsonRpcRefusal(await refused.json(), JSON.stringify(body));
    }
  });

  for (const version of ['2025-06-18', MODERN_PROTOCOL]) {
    test(`${version}: a batch ([ping, ping] and [tools/call, ping]) is refused with a JSON-RPC error, nothing metered`, async () => {
      const headers: Record<string, string> = {
        authorization: `Bearer ${account.key}`,
        'content-type': 'application/json',
        accept: ACCEPT,
        'mcp-protocol-version': version,
      };
      if (version !== MODERN_PROTOCOL) headers['mcp-session-id'] = await session(toolsUrl(), version);
      const before = await executions();
      for (const batch of [
        [
          { jsonrpc: '2.0', id: 1, method: 'ping' },
          { jsonrpc: '2.0', id: 2, method: 'ping' },
        ],
        [
          { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'm__hello', arguments: {} } },
          { jsonrpc: '2.0', id: 2, method: 'ping' },
        ],
      ]) {
        const response = await fetch(toolsUrl(), { method: 'POST', headers, body: JSON.stringify(batch) });
        assert.equal(response.status, 400);
        const body = (await response.json()) as any;
        assertJsonRpcRefusal(body, version);
        assert.equal(body.error.code, -32600);
        assert.match(body.error.message, /batch/i);
      }
      if (version !== MODERN_PROTOCOL) {
        // The session negotiated 2025-06-18: a batch without the header is refused as well.
        const { 'mcp-protocol-version': _omitted, ...withoutHeader } = headers;
        const response = await fetch(toolsUrl(), {
          method: 'POST',
          headers: withoutHeader,
          body: JSON.stringify([
            { jsonrpc: '2.0', id: 1, method: 'ping' },
            { jsonrpc: '2.0', id: 2, method: 'ping' },
          ]),
        });
        assert.equal(response.status, 400);
        assert.match(((await response.json()) as any).error.message, /2025-06-18/);
      }
      assert.equal(await executions(), before);
    });
  }
});

describe('2025 era: an answer nothing can precede is JSON, one body with its length', () => {
  const post = (url: string, id: string, version: string, body: unknown) =>
    fetch(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${account.key}`,
        'content-type': 'application/json',
        accept: ACCEPT,
        'mcp-session-id': id,
        ...(version === '2025-03-26' ? {} : { 'mcp-protocol-version': version }),
      },
      body: JSON.stringify(body),
    });
  const call = (id: number, meta?: Record<string, unknown>) => ({
    jsonrpc: '2.0',
    id,
    method: 'tools/call',
    params: { name: 'm__hello', arguments: {}, ...(meta ? { _meta: meta } : {}) },
  });

  test('tools/call, tools/list and ping on the run endpoint, tools/list on the create endpoint; with a progressToken, an SSE stream; a 2025-03-26 batch of both is answered whole', async () => {
    const createUrl = `${server.url}/mcp/create/${ns}`;
    for (const version of ['2025-03-26', '2025-06-18']) {
      const run = await session(toolsUrl(), version);
      const create = await session(createUrl, version);
      for (const [what, url, id, body] of [
        ['tools/call', toolsUrl(), run, call(7)],
        ['tools/list', toolsUrl(), run, { jsonrpc: '2.0', id: 8, method: 'tools/list' }],
        ['ping', toolsUrl(), run, { jsonrpc: '2.0', id: 9, method: 'ping' }],
        ['create tools/list', createUrl, create, { jsonrpc: '2.0', id: 10, method: 'tools/list' }],
      ] as const) {
        const response = await post(url, id, version, body);
        assert.equal(response.status, 200, `${version} ${what}`);
        assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${version} ${what}`);
        const text = await response.text();
        assert.equal(response.headers.get('content-length'), String(Buffer.byteLength(text)), `${version} ${what}: its length`);
        assert.equal(JSON.parse(text).id, (body as { id: number }).id, `${version} ${what}`);
      }
      // A client asking for progress gets the stream that can carry it (cancel.test.ts: progress arrives).
      const streamed = await post(toolsUrl(), run, version, call(11, { progressToken: 'p1' }));
      assert.match(streamed.headers.get('content-type') ?? '', /^text\/event-stream/, `${version} with a progressToken`);
      const [answer] = (await messagesOf(streamed)).filter((m) => m.id === 11);
      assert.deepEqual(JSON.parse(answer.result.content[0].text), { n: 1 });
    }
    const id = await session(toolsUrl(), '2025-03-26');
    const batch = await post(toolsUrl(), id, '2025-03-26', [call(1), { jsonrpc: '2.0', id: 2, method: 'ping' }]);
    // A batch's answers still go back on one stream as they come (mcp-batch.ts), its parts' answers JSON or SSE.
    assert.deepEqual((await messagesOf(batch)).map((m) => m.id).sort(), [1, 2]);
    const progressBatch = await post(toolsUrl(), id, '2025-03-26', [call(3, { progressToken: 7 }), call(4)]);
    assert.deepEqual((await messagesOf(progressBatch)).map((m) => m.id).sort(), [3, 4]);
  });
});

describe('every refusal on an MCP endpoint is a JSON-RPC error object', () => {
  test('authentication, namespace, mode, body, content type, method, session, origin, path', async () => {
    const stranger = await createAccount(server.url);
    const id = await session(toolsUrl(), '2025-06-18');
    const auth = { authorization: `Bearer ${account.key}` };
    const json = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': '2025-06-18' };
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    const cases: Array<[string, string, RequestInit, number]> = [
      ['no API key', toolsUrl(), { method: 'POST', headers: json, body: ping }, 401],
      [
        'a wrong API key',
        toolsUrl(),
        { method: 'POST', headers: { ...json, authorization: `Bearer mcpw_${'0'.repeat(64)}` }, body: ping },
        401,
      ],
      [
        'an invalid namespace name',
        `${server.url}/mcp/run/Not_A_Namespace`,
        { method: 'POST', headers: { ...json, ...auth }, body: ping },
        404,
      ],
      ['an unknown mode', `${server.url}/mcp/run/${ns}?mode=nope`, { method: 'POST', headers: { ...json, ...auth }, body: ping }, 400],
      ['bad JSON', toolsUrl(), { method: 'POST', headers: { ...json, ...auth }, body: '{"jsonrpc":' }, 400],
      [
        'a body over the limit',
        toolsUrl(),
        { method: 'POST', headers: { ...json, ...auth }, body: 'x'.repeat(MCP_MAX_BODY_BYTES + 1) },
        413,
      ],
      [
        'the wrong content type',
        toolsUrl(),
        { method: 'POST', headers: { ...json, ...auth, 'content-type': 'text/plain' }, body: ping },
        415,
      ],
      ['a method the endpoint does not serve', toolsUrl(), { method: 'PUT', headers: { ...json, ...auth }, body: ping }, 405],
      ['GET without a session', toolsUrl(), { headers: { ...auth, accept: 'text/event-stream' } }, 400],
      ['DELETE of an unknown session', toolsUrl(), { method: 'DELETE', headers: { ...auth, 'mcp-session-id': 'nope' } }, 404],
      [
        "another account's session",
        toolsUrl(),
        { method: 'POST', headers: { ...json, authorization: `Bearer ${stranger.key}`, 'mcp-session-id': id }, body: ping },
        404,
      ],
      ['a foreign Origin', toolsUrl(), { method: 'POST', headers: { ...json, ...auth, origin: 'https://evil.example' }, body: ping }, 403],
      [
        'a path under /mcp/ that is no endpoint',
        `${server.url}/mcp/run/${ns}/extra`,
        { method: 'POST', headers: { ...json, ...auth }, body: ping },
        404,
      ],
      [
        'headers over 48 KB',
        toolsUrl(),
        { method: 'POST', headers: { ...json, ...auth, 'x-mcpworks-env': 'A'.repeat(MAX_HEADER_BYTES) }, body: ping },
        431,
      ],
      ['no API key on the create endpoint', `${server.url}/mcp/create/${ns}`, { method: 'POST', headers: json, body: ping }, 401],
    ];
    const failures: string[] = [];
    for (const [what, url, init, status] of cases) {
      const response = await fetch(url, init);
      assert.equal(response.status, status, what);
      assert.match(response.headers.get('content-type') ?? '', /application\/json/, what);
      const body = await response.json();
      try {
        assertJsonRpcRefusal(body, what);
      } catch {
        failures.push(`${what}: ${JSON.stringify(body)}`);
      }
    }
    assert.deepEqual(failures, []);
    // The account routes keep their own shape.
    const login = await fetch(`${server.url}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    assert.equal(((await login.json()) as any).error_type, 'validation_error');
  });

  test('a missing or refused key gets a Bearer challenge naming API keys and the resource metadata; OAuth client registration at /register is refused as OAuth, never an account', async () => {
    const json = { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': '2025-06-18' };
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' });
    const metadataUrl = `${server.url}/.well-known/oauth-protected-resource/mcp/run/${ns}`;
    for (const [what, headers, error] of [
      ['no key', json, ''],
      ['a wrong key', { ...json, authorization: `Bearer mcpw_${'0'.repeat(64)}` }, ' error="invalid_token",'],
    ] as const) {
      const response = await fetch(toolsUrl(), { method: 'POST', headers, body: ping });
      assert.equal(response.status, 401, what);
      const challenge = response.headers.get('www-authenticate') ?? '';
      assert.ok(challenge.startsWith(`Bearer realm="mcpworks",${error} error_description="`), `${what}: ${challenge}`);
      assert.match(challenge, /take an API key \(send Authorization: Bearer mcpw_\.\.\..*or an OAuth sign-in/, what);
      assert.ok(challenge.endsWith(`resource_metadata="${metadataUrl}"`), `${what}: ${challenge}`);
      assert.match((await response.json()).error.message, /API key/, what);
    }
    const metadata = await fetch(metadataUrl);
    assert.equal(metadata.status, 200);
    const document = (await metadata.json()) as Record<string, unknown>;
    assert.equal(document.resource, `${server.url}/mcp/run/${ns}`);
    assert.deepEqual(document.bearer_methods_supported, ['header']);
    assert.deepEqual(document.authorization_servers, [server.url], 'the sign-in is this server (oauth.test.ts)');
    assert.equal((await fetch(`${server.url}/.well-known/oauth-protected-resource/mcp/run/Not_A_Namespace`)).status, 404);

    // What mcp-remote sent to /register when discovery found no authorization server: the sign-up path.
    const email = `dcr-${Math.random().toString(36).slice(2, 10)}@example.com`;
    const registration = {
      redirect_uris: ['http://localhost:8855/oauth/callback'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      client_name: 'MCP CLI Proxy',
    };
    for (const path of ['/register', '/api/register']) {
      for (const body of [registration, { ...registration, email, password: 'correct horse battery' }]) {
        const response = await fetch(`${server.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        assert.equal(response.status, 400, path);
        assert.equal(response.headers.get('cache-control'), 'no-store');
        const answer = (await response.json()) as { error: string; error_description: string };
        assert.equal(answer.error, 'invalid_client_metadata', path);
        assert.match(answer.error_description, /OAuth clients register at \/oauth\/register/, path);
      }
    }
    const signIn = await fetch(`${server.url}/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'correct horse battery' }),
    });
    assert.equal(signIn.status, 401, 'no account was made by a registration request');
  });
});

describe('a call the MCP layer refuses after its admission', () => {
  async function active(): Promise<number> {
    const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
    return ((await response.json()) as any).concurrency.active;
  }

  test('frees its slot and its quota unit before the refusal is answered (2025 and 2026 eras)', async () => {
    const id = await session(toolsUrl(), '2025-06-18');
    const auth = { authorization: `Bearer ${account.key}`, 'content-type': 'application/json' };
    const call = (extra: Record<string, unknown> = {}) =>
      JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'm__hello', arguments: {}, ...extra } });
    const modernMeta = {
      _meta: {
        'io.modelcontextprotocol/protocolVersion': MODERN_PROTOCOL,
        'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
        'io.modelcontextprotocol/clientCapabilities': {},
      },
    };
    const cases: Array<[string, RequestInit]> = [
      [
        '2025-06-18: no text/event-stream in Accept',
        {
          method: 'POST',
          headers: { ...auth, accept: 'application/json', 'mcp-protocol-version': '2025-06-18', 'mcp-session-id': id },
          body: call(),
        },
      ],
      [
        '2026-07-28: an Mcp-Method header that does not match the body',
        {
          method: 'POST',
          headers: { ...auth, accept: ACCEPT, 'mcp-protocol-version': MODERN_PROTOCOL, 'mcp-method': 'tools/list', 'mcp-name': 'm__hello' },
          body: call(modernMeta),
        },
      ],
      [
        '2026-07-28: an Mcp-Name header that does not match the body',
        {
          method: 'POST',
          headers: { ...auth, accept: ACCEPT, 'mcp-protocol-version': MODERN_PROTOCOL, 'mcp-method': 'tools/call', 'mcp-name': 'm__other' },
          body: call(modernMeta),
        },
      ],
    ];
    for (const [what, init] of cases) {
      const before = await executions();
      const response = await fetch(toolsUrl(), init);
      const text = await response.text();
      process.stdout.write(`# ${what}: ${response.status} ${text.slice(0, 200)}\n`);
      assert.equal(await active(), 0, `${what}: the slot is free when the refusal arrives`);
      assert.equal(await executions(), before, `${what}: nothing counted`);
    }
  });
});

describe('X-MCPWorks-Env at its documented size', () => {
  test('32 KB decoded (43,692 bytes of base64) reaches the function in every era; headers over 48 KB are a 431 JSON-RPC error', async () => {
    const names = ['E0', 'E1', 'E2', 'E3', 'E4'];
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_function', {
      service: 'm',
      name: 'envy',
      optional_env: names,
      code: `import os\n\ndef main(input_data):\n    return sum(len(os.environ.get(n, "")) for n in ${JSON.stringify(names)})\n`,
    });
    await create.close();
    // Four 8,000-byte values and a fifth that brings the JSON to exactly the documented 32 KB.
    const env: Record<string, string> = Object.fromEntries(names.map((n, i) => [n, i < 4 ? String.fromCharCode(97 + i).repeat(8000) : '']));
    env.E4 = 'e'.repeat(MAX_ENV_HEADER_DECODED_BYTES - JSON.stringify(env).length);
    const json = JSON.stringify(env);
    assert.equal(Buffer.byteLength(json), MAX_ENV_HEADER_DECODED_BYTES);
    const header = Buffer.from(json).toString('base64');
    assert.equal(header.length, 43_692);
    const total = Object.values(env).reduce((n, v) => n + v.length, 0);
    for (const era of ['v1', 'v2-legacy', 'v2'] as const) {
      const client = await connect(toolsUrl(), account.key, era, { 'x-mcpworks-env': header });
      try {
        const result = await client.callTool('m__envy', {});
        assert.equal(result.isError, undefined, `${era}: ${JSON.stringify(result)}`);
        assert.equal(parseResult(result), total, era);
      } finally {
        await client.close();
      }
    }
    // Just over the header limit: Node's parser refuses it before any route, with a JSON-RPC body.
    const response = await fetch(toolsUrl(), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${account.key}`,
        'content-type': 'application/json',
        accept: ACCEPT,
        'x-mcpworks-env': 'A'.repeat(MAX_HEADER_BYTES - 200),
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    assert.equal(response.status, 431);
    const body = (await response.json()) as any;
    assertJsonRpcRefusal(body, 'headers over the limit');
    assert.match(body.error.message, /48 KB at most/);
  });
});
