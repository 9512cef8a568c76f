// test-database: embedded, HTTP account routes; nothing here races or depends on the database
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import { callOk, connect, createAccount, createKey, postJson, startTestServer, type TestServer } from '../test-support/harness.js';

let server: TestServer;
// A built dashboard's shape (scripts/build-web.mjs): what is served, not how it was built.
const dashboardDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-dashboard-'));
const DASHBOARD_SCRIPT = 'app-TEST1234.js';
before(async () => {
  mkdirSync(path.join(dashboardDir, 'assets'));
  writeFileSync(
    path.join(dashboardDir, 'index.html'),
    `<!doctype html><title>MCPWorks</title><script type="module" src="/assets/${DASHBOARD_SCRIPT}"></script>`,
  );
  writeFileSync(path.join(dashboardDir, 'assets', DASHBOARD_SCRIPT), 'console.log("dashboard")');
  // once1: one execution a month (the dashboard's try-it is refused past it like any call).
  server = await startTestServer({ dashboardDir, tiers: applyTierOverrides(JSON.stringify({ once1: { monthly_executions: 1 } })) });
});
after(async () => {
  await server?.stop();
  rmSync(dashboardDir, { recursive: true, force: true });
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
    assert.equal(nul.status, 400, 'a NUL in the path names nothing');
    assert.equal(((await nul.json()) as { error_type: string }).error_type, 'validation_error');
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

describe('browser session (the dashboard)', () => {
  const cookieOf = (headers: Headers) => (headers.get('set-cookie') ?? '').split(';')[0]!;
  const signIn = async (email: string, password: string) => {
    const login = await postJson(`${server.url}/api/login`, { email, password, session: 'cookie' });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    return { cookie: cookieOf(login.headers), setCookie: login.headers.get('set-cookie') ?? '', body: login.body };
  };
  const keysWith = (cookie: string) => fetch(`${server.url}/api/keys`, { headers: { cookie } });

  test('/, /login, /register and the other pages serve the app; API routes and unknown paths keep their JSON', async () => {
    for (const page of ['/', '/login', '/register', '/keys', '/connect', '/functions', '/executions', '/agents', '/usage', '/account']) {
      const response = await fetch(`${server.url}${page}`);
      assert.equal(response.status, 200, page);
      assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
      assert.match(await response.text(), new RegExp(DASHBOARD_SCRIPT));
      // Own-origin scripts only, never framed.
      assert.match(response.headers.get('content-security-policy') ?? '', /script-src 'self'.*frame-ancestors 'none'/);
      assert.equal(response.headers.get('x-frame-options'), 'DENY');
    }
    const script = await fetch(`${server.url}/assets/${DASHBOARD_SCRIPT}`);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('content-type') ?? '', /^text\/javascript/);
    for (const missing of ['/assets/nope.js', '/assets/../index.html', '/dashboard', '/keys/x']) {
      const response = await fetch(`${server.url}${missing}`);
      assert.equal(response.status, 404, missing);
      assert.equal((await response.json()).error_type, 'not_found');
    }
    // The same paths' POSTs stay the JSON account API.
    const bad = await postJson(`${server.url}/login`, { email: 'nobody@example.com', password: 'whatever pw' });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error_type, 'unauthorized');
  });

  test('the cookie is HttpOnly and SameSite=Strict; asked for the cookie alone, the answer holds no token', async () => {
    const account = await createAccount(server.url);
    const { setCookie, body } = await signIn(account.email, account.password);
    assert.match(setCookie, /mcpworks_session=[0-9a-f]{64}/);
    assert.match(setCookie, /HttpOnly/i);
    assert.match(setCookie, /SameSite=Strict/i);
    assert.match(setCookie, /Path=\//);
    assert.equal(body.token, undefined);
    assert.equal(body.account_id, account.accountId);
    const me = await fetch(`${server.url}/api/account`, { headers: { cookie: cookieOf(new Headers({ 'set-cookie': setCookie })) } });
    assert.deepEqual(await me.json(), { account_id: account.accountId, email: account.email, tier: 'pro_trial' });
  });

  test('a cross-site POST with the cookie is refused and changes nothing', async () => {
    const account = await createAccount(server.url);
    const { cookie } = await signIn(account.email, account.password);
    const before = (await (await keysWith(cookie)).json()).keys.length;
    const forged: Record<string, string>[] = [
      // A page on another site (or another port of this host: another origin, the same site).
      { origin: 'http://evil.example', 'content-type': 'application/json' },
      { origin: server.url.replace(/:(\d+)$/, (_m, port) => `:${Number(port) + 1}`), 'content-type': 'application/json' },
      { 'sec-fetch-site': 'cross-site', 'content-type': 'application/json' },
      { 'sec-fetch-site': 'same-site', 'content-type': 'application/json' },
      // A plain HTML form (no preflight) posting to the API.
      { 'content-type': 'application/x-www-form-urlencoded' },
      { 'content-type': 'text/plain' },
    ];
    for (const headers of forged) {
      for (const path of ['/api/keys', '/api/logout', '/api/password']) {
        const response = await fetch(`${server.url}${path}`, {
          method: 'POST',
          headers: { cookie, ...headers },
          body: JSON.stringify({ name: 'forged', current_password: account.password, new_password: 'taken over pw' }),
        });
        assert.ok(response.status === 403 || response.status === 415, `${path} ${JSON.stringify(headers)}: ${response.status}`);
      }
    }
    const revoke = await fetch(`${server.url}/api/keys/${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}`, {
      method: 'DELETE',
      headers: { cookie, origin: 'http://evil.example' },
    });
    assert.equal(revoke.status, 403);
    // Nothing changed: the same keys, the session alive, the password the same.
    const after = await keysWith(cookie);
    assert.equal(after.status, 200);
    assert.equal((await after.json()).keys.length, before);
    await signIn(account.email, account.password);
  });

  test('logout ends the session on the server: the logged-out cookie is refused after', async () => {
    const account = await createAccount(server.url);
    const { cookie } = await signIn(account.email, account.password);
    assert.equal((await keysWith(cookie)).status, 200);
    const out = await fetch(`${server.url}/api/logout`, {
      method: 'POST',
      headers: { cookie, origin: server.url, 'content-type': 'application/json' },
    });
    assert.equal(out.status, 200);
    assert.match(out.headers.get('set-cookie') ?? '', /mcpworks_session=;.*Max-Age=0/i, 'the browser drops the cookie');
    // A copy of the cookie kept (stolen, or a browser that ignored the deletion) no longer works.
    const reused = await keysWith(cookie);
    assert.equal(reused.status, 401);
    assert.equal((await fetch(`${server.url}/api/account`, { headers: { cookie } })).status, 401);
    // The login token of the JSON API (the same session kind) ends the same way.
    const token = account.token;
    const bearerOut = await postJson(`${server.url}/api/logout`, {}, { authorization: `Bearer ${token}` });
    assert.equal(bearerOut.status, 200);
    assert.equal((await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
  });

  test('a password change needs the current password and ends every session, the asking one replaced by a new one', async () => {
    const account = await createAccount(server.url);
    const here = await signIn(account.email, account.password);
    const elsewhere = await signIn(account.email, account.password);
    const change = (body: unknown) => postJson(`${server.url}/api/password`, body, { cookie: here.cookie, origin: server.url });

    const wrong = await change({ current_password: 'not the password', new_password: 'a new long password' });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.field, 'current_password');
    const short = await change({ current_password: account.password, new_password: 'short' });
    assert.equal(short.status, 400);
    assert.equal(short.body.field, 'new_password');
    assert.equal((await keysWith(elsewhere.cookie)).status, 200, 'a refused change ends nothing');

    const ok = await change({ current_password: account.password, new_password: 'a new long password' });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { changed: true, sessions_ended: true }, 'a browser gets no token in the answer');
    assert.equal((await keysWith(elsewhere.cookie)).status, 401, 'the other session ended');
    assert.equal((await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${account.token}` } })).status, 401);
    assert.equal((await keysWith(here.cookie)).status, 401, "a stolen copy of the asking session's token ends too");
    const renewed = cookieOf(ok.headers);
    assert.notEqual(renewed, here.cookie);
    assert.match(ok.headers.get('set-cookie') ?? '', /HttpOnly.*SameSite=Strict|SameSite=Strict.*HttpOnly/i);
    assert.equal((await keysWith(renewed)).status, 200, 'the browser goes on with its new session');
    const old = await postJson(`${server.url}/api/login`, { email: account.email, password: account.password });
    assert.equal(old.status, 401);
    await signIn(account.email, 'a new long password');
    // A client holding its login token as a Bearer gets the new token in the answer.
    const bearer = await postJson(`${server.url}/api/login`, { email: account.email, password: 'a new long password' });
    const byToken = await postJson(
      `${server.url}/api/password`,
      { current_password: 'a new long password', new_password: 'a third long password' },
      { authorization: `Bearer ${bearer.body.token}`, origin: server.url },
    );
    assert.equal(byToken.status, 200, JSON.stringify(byToken.body));
    assert.match(byToken.body.token, /^[0-9a-f]{64}$/);
    assert.equal((await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${bearer.body.token}` } })).status, 401);
    assert.equal((await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${byToken.body.token}` } })).status, 200);
    // API keys are not sessions: they keep working (revoke them on the keys page).
    const client = await connect(`${server.url}/mcp/create/anything`, account.key, 'v2');
    await client.listTools();
    await client.close();
  });

  test('no secret in a page or an error: passwords, tokens and keys are never echoed', async () => {
    const account = await createAccount(server.url);
    const { cookie } = await signIn(account.email, account.password);
    const token = cookie.split('=')[1]!;
    const secrets = [account.password, token, account.key, 'a typed wrong password'];
    const answers: string[] = [];
    const record = async (response: Response) => answers.push(`${[...response.headers].join('\n')}\n${await response.text()}`);
    for (const page of ['/', '/keys', '/account']) await record(await fetch(`${server.url}${page}`, { headers: { cookie } }));
    for (const [path, body] of [
      ['/api/login', { email: account.email, password: 'a typed wrong password' }],
      ['/api/register', { email: account.email, password: account.password }],
      ['/api/password', { current_password: 'a typed wrong password', new_password: account.password }],
      ['/api/keys', { name: account.password, scopes: ['root'] }],
    ] as const) {
      await record(
        await fetch(`${server.url}${path}`, {
          method: 'POST',
          headers: { cookie, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        }),
      );
    }
    await record(await fetch(`${server.url}/api/keys`, { headers: { cookie } }));
    for (const answer of answers) {
      for (const secret of secrets) assert.ok(!answer.includes(secret), `a secret in: ${answer.slice(0, 200)}`);
      assert.doesNotMatch(answer, /at .*\.(js|ts):\d+/, 'no stack trace');
    }
  });
});

describe('dashboard: functions and executions (session routes)', () => {
  const V1 = 'def main(input_data):\n    return {"doubled": input_data["x"] * 2}\n';
  const V2 = 'def main(input_data):\n    return {"tripled": input_data["x"] * 3}\n';
  /** An account whose namespace `ns` has service `svc` with `double` at versions 1 and 2. */
  const owner = async (ns: string) => {
    const account = await createAccount(server.url);
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    try {
      await callOk(create, 'make_namespace', { name: ns });
      await callOk(create, 'make_service', { name: 'svc' });
      await callOk(create, 'make_function', {
        service: 'svc',
        name: 'double',
        code: V1,
        tags: ['math'],
        input_schema: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] },
      });
      await callOk(create, 'update_function', { service: 'svc', name: 'double', code: V2 });
    } finally {
      await create.close();
    }
    return { account, auth: { authorization: `Bearer ${account.token}` } };
  };
  const getAs = async (path: string, headers: Record<string, string>) => {
    const response = await fetch(`${server.url}${path}`, { headers });
    return { status: response.status, body: await response.json() };
  };
  const usage = async (headers: Record<string, string>) => (await getAs('/api/usage', headers)).body.executions as number;

  test("tree, function and versions; another account's namespace, function and executions are not found; bad input is a 400", async () => {
    const a = await owner('dash-a');
    const b = await owner('dash-b');
    const tree = await getAs('/api/functions', a.auth);
    assert.equal(tree.status, 200);
    assert.deepEqual(
      tree.body.namespaces.map((n: any) => [
        n.name,
        n.services.map((s: any) => [s.name, s.functions.map((f: any) => [f.name, f.active_version, f.tags])]),
      ]),
      [['dash-a', [['svc', [['double', 2, ['math']]]]]]],
    );
    const fn = await getAs('/api/functions/dash-a/svc/double', a.auth);
    assert.equal(fn.status, 200);
    assert.equal(fn.body.code, V2);
    assert.equal(fn.body.locked, false);
    assert.deepEqual(fn.body.input_schema.required, ['x']);
    assert.deepEqual(fn.body.versions.map((v: any) => v.version).sort(), [1, 2]);
    assert.equal((await getAs('/api/functions/dash-a/svc/double?version=1', a.auth)).body.code, V1);
    // Another account's namespace, function, executions: not found, never forbidden, with nothing of theirs.
    for (const path of [
      '/api/functions/dash-b/svc/double',
      '/api/functions/dash-b/svc/double?version=1',
      '/api/executions?namespace=dash-b',
      '/api/security-events?namespace=dash-b',
    ]) {
      const other = await getAs(path, a.auth);
      assert.equal(other.status, 404, path);
      assert.equal(other.body.error_type, 'not_found', path);
      assert.doesNotMatch(JSON.stringify(other.body), /tripled|doubled/, path);
    }
    for (const [path, body] of [
      ['/api/functions/dash-b/svc/double/restore', { version: 1 }],
      ['/api/functions/dash-b/svc/double/run', { input: { x: 1 } }],
    ] as const) {
      const other = await postJson(`${server.url}${path}`, body, a.auth);
      assert.equal(other.status, 404, path);
      assert.equal(other.body.error_type, 'not_found', path);
    }
    assert.equal((await getAs('/api/functions/dash-b/svc/double', b.auth)).body.active_version, 2, "b's function is untouched");
    assert.equal(await usage(a.auth), 0, 'nothing ran or was counted');
    // Bad input: structured 400s (version, input), a missing version 404; no session: 401.
    for (const path of ['/api/functions/dash-a/svc/double?version=x', '/api/functions/dash-a/svc/double?version=0']) {
      const bad = await getAs(path, a.auth);
      assert.equal(bad.status, 400, path);
      assert.equal(bad.body.field, 'version');
    }
    assert.equal((await getAs('/api/functions/dash-a/svc/double?version=9', a.auth)).status, 404);
    for (const path of [
      '/api/executions?limit=x',
      '/api/executions?limit=0',
      '/api/executions?status=maybe',
      '/api/security-events?limit=-1',
    ]) {
      const bad = await getAs(path, a.auth);
      assert.equal(bad.status, 400, path);
      assert.equal(bad.body.error_type, 'validation_error', path);
    }
    for (const body of [{}, { version: 'one' }, { version: -1 }]) {
      const bad = await postJson(`${server.url}/api/functions/dash-a/svc/double/restore`, body, a.auth);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.error_type, 'validation_error');
    }
    for (const body of [{ input: [1] }, { input: 'x' }, { input: 3 }]) {
      const bad = await postJson(`${server.url}/api/functions/dash-a/svc/double/run`, body, a.auth);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.field, 'input');
    }
    assert.equal((await postJson(`${server.url}/api/functions/dash-a/svc/double/run`, '{oops', a.auth)).status, 400);
    // A version past the column's range is no version (not a failed query); a NUL in a path or a
    // query names nothing, on every route (PostgreSQL text cannot hold one).
    for (const version of [3_000_000_000, 1e300]) {
      const huge = await postJson(`${server.url}/api/functions/dash-a/svc/double/restore`, { version }, a.auth);
      assert.equal(huge.status, 404, JSON.stringify(huge.body));
      assert.equal(huge.body.error_type, 'not_found');
    }
    for (const path of [
      '/api/functions/dash-a/sv%00c/double',
      '/api/functions/dash-a/svc/%00',
      '/api/executions?function=%00',
      '/api/executions/dash-a/ab%00cd',
      '/api/security-events?namespace=a%00b',
    ]) {
      const nul = await getAs(path, a.auth);
      assert.equal(nul.status, 400, path);
      assert.equal(nul.body.error_type, 'validation_error', path);
    }
    const nulRestore = await postJson(`${server.url}/api/functions/dash-a/sv%00c/double/restore`, { version: 1 }, a.auth);
    assert.equal(nulRestore.status, 400);
    // The same on the MCP endpoints (both, either form of a namespace, a query) and a webhook path,
    // with an API key: the refusal comes before any route's parameters are read.
    const keyAuth = { authorization: `Bearer ${a.account.key}`, accept: 'application/json, text/event-stream' };
    for (const [method, path] of [
      ['POST', '/mcp/run/dash-a%00'],
      ['POST', '/mcp/run/dash-a?mode=tools%00'],
      ['POST', '/mcp/create/da%00sh-a'],
      ['GET', '/mcp/create/dash-a?x=%00'],
      ['POST', '/mcp/agent/dash-a/bot/webhook/p%00q'],
    ]) {
      const response = await fetch(`${server.url}${path}`, {
        method,
        headers: { ...keyAuth, 'content-type': 'application/json' },
        body: method === 'POST' ? JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) : undefined,
      });
      assert.equal(response.status, 400, `${method} ${path}`);
      // The MCP endpoints answer in JSON-RPC's shape, the rest in {error, error_type}.
      const body = (await response.json()) as { error_type?: string; error?: { data?: { type?: string } } };
      assert.equal(body.error_type ?? body.error?.data?.type, 'validation_error', `${path}: ${JSON.stringify(body)}`);
    }
    assert.equal((await getAs('/api/functions', {})).status, 401);
    // An API key is not a session: the owner's routes refuse it.
    assert.equal((await getAs('/api/functions', { authorization: `Bearer ${a.account.key}` })).status, 401);
    assert.equal((await getAs('/api/functions/dash-a/svc/double', a.auth)).body.active_version, 2, 'nothing changed');
    assert.equal(await usage(a.auth), 0);
  });

  test('restore makes a new version with the old code and respects the lock; cross-site writes are refused', async () => {
    const a = await owner('dash-r');
    const cross = await postJson(
      `${server.url}/api/functions/dash-r/svc/double/restore`,
      { version: 1 },
      { ...a.auth, origin: 'http://evil.example' },
    );
    assert.equal(cross.status, 403);
    const crossRun = await postJson(
      `${server.url}/api/functions/dash-r/svc/double/run`,
      { input: { x: 1 } },
      { ...a.auth, 'sec-fetch-site': 'cross-site' },
    );
    assert.equal(crossRun.status, 403);
    const restored = await postJson(`${server.url}/api/functions/dash-r/svc/double/restore`, { version: 1 }, a.auth);
    assert.equal(restored.status, 200, JSON.stringify(restored.body));
    assert.equal(restored.body.version, 3);
    assert.equal(restored.body.restored_from, 1);
    const fn = await getAs('/api/functions/dash-r/svc/double', a.auth);
    assert.equal(fn.body.active_version, 3);
    assert.equal(fn.body.code, V1);
    assert.equal(fn.body.versions.find((v: any) => v.version === 3).restored_from, 1);
    // Locked (through the MCP client): restore is refused and nothing changes.
    const create = await connect(`${server.url}/mcp/create/dash-r`, a.account.key);
    await callOk(create, 'lock_function', { service: 'svc', name: 'double' });
    await create.close();
    const locked = await postJson(`${server.url}/api/functions/dash-r/svc/double/restore`, { version: 2 }, a.auth);
    assert.equal(locked.status, 423);
    assert.equal(locked.body.error_type, 'locked');
    const after = await getAs('/api/functions/dash-r/svc/double', a.auth);
    assert.equal(after.body.active_version, 3);
    assert.equal(after.body.locked, true);
  });

  test('try it runs through the meter: counted, recorded with trigger "dashboard", refused past the quota', async () => {
    const a = await owner('dash-t');
    const ran = await postJson(`${server.url}/api/functions/dash-t/svc/double/run`, { input: { x: 7 } }, a.auth);
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.equal(ran.body.is_error, false, JSON.stringify(ran.body));
    assert.deepEqual(JSON.parse(ran.body.texts[0]), { tripled: 21 });
    assert.equal(await usage(a.auth), 1, 'counted like any call');
    const listed = await getAs('/api/executions?namespace=dash-t', a.auth);
    assert.equal(listed.status, 200);
    const [execution] = listed.body.executions;
    assert.equal(execution.id, ran.body.execution_id);
    assert.equal(execution.trigger, 'dashboard');
    assert.equal(execution.function, 'double');
    assert.equal(execution.version, 2);
    assert.equal(execution.status, 'success');
    assert.equal(
      (await getAs('/api/executions', a.auth)).body.executions[0].id,
      ran.body.execution_id,
      'every namespace when none is named',
    );
    const detail = await getAs(`/api/executions/dash-t/${ran.body.execution_id}`, a.auth);
    assert.equal(detail.status, 200);
    assert.equal(detail.body.trigger, 'dashboard');
    assert.deepEqual(JSON.parse(detail.body.result), { tripled: 21 }, 'the detail has the stored result');
    // Another account cannot see it; its own run is its own.
    const b = await owner('dash-u');
    assert.equal((await getAs(`/api/executions/dash-t/${ran.body.execution_id}`, b.auth)).status, 404);
    assert.equal((await postJson(`${server.url}/api/functions/dash-u/svc/double/run`, { input: { x: 1 } }, b.auth)).status, 200);
    assert.deepEqual(
      (await getAs('/api/executions', a.auth)).body.executions.map((e: any) => e.id),
      [ran.body.execution_id],
    );
    // Usage: today's count in the per-day series, the month's count against the tier's quota, the tier's limits.
    const month = await getAs('/api/usage/month', a.auth);
    assert.equal(month.status, 200);
    assert.equal(month.body.usage.executions, 1);
    assert.deepEqual(
      month.body.days.map((d: any) => [month.body.usage.month, d.executions]),
      [[month.body.days[0].day.slice(0, 7), 1]],
      "one day of this month with the one run (the other account's run is not in it)",
    );
    assert.deepEqual(Object.keys(month.body.limits).sort(), ['agents', 'concurrency', 'executions_per_minute', 'monthly_executions']);
    assert.equal(month.body.limits.monthly_executions, month.body.usage.limit);
    // An unknown function is not found, unmetered.
    const unknown = await postJson(`${server.url}/api/functions/dash-t/svc/nope/run`, { input: {} }, a.auth);
    assert.equal(unknown.status, 404);
    // Quota: on a one-execution tier, the second try is refused with the MCP endpoint's figures and is not run.
    assert.ok(await server.server.services.accountsStore.setTier(a.account.email, 'once1', null));
    const refused = await postJson(`${server.url}/api/functions/dash-t/svc/double/run`, { input: { x: 1 } }, a.auth);
    assert.equal(refused.status, 429, JSON.stringify(refused.body));
    assert.equal(refused.body.code, 'QUOTA_EXCEEDED');
    assert.equal(refused.body.error_type, 'quota_exceeded');
    assert.equal(await usage(a.auth), 1);
    assert.equal((await getAs('/api/executions?namespace=dash-t', a.auth)).body.executions.length, 1, 'a refused call is not recorded');
    const once = await getAs('/api/usage/month', a.auth);
    assert.equal(once.body.limits.monthly_executions, 1, "the tier's limits are the account's current tier's");
    assert.equal((await getAs('/api/usage/month', b.auth)).body.usage.executions, 1, "another account's usage is its own");
  });
});
