// test-database: embedded, HTTP account routes; nothing here races or depends on the database
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, createAccount, createKey, postJson, startTestServer, type TestServer } from '../test-support/harness.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

const get = async (path: string, headers: Record<string, string> = {}) => {
  const response = await fetch(`${server.url}${path}`, { headers });
  return { status: response.status, body: await response.json() };
};

describe('health', () => {
  test('GET /healthz answers 200 with JSON', async () => {
    const health = await get('/healthz');
    assert.equal(health.status, 200);
    assert.equal(health.body.status, 'ok');
  });
  test('unknown routes are JSON 404s', async () => {
    const missing = await get('/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error_type, 'not_found');
  });
});

describe('register and login', () => {
  test('register creates a pro_trial account; duplicates and bad input are 4xx JSON', async () => {
    const created = await postJson(`${server.url}/register`, { email: 'Alice@Example.com', password: 'long enough pw' });
    assert.equal(created.status, 201);
    assert.match(created.body.account_id, /^[0-9a-f-]{36}$/);
    assert.equal(created.body.tier, 'pro_trial');

    const duplicate = await postJson(`${server.url}/register`, { email: 'alice@example.com', password: 'long enough pw' });
    assert.equal(duplicate.status, 409);
    assert.equal(duplicate.body.error_type, 'conflict');

    for (const [body, field] of [
      [{ email: 'not-an-email', password: 'long enough pw' }, 'email'],
      [{ email: 'b@example.com', password: 'short' }, 'password'],
      [{ email: 'b@example.com' }, 'password'],
      [{ email: 'nul\u0000@example.com', password: 'long enough pw' }, 'email'],
    ] as const) {
      const bad = await postJson(`${server.url}/register`, body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.error_type, 'validation_error');
      assert.equal(bad.body.field, field);
    }
    const notJson = await postJson(`${server.url}/register`, '{oops');
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body.error_type, 'validation_error');
    assert.doesNotMatch(JSON.stringify(notJson.body), /at .*\.(js|ts)/, 'no stack trace');
  });

  test('login returns a token and a session cookie; a wrong password is 401', async () => {
    await postJson(`${server.url}/register`, { email: 'bob@example.com', password: 'bobs password' });
    const ok = await postJson(`${server.url}/login`, { email: 'bob@example.com', password: 'bobs password' });
    assert.equal(ok.status, 200);
    assert.match(ok.body.token, /^[0-9a-f]{64}$/);
    const cookie = ok.headers.get('set-cookie') ?? '';
    assert.match(cookie, /mcpworks_session=[0-9a-f]{64}/);
    assert.match(cookie, /HttpOnly/i);

    const wrong = await postJson(`${server.url}/login`, { email: 'bob@example.com', password: 'not bobs password' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error_type, 'unauthorized');
    const unknown = await postJson(`${server.url}/login`, { email: 'nobody@example.com', password: 'whatever pw' });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.body.error, wrong.body.error, 'same answer for unknown email and wrong password');
  });
});

describe('API keys', () => {
  test('create, list (never the raw key), revoke; cookie and bearer both authenticate', async () => {
    const account = await createAccount(server.url);
    assert.match(account.key, /^mcpw_[0-9a-f]{64}$/);
    const login = await postJson(`${server.url}/login`, { email: account.email, password: account.password });
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;

    const created = await postJson(`${server.url}/api/keys`, { name: 'ci' }, { cookie });
    assert.equal(created.status, 201);
    assert.deepEqual(Object.keys(created.body).sort(), ['expires_at', 'id', 'key', 'name', 'namespace', 'prefix', 'scopes']);
    assert.equal(created.body.key.startsWith(created.body.prefix), true);
    assert.deepEqual(created.body.scopes, ['read', 'write', 'execute']);

    const listed = await get('/api/keys', { authorization: `Bearer ${account.token}` });
    assert.equal(listed.status, 200);
    assert.equal(listed.body.keys.length, 2);
    assert.doesNotMatch(JSON.stringify(listed.body), /mcpw_[0-9a-f]{64}/, 'raw keys never listed');

    // The key works, then stops working on the very next request after revocation.
    const client = await connect(`${server.url}/mcp/create/anything`, created.body.key, 'v1');
    await client.listTools();
    const revoke = await fetch(`${server.url}/api/keys/${created.body.id}`, { method: 'DELETE', headers: { cookie } });
    assert.equal(revoke.status, 200);
    await assert.rejects(client.listTools());
    const again = await fetch(`${server.url}/api/keys/${created.body.id}`, { method: 'DELETE', headers: { cookie } });
    assert.equal(again.status, 404);
    const nul = await fetch(`${server.url}/api/keys/%00`, { method: 'DELETE', headers: { cookie } });
    assert.equal(nul.status, 404);
  });

  test('key routes need a login session, not an API key', async () => {
    const account = await createAccount(server.url);
    const noAuth = await postJson(`${server.url}/api/keys`, { name: 'x' });
    assert.equal(noAuth.status, 401);
    const withApiKey = await get('/api/keys', { authorization: `Bearer ${account.key}` });
    assert.equal(withApiKey.status, 401);
  });

  test('bad key options are 400s', async () => {
    const account = await createAccount(server.url);
    const auth = { authorization: `Bearer ${account.token}` };
    for (const body of [
      { scopes: ['admin'] },
      { scopes: [] },
      { namespace: 'Bad NS' },
      { expires_at: 'tomorrow' },
      { expires_at: '2001-01-01T00:00:00Z' },
      { expires_in_days: -1 },
      { name: '' },
    ]) {
      const bad = await postJson(`${server.url}/api/keys`, body, auth);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.error_type, 'validation_error');
    }
  });

  test('an expired key is refused', async () => {
    const account = await createAccount(server.url);
    // 4 s: long enough that the first use comes before the expiry even on a loaded machine.
    const key = await createKey(server.url, account, { expires_in_days: 4 / 86400 });
    const created = Date.now();
    const response = () =>
      fetch(`${server.url}/mcp/create/demo`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      });
    assert.notEqual((await response()).status, 401);
    // Until past the expiry, which the server set before `created`.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, created + 4100 - Date.now())));
    const expired = await response();
    assert.equal(expired.status, 401);
    // A refusal on an MCP endpoint is a JSON-RPC error, its type in error.data.
    assert.equal((await expired.json()).error.data.type, 'unauthorized');
  });

  test('another account cannot revoke my key (not found, not forbidden)', async () => {
    const mine = await createAccount(server.url);
    const theirs = await createAccount(server.url);
    const listed = await get('/api/keys', { authorization: `Bearer ${mine.token}` });
    const response = await fetch(`${server.url}/api/keys/${listed.body.keys[0].id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${theirs.token}` },
    });
    assert.equal(response.status, 404);
  });
});
