// test-database: embedded, limits one call at a time (their races: storage-races.test.ts)
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import { sql } from 'kysely';
import { MCP_SESSION_IDLE_MS, MCP_SESSIONS_PER_KEY } from '../store/accounts-store.js';
import type { Db } from '../store/database.js';
import { createLogger } from '../app/logger.js';
import { SessionActivity } from './session-activity.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  createKey,
  parseResult,
  rawMcpPost,
  startTestServer,
  type ClientEra,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { fetchWithin, sandboxRunsStarted, until } from '../test-support/processes.js';
import type { BubblewrapSandbox } from '../sandbox/bubblewrap.js';

// Small limits so each one is reached in a few calls; `roomy` for the run-side tests.
const TIERS = applyTierOverrides(
  JSON.stringify({
    pro_trial: {
      namespaces: 2,
      services: 2,
      functions: 3,
      versions_per_function: 3,
      stored_bytes: 40_000,
      schema_bytes_per_namespace: 2_000,
      mcp_sessions: 2,
    },
    roomy: {
      namespaces: 5,
      services: 5,
      functions: 20,
      versions_per_function: 20,
      stored_bytes: 10_000_000,
      schema_bytes_per_namespace: 1_000_000,
      mcp_sessions: 40,
    },
    // One key's cap (32) plus one session of another key: the account is then full.
    sessions33: { mcp_sessions: 33 },
  }),
);

let server: TestServer;
let cacheDir: string;
before(async () => {
  // A private cache dir: collection in these tests must not touch other servers' packages.
  cacheDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-gc-'));
  chmodSync(cacheDir, 0o755);
  server = await startTestServer({ tiers: TIERS, cacheDir });
});
after(async () => {
  await server?.stop();
  rmSync(cacheDir, { recursive: true, force: true });
});

/** The server still answers /healthz (within 2 s) and nothing was metered unless `executions` says so. */
async function healthyAndMetered(account: TestAccount, executions = 0): Promise<void> {
  const health = await fetchWithin(2_000, `${server.url}/healthz`);
  assert.equal(health.status, 200);
  const usage = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
  assert.equal((await usage.json()).executions, executions);
}

const uniq = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 9)}`;

function assertLimit(error: { type: string; [k: string]: unknown }, resource: string, limit: number, usage: number): void {
  assert.equal(error.type, 'limit_exceeded', JSON.stringify(error));
  assert.equal(error.resource, resource);
  assert.equal(error.limit, limit);
  assert.equal(error.usage, usage);
  assert.equal(error.tier, 'pro_trial');
}

const PY = { language: 'python', code: 'def main(input):\n    return {"v": 1}  # é\n' };
const TS = { language: 'typescript', code: 'export function main(input: any) { return { v: 1 }; }\n' };

describe('storage limits (per account, tier table)', () => {
  test('namespaces: the limit holds and a refusal creates nothing', async () => {
    const account = await createAccount(server.url);
    const [a, b, c] = [uniq('ns'), uniq('ns'), uniq('ns')];
    const client = await connect(`${server.url}/mcp/create/${a}`, account.key);
    await callOk(client, 'make_namespace', { name: a });
    await callOk(client, 'make_namespace', { name: b });
    assertLimit(await callError(client, 'make_namespace', { name: c }), 'namespaces', 2, 2);
    assert.deepEqual((await callOk(client, 'list_namespaces')).map((n: { name: string }) => n.name).sort(), [a, b].sort());
    await healthyAndMetered(account);
    await client.close();
  });

  test("services: counted across all the account's namespaces", async () => {
    const account = await createAccount(server.url);
    const [a, b] = [uniq('ns'), uniq('ns')];
    const ca = await connect(`${server.url}/mcp/create/${a}`, account.key);
    const cb = await connect(`${server.url}/mcp/create/${b}`, account.key, 'v1');
    await callOk(ca, 'make_namespace', { name: a });
    await callOk(ca, 'make_namespace', { name: b });
    await callOk(ca, 'make_service', { name: 's1' });
    await callOk(cb, 'make_service', { name: 's1' });
    assertLimit(await callError(cb, 'make_service', { name: 's2' }), 'services', 2, 2);
    assert.equal((await callOk(cb, 'list_services')).length, 1);
    await healthyAndMetered(account);
    await ca.close();
    await cb.close();
  });

  test('functions: Python and TypeScript count alike; the refused one does not exist', async () => {
    const account = await createAccount(server.url);
    const ns = uniq('ns');
    const client = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(client, 'make_namespace', { name: ns });
    await callOk(client, 'make_service', { name: 'utils' });
    await callOk(client, 'make_function', { service: 'utils', name: 'p1', ...PY });
    await callOk(client, 'make_function', { service: 'utils', name: 't1', ...TS });
    await callOk(client, 'make_function', { service: 'utils', name: 'p2', ...PY });
    assertLimit(await callError(client, 'make_function', { service: 'utils', name: 't2', ...TS }), 'functions', 3, 3);
    assertLimit(await callError(client, 'make_function', { service: 'utils', name: 'p3', ...PY }), 'functions', 3, 3);
    assert.deepEqual(
      (await callOk(client, 'list_functions', { service: 'utils' })).map((f: { name: string }) => f.name),
      ['p1', 'p2', 't1'],
    );
    // Deleting one frees its place.
    await callOk(client, 'delete_function', { service: 'utils', name: 'p2' });
    await callOk(client, 'make_function', { service: 'utils', name: 't2', ...TS });
    await healthyAndMetered(account);
    await client.close();
  });

  test('versions per function: updates and restores are refused at the limit, the active version stays', async () => {
    const account = await createAccount(server.url);
    const ns = uniq('ns');
    const client = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(client, 'make_namespace', { name: ns });
    await callOk(client, 'make_service', { name: 'utils' });
    for (const [name, base] of [
      ['py', PY],
      ['ts', TS],
    ] as const) {
      await callOk(client, 'make_function', { service: 'utils', name, ...base });
      await callOk(client, 'update_function', {
        service: 'utils',
        name,
        code: `${base.code}// 2\n`.replace('// 2', base.language === 'python' ? '# 2' : '// 2'),
      });
      await callOk(client, 'update_function', { service: 'utils', name, restore_version: 1 });
      assertLimit(
        await callError(client, 'update_function', { service: 'utils', name, code: `${base.code}\n\n` }),
        'versions_per_function',
        3,
        3,
      );
      assertLimit(
        await callError(client, 'update_function', { service: 'utils', name, restore_version: 2 }),
        'versions_per_function',
        3,
        3,
      );
      const described = await callOk(client, 'describe_function', { service: 'utils', name });
      assert.equal(described.active_version, 3);
      assert.equal(described.versions.length, 3);
      // Versions are listed without their code, with its size in UTF-8 bytes.
      assert.equal(described.versions[0].code_bytes, Buffer.byteLength(base.code, 'utf8'));
      assert.equal(described.code, base.code);
      // A change of description only makes no version: still allowed.
      await callOk(client, 'update_function', { service: 'utils', name, description: 'still editable' });
    }
    await healthyAndMetered(account);
    await client.close();
  });

  test('stored bytes: code of every version counts; a refused update stores nothing', async () => {
    const account = await createAccount(server.url);
    const ns = uniq('ns');
    const client = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(client, 'make_namespace', { name: ns });
    await callOk(client, 'make_service', { name: 'utils' });
    const pad = (language: string, n: number) => (language === 'python' ? `# ${'x'.repeat(n)}\n` : `// ${'x'.repeat(n)}\n`);
    await callOk(client, 'make_function', { service: 'utils', name: 'py', language: 'python', code: PY.code + pad('python', 15_000) });
    await callOk(client, 'make_function', {
      service: 'utils',
      name: 'ts',
      language: 'typescript',
      code: TS.code + pad('typescript', 15_000),
    });
    // Two versions of ~15 kB each are stored; a third of ~15 kB goes past 40,000 bytes.
    for (const name of ['py', 'ts']) {
      const language = name === 'py' ? 'python' : 'typescript';
      const base = name === 'py' ? PY : TS;
      const error = await callError(client, 'update_function', { service: 'utils', name, code: base.code + pad(language, 15_001) });
      assert.equal(error.type, 'limit_exceeded');
      assert.equal(error.resource, 'stored_bytes');
      assert.equal(error.limit, 40_000);
      assert.ok((error.usage as number) > 30_000 && (error.usage as number) <= 40_000, String(error.usage));
      assert.equal((await callOk(client, 'describe_function', { service: 'utils', name })).versions.length, 1);
    }
    // Deleting a function gives its bytes back.
    await callOk(client, 'delete_function', { service: 'utils', name: 'ts' });
    await callOk(client, 'update_function', { service: 'utils', name: 'py', code: PY.code + pad('python', 15_001) });
    await healthyAndMetered(account);
    await client.close();

    // Config and schemas count as well as code: ~30 kB of config and ~1.5 kB of schema leave no
    // room for ~8.9 kB more code (without either of them it would fit).
    const other = await createAccount(server.url);
    const otherNs = uniq('ns');
    const second = await connect(`${server.url}/mcp/create/${otherNs}`, other.key);
    await callOk(second, 'make_namespace', { name: otherNs });
    await callOk(second, 'make_service', { name: 'utils' });
    await callOk(second, 'make_function', {
      service: 'utils',
      name: 'cfg',
      ...PY,
      config: { pad: 'x'.repeat(30_000) },
      input_schema: { type: 'object', description: 'y'.repeat(1_500) },
    });
    const full = await callError(second, 'make_function', { service: 'utils', name: 'more', ...PY, code: PY.code + pad('python', 8_800) });
    assert.equal(full.type, 'limit_exceeded', JSON.stringify(full));
    assert.equal(full.resource, 'stored_bytes');
    assert.ok((full.usage as number) >= 31_500, String(full.usage));
    await healthyAndMetered(other);
    await second.close();
  });

  test("schema bytes per namespace: the active versions' schemas count; shrinking one is allowed", async () => {
    const account = await createAccount(server.url);
    const ns = uniq('ns');
    const client = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(client, 'make_namespace', { name: ns });
    await callOk(client, 'make_service', { name: 'utils' });
    const schema = (n: number) => ({ type: 'object', description: 'd'.repeat(n) });
    await callOk(client, 'make_function', { service: 'utils', name: 'a', ...PY, input_schema: schema(900) });
    const refused = await callError(client, 'make_function', { service: 'utils', name: 'b', ...TS, input_schema: schema(1_100) });
    assert.equal(refused.type, 'limit_exceeded');
    assert.equal(refused.resource, 'schema_bytes_per_namespace');
    assert.equal(refused.limit, 2_000);
    // Replacing a's schema counts only the new one (not old + new); growing past the cap is
    // refused; a smaller one frees room.
    await callOk(client, 'update_function', { service: 'utils', name: 'a', input_schema: schema(1_500) });
    assert.equal(
      (await callError(client, 'update_function', { service: 'utils', name: 'a', input_schema: schema(1_990) })).resource,
      'schema_bytes_per_namespace',
    );
    await callOk(client, 'update_function', { service: 'utils', name: 'a', input_schema: schema(100) });
    await callOk(client, 'make_function', { service: 'utils', name: 'b', ...TS, input_schema: schema(1_100) });
    await healthyAndMetered(account);
    await client.close();
  });
});

describe('MCP sessions (2025-era): per-account limit and idle expiry', () => {
  async function initialize(url: string, key: string): Promise<{ status: number; body: any; session: string | null; headers: Headers }> {
    const response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
      }),
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text.includes('data:') ? text.split('data:').pop()!.trim() : text);
    } catch {
      // SSE or empty: the status says enough.
    }
    return { status: response.status, body, session: response.headers.get('mcp-session-id'), headers: response.headers };
  }

  for (const era of ['v1', 'v2-legacy'] as const satisfies readonly ClientEra[]) {
    test(`${era}: the third live session is refused with 429 JSON; closing or expiry frees a place; the modern era needs none`, async () => {
      const account = await createAccount(server.url);
      const ns = uniq('ns');
      const url = `${server.url}/mcp/create/${ns}`;
      const first = await connect(url, account.key, era);
      const second = await connect(url, account.key, era);
      assert.ok(first.sessionId() && second.sessionId());
      await assert.rejects(connect(url, account.key, era));
      const refused = await initialize(url, account.key);
      assert.equal(refused.status, 429);
      assert.equal(refused.body.jsonrpc, '2.0', "a JSON-RPC error: not one of the spec's quota bodies");
      assert.equal(refused.body.error.data.code, 'SESSION_LIMIT_EXCEEDED');
      assert.equal(refused.body.error.data.limit, 2);
      assert.equal(refused.body.error.data.usage, 2);
      assert.equal(refused.body.error.data.tier, 'pro_trial');
      assert.ok(Number(refused.headers.get('retry-after')) > 0);
      assert.equal(refused.session, null);
      // Sessions are per account: the run endpoint counts too, another account does not.
      assert.equal((await initialize(`${server.url}/mcp/run/${ns}`, account.key)).status, 429);
      const other = await createAccount(server.url);
      assert.equal((await initialize(url, other.key)).status, 200);
      // The 2026 era keeps no session: it works at the limit and adds none.
      const modern = await connect(url, account.key, 'v2');
      await callOk(modern, 'make_namespace', { name: ns });
      await modern.close();
      // The live sessions still work.
      assert.equal((await callOk(first, 'list_namespaces')).length, 1);
      // Closing one (DELETE) frees its place.
      const closed = await fetch(url, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${account.key}`, 'mcp-session-id': second.sessionId()! },
      });
      assert.equal(closed.status, 200);
      await second.close();
      const third = await connect(url, account.key, era);
      // Expiry: as of an hour idle later, housekeeping removes them; their ids answer 404 and
      // new sessions fit again.
      const swept = await server.server.services.housekeeping.sweep(Date.now() + MCP_SESSION_IDLE_MS + 1_000);
      assert.ok(swept.sessions >= 2);
      const stale = await rawMcpPost(
        url,
        account.key,
        { jsonrpc: '2.0', id: 2, method: 'tools/list' },
        { 'mcp-session-id': third.sessionId()! },
      );
      assert.equal(stale.status, 404);
      const again = [await connect(url, account.key, era), await connect(url, account.key, era)];
      await healthyAndMetered(account);
      for (const c of [...again, first, third]) await c.close().catch(() => undefined);
    });
  }
});

describe('MCP sessions (2025-era): per-key cap', () => {
  test(`a key keeps ${MCP_SESSIONS_PER_KEY} live sessions: one more ends its least recently used one not in use (an open stream or a request being answered keeps it), else is refused; never another key's`, async () => {
    const account = await createAccount(server.url);
    await server.server.services.accounts.setTier(account.email, 'roomy');
    const other = await createKey(server.url, account, {});
    const ns = uniq('cap');
    const url = `${server.url}/mcp/create/${ns}`;
    const runUrl = `${server.url}/mcp/run/${ns}`;
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const activity = server.server.services.sessionActivity;
    // The namespace through the 2026 era, which keeps no session.
    const modern = await connect(url, account.key, 'v2');
    await callOk(modern, 'make_namespace', { name: ns });
    await modern.close();
    const idleFor = (id: string, ms: number) =>
      db
        .updateTable('mcp_sessions')
        .set({ last_seen_at: new Date(Date.now() - ms) })
        .where('id', '=', id)
        .execute();
    const inUse = async (id: string) =>
      (
        await db
          .selectFrom('mcp_session_holds')
          .select(sql<number>`count(*)::int`.as('holds'))
          .where('session_id', '=', id)
          .where('until', '>', sql<Date>`now()`)
          .executeTakeFirstOrThrow()
      ).holds > 0;
    const initialize = (key: string, at = url) =>
      fetch(at, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'throw-away', version: '1' } },
        }),
      });
    const sessionOf = async (key: string, at = url) => {
      const response = await initialize(key, at);
      assert.equal(response.status, 200);
      await response.text();
      return response.headers.get('mcp-session-id')!;
    };
    const refusedAt = async (key: string, limit: number, usage: number) => {
      const response = await initialize(key);
      assert.equal(response.status, 429);
      const body = await response.json();
      assert.equal(body.error.code, -32000);
      const { code, limit: l, usage: u, retry_after } = body.error.data;
      assert.deepEqual({ code, l, u }, { code: 'SESSION_LIMIT_EXCEEDED', l: limit, u: usage }, JSON.stringify(body));
      assert.ok(retry_after >= 1 && String(retry_after) === response.headers.get('retry-after'));
      return retry_after as number;
    };
    const ping = (key: string, id: string, at = url) =>
      rawMcpPost(at, key, { jsonrpc: '2.0', id: 2, method: 'ping' }, { 'mcp-session-id': id, 'mcp-protocol-version': '2025-06-18' });
    const alive = async (key: string, ids: string[], message: string) => {
      for (const id of ids) assert.equal((await ping(key, id)).status, 200, message);
    };
    const ended = async (id: string, message: string, at = url) => assert.equal((await ping(account.key, id, at)).status, 404, message);

    const otherKeys = await sessionOf(other);
    // Throw-away sessions (an initialize and nothing more, as mcp-remote's and test suites' are):
    // at the cap, each new one ends the least recently used at once.
    const ids: string[] = [];
    for (let i = 0; i < MCP_SESSIONS_PER_KEY; i++) ids.push(await sessionOf(account.key));
    const first = await sessionOf(account.key);
    await ended(ids[0]!, 'the least recently used one ended');
    await alive(account.key, [ids[1]!, ids.at(-1)!, first], 'the others live');
    assert.equal((await ping(other, otherKeys)).status, 200, "another key's session stays");

    // An open GET stream holds its session in use: the least recently used by far, it stays, and
    // the next one goes.
    const listening = new AbortController();
    const stream = await fetch(url, {
      headers: { authorization: `Bearer ${account.key}`, accept: 'text/event-stream', 'mcp-session-id': ids[1]! },
      signal: listening.signal,
    });
    assert.equal(stream.status, 200);
    await until(
      'the stream marks its session in use',
      () => inUse(ids[1]!),
      (used) => used === true,
    );
    await idleFor(ids[1]!, 30 * 60_000);
    await sessionOf(account.key);
    await ended(ids[2]!, 'the next least recently used one ended');
    assert.equal(await inUse(ids[1]!), true);
    // Closed, it is no longer in use: it goes first.
    listening.abort();
    await stream.body?.cancel().catch(() => undefined);
    await until(
      'the closed stream ends its mark',
      () => inUse(ids[1]!),
      (used) => used === false,
    );
    await idleFor(ids[1]!, 30 * 60_000);
    await sessionOf(account.key);
    await ended(ids[1]!, 'a session whose stream closed is not in use');

    // A request still being answered holds its session (marked by the node's refresh while it
    // lasts), here a 4-second run on the run endpoint (sessions count per key on both).
    const runSession = await sessionOf(account.key, runUrl);
    await ended(ids[3]!, 'the run session took the least recently used place');
    const call = rawMcpPost(
      runUrl,
      account.key,
      {
        jsonrpc: '2.0',
        id: 3,
        method: 'tools/call',
        params: { name: 'execute', arguments: { code: 'import time\ntime.sleep(4)\nresult = 7', language: 'python' } },
      },
      { 'mcp-session-id': runSession },
    );
    // Written by the request's own timer once it has lasted a second (no refresh needed).
    await until(
      'the call holds its session',
      () => inUse(runSession),
      (used) => used === true,
    );
    assert.ok(activity.size() >= 1);
    await idleFor(runSession, 30 * 60_000);
    await sessionOf(account.key);
    await ended(ids[4]!, 'the least recently used one not in use ended');
    const answer = await call;
    assert.equal(answer.status, 200);
    assert.equal(parseResult(answer.body.result), 7, JSON.stringify(answer.body));
    await until(
      'the answered call ends its mark',
      () => inUse(runSession),
      (used) => used === false,
    );
    assert.equal((await ping(account.key, runSession, runUrl)).status, 200, 'the run session lived through its call');

    // Holds are per node: another node's hold on the session stays when this node's ends.
    const otherNode = new SessionActivity(
      {
        markMcpSessionsInUse: (list) => server.server.services.accountsStore.markMcpSessionsInUse('other-node', list),
        clearMcpSessionInUse: (id) => server.server.services.accountsStore.clearMcpSessionInUse('other-node', id),
        clearMcpSessionHolds: () => server.server.services.accountsStore.clearMcpSessionHolds('other-node'),
      },
      createLogger('silent'),
    );
    otherNode.hold(runSession, { markNow: true });
    activity.hold(runSession, { markNow: true })();
    await activity.refresh();
    await otherNode.refresh();
    assert.equal(await inUse(runSession), true, "this node's release leaves the other node's hold");
    await idleFor(runSession, 30 * 60_000);
    await sessionOf(account.key);
    await ended(ids[5]!, 'the least recently used one no node holds ended');
    await otherNode.close();
    assert.equal(await inUse(runSession), false, "the other node's close ends its holds");

    // The account full (33 = 32 of this key + 1 of the other): the key's own sessions not in use
    // still make room, while the other key is refused and ends nobody's session.
    await server.server.services.accounts.setTier(account.email, 'sessions33');
    await sessionOf(account.key);
    await ended(runSession, 'the least recently used one not in use ended', runUrl);
    await refusedAt(other, 33, 33);
    // Every session of the key in use: refused, and none ends.
    const keyId = (await db.selectFrom('mcp_sessions').select('key_id').where('id', '=', first).executeTakeFirstOrThrow()).key_id;
    await sql`INSERT INTO mcp_session_holds (session_id, node_id, until)
      SELECT id, 'test-node', now() + interval '1 minute' FROM mcp_sessions WHERE key_id = ${keyId}`.execute(db);
    const keyIds = (await db.selectFrom('mcp_sessions').select('id').where('key_id', '=', keyId).execute()).map((row) => row.id);
    assert.equal(keyIds.length, MCP_SESSIONS_PER_KEY);
    assert.equal(await refusedAt(account.key, MCP_SESSIONS_PER_KEY, MCP_SESSIONS_PER_KEY), 60);
    await alive(
      account.key,
      keyIds.filter((id) => id !== runSession),
      'a refusal ends no session',
    );
    // Over a lowered limit, the key itself is refused even with sessions not in use, and loses nothing.
    await db.deleteFrom('mcp_session_holds').where('node_id', '=', 'test-node').execute();
    await server.server.services.accounts.setTier(account.email, 'pro_trial');
    await refusedAt(account.key, 2, 33);
    await alive(
      account.key,
      keyIds.filter((id) => id !== runSession),
      'a refusal ends no session',
    );
    assert.equal((await ping(other, otherKeys)).status, 200, "another key's session stays");
  });
});

describe('functions packages: garbage collection', () => {
  test('unreferenced packages go once unused; the current one and one a run still uses stay', async () => {
    const account = await createAccount(server.url);
    await server.server.services.accounts.setTier(account.email, 'roomy');
    const ns = uniq('gc');
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 'utils' });
    await callOk(create, 'make_function', { service: 'utils', name: 'hello', ...PY, code: 'def main(input):\n    return {"v": 1}\n' });
    await callOk(create, 'make_function', { service: 'utils', name: 'other', ...TS });
    const run = await connect(`${server.url}/mcp/run/${ns}`, account.key);
    // Other tests' namespaces have packages of their own in this cache: only this test's are counted.
    const listed = () =>
      existsSync(path.join(cacheDir, 'packages')) ? readdirSync(path.join(cacheDir, 'packages')).filter((n) => !n.startsWith('.')) : [];
    const others = new Set(listed());
    const packages = () =>
      listed()
        .filter((n) => !others.has(n))
        .sort();

    assert.deepEqual(parseResult(await run.callTool('execute', { code: 'from functions import hello\nresult = hello()' })), { v: 1 });
    const [v1] = packages();
    assert.ok(v1);

    // As if v1 had been built long ago: reusing it must mark it used again.
    const longAgo = new Date(Date.now() - 24 * 3600_000);
    utimesSync(path.join(cacheDir, 'packages', v1), longAgo, longAgo);
    // A TypeScript run that is still going when its package stops being current.
    const sandbox = server.server.services.sandbox as BubblewrapSandbox;
    const before = sandboxRunsStarted(sandbox);
    const slow = run.callTool('execute', {
      language: 'typescript',
      code: 'await new Promise((r) => setTimeout(r, 2500));\nconst { hello } = await import("functions");\nresult = await hello({});',
    });
    // Until it has its sandbox (its package chosen), not a fixed wait that a loaded machine outlasts.
    await until(
      'the slow run in its sandbox',
      async () => sandboxRunsStarted(sandbox),
      (started) => started > before,
    );
    await callOk(create, 'update_function', { service: 'utils', name: 'hello', code: 'def main(input):\n    return {"v": 2}\n' });
    const v2Result = parseResult(await run.callTool('execute', { code: 'from functions import hello\nresult = hello()' }));
    assert.deepEqual(v2Result, { v: 2 });
    assert.equal(packages().length, 2);
    const current = packages().find((k) => k !== v1)!;
    // The unchanged function's code is one file linked into both packages, not a second copy.
    const otherCode = (key: string) =>
      statSync(path.join(cacheDir, 'packages', key, 'node', 'node_modules', 'functions', '_code', 'utils__other', 'index.cjs'));
    assert.equal(otherCode(v1).ino, otherCode(current).ino);
    assert.notEqual(
      statSync(path.join(cacheDir, 'packages', v1, 'python', 'functions', '_code', 'utils__hello.py')).ino,
      statSync(path.join(cacheDir, 'packages', current, 'python', 'functions', '_code', 'utils__hello.py')).ino,
    );

    // Now: v1 is unreferenced but was used moments ago (the slow run): it stays.
    await server.server.services.housekeeping.sweep();
    assert.deepEqual(packages(), [v1, current].sort());
    const slowResult = await slow;
    assert.ok(!slowResult.isError, JSON.stringify(slowResult));
    assert.deepEqual(parseResult(slowResult), { v: 1 });

    // Long after: v1 goes, the current package stays.
    const swept = await server.server.services.housekeeping.sweep(Date.now() + 24 * 3600_000);
    // (Other tests' packages may go in the same pass: only this test's are asserted.)
    assert.ok(swept.packages >= 1);
    assert.deepEqual(packages(), [current]);
    assert.ok(existsSync(path.join(cacheDir, 'packages', current, '.complete')));
    // Stored code no package links any more went with it; what the current package links stays.
    // (Link counts may be higher: the sandbox's mount mirrors link the same files.)
    // (And the Python loader's compiled form, stored per namespace like code.)
    const compiledLoader = readdirSync(path.join(cacheDir, 'packages', current, 'python', 'functions', '__pycache__')).map(
      (name) => `python/functions/__pycache__/${name}`,
    );
    assert.equal(compiledLoader.length, 1);
    const currentInodes = new Set(
      ['python/functions/_code/utils__hello.py', 'node/node_modules/functions/_code/utils__other/index.cjs', ...compiledLoader].map(
        (file) => statSync(path.join(cacheDir, 'packages', current, file)).ino,
      ),
    );
    const stored = readdirSync(path.join(cacheDir, 'package-code')).map((n) => statSync(path.join(cacheDir, 'package-code', n)).ino);
    assert.deepEqual(new Set(stored), currentInodes);
    assert.equal(stored.length, 3);
    // And a run still works after collection.
    assert.deepEqual(parseResult(await run.callTool('execute', { code: 'from functions import hello\nresult = hello()' })), { v: 2 });
    await healthyAndMetered(account, 4);
    await run.close();
    await create.close();
  });
});

describe('cost does not grow with the snapshot: tool list per catalog version, code per version', () => {
  test('tools/list follows catalog changes in both eras; the version that runs is the active one, in both languages', async () => {
    const account = await createAccount(server.url);
    await server.server.services.accounts.setTier(account.email, 'roomy');
    const ns = uniq('tl');
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 'utils' });
    await callOk(create, 'make_function', {
      service: 'utils',
      name: 'py',
      language: 'python',
      code: 'def main(input):\n    return {"py": 1}\n',
      input_schema: { type: 'object', properties: { a: { type: 'string' } } },
    });
    await callOk(create, 'make_function', {
      service: 'utils',
      name: 'ts',
      language: 'typescript',
      code: 'export function main() { return { ts: 1 }; }\n',
    });
    const eras = await Promise.all(
      (['v1', 'v2', 'v2-legacy'] as const).map((era) => connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era)),
    );
    const list = async (client: (typeof eras)[number]) =>
      (await client.listTools()).tools.map((t) => ({
        name: t.name,
        description: t.description,
        props: Object.keys(t.inputSchema.properties ?? {}),
      }));

    const before = await list(eras[0]!);
    assert.deepEqual(
      before.map((t) => t.name),
      ['utils__py', 'utils__ts', '_env_status'],
    );
    assert.match(before[0]!.description!, /v1\]$/);
    assert.deepEqual(before[0]!.props, ['a']);
    for (const client of eras) assert.deepEqual(await list(client), before);
    assert.deepEqual(parseResult(await eras[1]!.callTool('utils__py', { a: 'x' })), { py: 1 });
    assert.deepEqual(parseResult(await eras[0]!.callTool('utils__ts', {})), { ts: 1 });

    await callOk(create, 'update_function', {
      service: 'utils',
      name: 'py',
      code: 'def main(input):\n    return {"py": 2}\n',
      input_schema: { type: 'object', properties: { b: { type: 'number' } } },
    });
    await callOk(create, 'update_function', { service: 'utils', name: 'ts', code: 'export function main() { return { ts: 2 }; }\n' });
    await callOk(create, 'make_function', { service: 'utils', name: 'added', ...PY });
    const after = await list(eras[2]!);
    assert.deepEqual(
      after.map((t) => t.name),
      ['utils__added', 'utils__py', 'utils__ts', '_env_status'],
    );
    assert.match(after[1]!.description!, /v2\]$/);
    assert.deepEqual(after[1]!.props, ['b']);
    for (const client of eras) assert.deepEqual(await list(client), after);
    assert.deepEqual(parseResult(await eras[0]!.callTool('utils__py', { b: 1 })), { py: 2 });
    assert.deepEqual(parseResult(await eras[1]!.callTool('utils__ts', {})), { ts: 2 });
    // Code mode: the bridge's cross-language callee runs its active version too.
    const code = await connect(`${server.url}/mcp/run/${ns}`, account.key);
    assert.deepEqual(parseResult(await code.callTool('execute', { code: 'from functions import ts, py\nresult = [ts(), py(b=1)]' })), [
      { ts: 2 },
      { py: 2 },
    ]);
    await callOk(create, 'delete_function', { service: 'utils', name: 'added' });
    assert.deepEqual(
      (await list(eras[1]!)).map((t) => t.name),
      ['utils__py', 'utils__ts', '_env_status'],
    );
    await healthyAndMetered(account, 5);
    for (const c of [...eras, code, create]) await c.close();
  });
});
