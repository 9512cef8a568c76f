// test-database: postgres, two nodes on one database: a key cached on one node, changed through the other
// A metered call whose key this node verified lately skips the key's lookup (AccountService.
// cachedRunKey); its admission checks the key instead (migration 38's mcpworks_admit_key_call),
// and every other request with a cached key is looked up first (run-endpoint.ts beforeDispatch).
// Here a key is cached on node B (two calls there) and then revoked, expired, moved to another
// plan or its namespace's function changed through node A: B's next request sees it. On
// PostgreSQL A and B are two servers on one database; embedded, they are one server.
// Migration 39's notification of a key's change is held back where the admission's or a lookup's
// check is tested, and let through where the node's dropping of the key on its arrival is.
// scripts/mutation/mutants.json names the lines it must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { DEFAULT_TIERS, type TierLimits } from '../core/tiers.js';
import { callOk, createKey, parseResult, startTestServer, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';

const pro = DEFAULT_TIERS.pro!;
const TIERS: Record<string, TierLimits> = {
  ...DEFAULT_TIERS,
  wide: { ...pro, monthlyExecutions: null, executionsPerMinute: null, concurrency: null },
  quota2: { ...pro, monthlyExecutions: 2, executionsPerMinute: null, concurrency: null },
};
/** The per-request _meta a 2026-07-28 client sends with every request. */
const MODERN_META = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {},
};
const HELLO = (word: string) => `def main(input_data):\n    return "${word}"\n`;

let t: RuleServer;
/** Node B: a second server on the same PostgreSQL database; embedded, node A itself. */
let b: TestServer;
before(async () => {
  t = await startRuleServer(TIERS);
  b = t.server.databaseUrl ? await startTestServer({ tiers: TIERS, databaseUrl: t.server.databaseUrl }) : t.server;
});
after(async () => {
  if (b && b !== t?.server) await b.stop();
  await t?.stop();
});

/** One JSON-RPC request to node B's run endpoint (tool mode; or `path`), without a session unless a header names one. */
async function onB(
  s: Space,
  key: string,
  message: Record<string, unknown>,
  options: { path?: string; method?: string; headers?: Record<string, string> } = {},
) {
  const method = options.method ?? 'POST';
  const response = await fetch(`${b.url}${options.path ?? `/mcp/run/${s.ns}?mode=tools`}`, {
    method,
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      authorization: `Bearer ${key}`,
      ...options.headers,
    },
    ...(method === 'POST' ? { body: JSON.stringify({ jsonrpc: '2.0', id: 1, ...message }) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await response.text().catch(() => '');
  let body: any = text;
  try {
    body = text.includes('data:') ? JSON.parse(text.split('data:').pop()!.trim()) : text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: kept as text for the assertion's message.
  }
  return { status: response.status, body };
}
const hello = (s: Space, key: string) => onB(s, key, { method: 'tools/call', params: { name: 'utils__hello', arguments: {} } });

/** A new key of the space's account, cached on node B: two metered calls there (the first looks it up). */
async function cachedOnB(s: Space, options: Record<string, unknown> = {}): Promise<{ key: string; id: string }> {
  const key = await createKey(t.server.url, s.account, { name: `cached-${Math.random().toString(36).slice(2, 8)}`, ...options });
  const listed = await fetch(`${t.server.url}/api/keys`, { headers: { authorization: `Bearer ${s.account.token}` } });
  const id = (await listed.json()).keys.find((k: { prefix: string }) => key.startsWith(k.prefix)).id;
  for (let i = 0; i < 2; i++) {
    const answer = await hello(s, key);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }
  return { key, id };
}

/**
 * Changes a key's row as another node (or the operator's CLI) would, with its notification held
 * back: `session_replication_role = replica` fires no trigger, so migration 39's NOTIFY is not
 * sent and node B's cache keeps the key, as it does between a change's commit and the arrival of
 * its notification. What refuses the key then is the admission's check or a lookup.
 */
async function changeUnannounced(statement: ReturnType<typeof sql>): Promise<void> {
  await t.server.server.services.db.transaction().execute(async (trx) => {
    await sql`SET LOCAL session_replication_role = replica`.execute(trx);
    await statement.execute(trx);
  });
}

async function revokeOnA(_s: Space, id: string): Promise<void> {
  await changeUnannounced(sql`UPDATE api_keys SET revoked_at = now() WHERE id = ${id}`);
}

/**
 * A body that is not JSON, with `key`, to node B until it is no longer parsed (read, it answers
 * 400; refused before it is read, 401), at most 100 times 50 ms apart: a notification arrives
 * after its commit. A key left cached would answer 400 for KEY_CACHE_MS (a minute), past the polls.
 */
async function notJsonOnBUntilRefused(s: Space, key: string): Promise<{ status: number; body: string }> {
  let answer = { status: 0, body: '' };
  for (let i = 0; i < 100; i++) {
    const response = await fetch(`${b.url}/mcp/run/${s.ns}?mode=tools`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${key}` },
      body: '{not json',
    });
    answer = { status: response.status, body: await response.text() };
    if (answer.status !== 400) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return answer;
}

function assertRefusedKey(answer: { status: number; body: any }, what: string): void {
  assert.equal(answer.status, 401, `${what}: ${JSON.stringify(answer.body)}`);
  assert.match(JSON.stringify(answer.body), /invalid, revoked or expired API key/, what);
}

/** Counts node B's real lookups of keys while `work` runs (the service itself runs). */
async function countingLookups<T>(work: () => Promise<T>): Promise<{ value: T; lookups: number }> {
  const accounts = b.server.services.accounts;
  const lookUp = accounts.authenticateRequest;
  let lookups = 0;
  accounts.authenticateRequest = function (this: typeof accounts, ...args: Parameters<typeof lookUp>) {
    lookups++;
    return lookUp.apply(this, args);
  };
  try {
    return { value: await work(), lookups };
  } finally {
    accounts.authenticateRequest = lookUp;
  }
}

describe('a key cached on a node', () => {
  test('revoked through another node: its next call, _env_status, tools/list, the create endpoint, a GET, a session are refused, nothing counted', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    for (const [what, request] of [
      ['a metered call', (key: string) => hello(s, key)],
      ['_env_status', (key: string) => onB(s, key, { method: 'tools/call', params: { name: '_env_status', arguments: {} } })],
      ['tools/list', (key: string) => onB(s, key, { method: 'tools/list', params: {} })],
      [
        'tools/list (2026-07-28)',
        (key: string) =>
          onB(
            s,
            key,
            { method: 'tools/list', params: { _meta: MODERN_META } },
            { headers: { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' } },
          ),
      ],
      ['an unknown tool', (key: string) => onB(s, key, { method: 'tools/call', params: { name: 'utils__nope', arguments: {} } })],
      [
        'a call whose input is refused (a malformed env header)',
        (key: string) =>
          onB(s, key, { method: 'tools/call', params: { name: 'utils__hello', arguments: {} } }, { headers: { 'x-mcpworks-env': '%%%' } }),
      ],
      ['the create endpoint', (key: string) => onB(s, key, { method: 'tools/list', params: {} }, { path: `/mcp/create/${s.ns}` })],
      ['a GET', (key: string) => onB(s, key, {}, { method: 'GET' })],
      [
        'a call naming a session',
        (key: string) =>
          onB(
            s,
            key,
            { method: 'tools/call', params: { name: 'utils__hello', arguments: {} } },
            { headers: { 'mcp-session-id': 'not-a-session' } },
          ),
      ],
    ] as const) {
      const { key, id } = await cachedOnB(s);
      const before = await t.usage(s.account);
      await revokeOnA(s, id);
      assertRefusedKey(await request(key), what);
      assert.deepEqual(await t.usage(s.account), before, `${what}: nothing counted`);
    }
    await t.assertHealthy();
  });

  test('expired since it was cached: its next call is refused', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key, id } = await cachedOnB(s, { expires_in_days: 1 });
    // The key's day is over (as the database's clock sees it): the row is dated back.
    await changeUnannounced(sql`UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = ${id}`);
    const before = await t.usage(s.account);
    assertRefusedKey(await hello(s, key), 'an expired key');
    assert.deepEqual(await t.usage(s.account), before);
  });

  test("its account's plan changed through another node: the next call is held to the new plan's limits", async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key } = await cachedOnB(s);
    assert.equal((await t.usage(s.account)).executions, 2);
    await t.server.server.services.accounts.setTier(s.account.email, 'quota2');
    const answer = await hello(s, key);
    assert.equal(answer.status, 429, JSON.stringify(answer.body));
    assert.equal(answer.body.error?.data?.code ?? answer.body.code, 'QUOTA_EXCEEDED', JSON.stringify(answer.body));
    assert.equal((await t.usage(s.account)).executions, 2);
  });

  test("its namespace's function changed through another node: the next call runs the new version", async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('first') }], 'wide');
    const { key } = await cachedOnB(s);
    await callOk(s.create, 'update_function', { service: 'utils', name: 'hello', code: HELLO('second') });
    const answer = await hello(s, key);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(parseResult(answer.body.result), 'second');
  });

  test('its namespace changed through another node: tools/list and _env_status, answered while the key is looked up, answer the new catalog', async () => {
    // Both are answered with the cached key while its lookup is out, and held until it is in: a
    // lookup that finds the namespace at another catalog version has them answered again.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key } = await cachedOnB(s);
    await callOk(s.create, 'make_function', {
      service: 'utils',
      name: 'later',
      code: 'def main(input_data):\n    return 1\n',
      required_env: ['LATER_TOKEN'],
    });
    const listed = await onB(s, key, { method: 'tools/list', params: {} });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.deepEqual(listed.body.result.tools.map((tool: { name: string }) => tool.name).sort(), [
      '_env_status',
      'utils__hello',
      'utils__later',
    ]);
    const { key: second } = await cachedOnB(s);
    await callOk(s.create, 'update_function', { service: 'utils', name: 'later', required_env: ['LATER_TOKEN', 'LATER_SECRET'] });
    const status = await onB(s, second, { method: 'tools/call', params: { name: '_env_status', arguments: {} } });
    assert.equal(status.status, 200, JSON.stringify(status.body));
    assert.deepEqual([...parseResult(status.body.result).functions[0].required].sort(), ['LATER_SECRET', 'LATER_TOKEN']);
  });

  test('a tool its cached catalog does not have, made through another node: the call, answered again once the key is looked up, runs it once (both eras)', async () => {
    // Not admitted with the cached catalog (an unknown tool), answered by the MCP layer while the
    // key is looked up; the lookup finds the new catalog, where the call is admitted and answered
    // afresh. The discarded first answer takes no ticket: one run, one unit.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const modern = {
      'io.modelcontextprotocol/protocolVersion': '2026-07-28',
      'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
      'io.modelcontextprotocol/clientCapabilities': {},
    };
    for (const era of ['2025-06-18', '2026-07-28']) {
      const { key } = await cachedOnB(s);
      const before = await t.usage(s.account);
      const name = `later_${era.slice(0, 4)}`;
      await callOk(s.create, 'make_function', { service: 'utils', name, code: `def main(input_data):\n    return "${name}"\n` });
      const answer = await onB(
        s,
        key,
        { method: 'tools/call', params: { name: `utils__${name}`, arguments: {}, ...(era === '2026-07-28' ? { _meta: modern } : {}) } },
        {
          headers: era === '2026-07-28' ? { 'mcp-protocol-version': era, 'mcp-method': 'tools/call', 'mcp-name': `utils__${name}` } : {},
        },
      );
      assert.equal(answer.status, 200, `${era}: ${JSON.stringify(answer.body)}`);
      assert.equal(parseResult(answer.body.result), name, `${era}: ${JSON.stringify(answer.body)}`);
      assert.equal((await t.usage(s.account)).executions, before.executions + 1, era);
    }
  });

  test('without the execute scope, or limited to another namespace: refused every time, nothing counted', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const readOnly = await createKey(t.server.url, s.account, { name: 'read-only', scopes: ['read'] });
    const elsewhere = await createKey(t.server.url, s.account, { name: 'elsewhere', namespace: `${s.ns}-other` });
    for (const key of [readOnly, elsewhere]) {
      // The first is looked up (and cached), the second is not.
      for (let i = 0; i < 2; i++) {
        const answer = await hello(s, key);
        // Refused as a tool error or as an unknown tool (the key sees no tools there).
        assert.ok(answer.body.error ?? answer.body.result?.isError, JSON.stringify(answer.body));
      }
    }
    assert.equal((await t.usage(s.account)).executions, 0);
  });
});

describe('a 2025-era session cached with its key (Mcp-Session-Id, as Claude Code connects)', () => {
  /** A 2025-06-18 initialize of `key` on node B (`headers`: any more, a session's id say); the response, its body read. */
  async function initializeOnB(s: Space, key: string, headers: Record<string, string> = {}): Promise<{ response: Response; text: string }> {
    const response = await fetch(`${b.url}/mcp/run/${s.ns}?mode=tools`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${key}`,
        ...headers,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'key-cache', version: '1' } },
      }),
    });
    return { response, text: await response.text() };
  }

  /** A 2025-06-18 session of `key` on node B (initialize, then initialized); its id. */
  async function sessionOnB(s: Space, key: string): Promise<string> {
    const { response } = await initializeOnB(s, key);
    const id = response.headers.get('mcp-session-id');
    assert.ok(id, `initialize answered ${response.status} without a session`);
    const initialized = await onB(s, key, { method: 'notifications/initialized' }, { headers: { 'mcp-session-id': id } });
    assert.ok(initialized.status < 300, JSON.stringify(initialized));
    return id;
  }
  const inSession = (s: Space, key: string, session: string, message: Record<string, unknown>) =>
    onB(s, key, message, { headers: { 'mcp-session-id': session } });
  const helloIn = (s: Space, key: string, session: string) =>
    inSession(s, key, session, { method: 'tools/call', params: { name: 'utils__hello', arguments: {} } });

  /** A cached key with a session whose first call has been looked up (so the session is cached with the key). */
  async function cachedSession(s: Space): Promise<{ key: string; id: string; session: string }> {
    const { key, id } = await cachedOnB(s);
    const session = await sessionOnB(s, key);
    const first = await helloIn(s, key, session);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    return { key, id, session };
  }

  /**
   * A cached key's session last used 58 s ago, as a lookup (tools/list, not metered: always looked
   * up) caches that reading with the key, touching nothing (not yet a minute).
   */
  async function sessionSeen58sAgo(s: Space): Promise<{ key: string; session: string }> {
    const { key } = await cachedOnB(s);
    const session = await sessionOnB(s, key);
    await sql`UPDATE mcp_sessions SET last_seen_at = now() - interval '58 seconds' WHERE id = ${session}`.execute(
      t.server.server.services.db,
    );
    const listed = await inSession(s, key, session, { method: 'tools/list', params: {} });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    return { key, session };
  }

  function assertSessionGone(answer: { status: number; body: any }, what: string): void {
    assert.equal(answer.status, 404, `${what}: ${JSON.stringify(answer.body)}`);
    assert.match(JSON.stringify(answer.body), /Session not found/, what);
  }

  test('its calls run without a lookup once the session is cached, and are metered', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key, session } = await cachedSession(s);
    const before = await t.usage(s.account);
    const { value: answers, lookups } = await countingLookups(async () => {
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await helloIn(s, key, session));
      return answers;
    });
    for (const answer of answers) {
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(parseResult(answer.body.result), 'hi');
    }
    assert.equal(lookups, 0, 'key lookups for three calls of a cached key and session');
    assert.equal((await t.usage(s.account)).executions, before.executions + 3);
  });

  test('eight sessions of one key calling at once: after each session is looked up, their calls use the cache', async () => {
    // A key's lookups run concurrently here (each new session's first call is one): each must keep
    // what the others found, or the sessions keep pushing each other out of the key's entry and
    // every call is looked up (as the 15 clients of bench/throughput were).
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key } = await cachedOnB(s);
    const sessions = await Promise.all(Array.from({ length: 8 }, () => sessionOnB(s, key)));
    for (let round = 0; round < 2; round++) {
      const answers = await Promise.all(sessions.map((session) => helloIn(s, key, session)));
      for (const answer of answers) assert.equal(answer.status, 200, JSON.stringify(answer.body));
    }
    const { value: answers, lookups } = await countingLookups(() => Promise.all(sessions.map((session) => helloIn(s, key, session))));
    for (const answer of answers) assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(lookups, 0, 'key lookups for a round of the eight sessions');
  });

  test('a tool its cached catalog does not have, made through another node: the call in the session is answered again, runs once, and leaves no hold', async () => {
    // The 2025 sessions path holds the session while the request is answered (sessionActivity):
    // the first answer, read with the cached catalog, is discarded, the one made afresh goes out,
    // and the hold ends with it (a hold left would keep the session in use for ever).
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key, session } = await cachedSession(s);
    const before = await t.usage(s.account);
    await callOk(s.create, 'make_function', { service: 'utils', name: 'later', code: 'def main(input_data):\n    return "later"\n' });
    const answer = await inSession(s, key, session, { method: 'tools/call', params: { name: 'utils__later', arguments: {} } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(parseResult(answer.body.result), 'later', JSON.stringify(answer.body));
    assert.equal((await t.usage(s.account)).executions, before.executions + 1);
    const activity = b.server.services.sessionActivity!;
    for (let i = 0; i < 100 && activity.size() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(activity.size(), 0, 'sessions held after the answer');
  });

  test('its session ended or expired (idle, or past its time to live) through another node: its next call, _env_status and tools/list answer 404, nothing counted', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const db = t.server.server.services.db;
    for (const [how, change] of [
      ['ended', (session: string) => sql`DELETE FROM mcp_sessions WHERE id = ${session}`.execute(db)],
      [
        'expired (unused for longer than the idle limit)',
        (session: string) => sql`UPDATE mcp_sessions SET last_seen_at = now() - interval '2 hours' WHERE id = ${session}`.execute(db),
      ],
      [
        'expired (older than its time to live, though just used)',
        (session: string) => sql`UPDATE mcp_sessions SET created_at = now() - interval '8 days' WHERE id = ${session}`.execute(db),
      ],
    ] as const) {
      for (const [what, request] of [
        ['a metered call', (key: string, session: string) => helloIn(s, key, session)],
        [
          '_env_status',
          (key: string, session: string) =>
            inSession(s, key, session, { method: 'tools/call', params: { name: '_env_status', arguments: {} } }),
        ],
        ['tools/list', (key: string, session: string) => inSession(s, key, session, { method: 'tools/list', params: {} })],
      ] as const) {
        const { key, session } = await cachedSession(s);
        const before = await t.usage(s.account);
        await change(session);
        assertSessionGone(await request(key, session), `${how}: ${what}`);
        assert.deepEqual(await t.usage(s.account), before, `${how}: ${what}: nothing counted`);
      }
    }
    await t.assertHealthy();
  });

  test('used only through the cache: its use is still written in the database once its last is over a minute old', async () => {
    // Otherwise a session used for an hour only through cached calls would expire while in use.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const db = t.server.server.services.db;
    const { key, session } = await sessionSeen58sAgo(s);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const { value: answer, lookups } = await countingLookups(() => helloIn(s, key, session));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(lookups, 0, 'the call was served from the cache');
    const row = await sql<{
      idle: number;
    }>`SELECT extract(epoch FROM now() - last_seen_at)::float8 AS idle FROM mcp_sessions WHERE id = ${session}`.execute(db);
    assert.ok(row.rows[0] && row.rows[0].idle < 10, `the session's use was written (idle ${row.rows[0]?.idle} s)`);
  });

  test('expired in the database while its cached copy says it is due a touch: the touch does not revive it, the call answers 404', async () => {
    // The node keeps the session's last use as a lookup read it, and touches the session once that
    // is over a minute old. A session expired meanwhile in the database (an hour unused; not yet
    // swept) must stay expired: a touch that wrote last_seen_at anyway would make it live again,
    // and its admission would then let the call run.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const db = t.server.server.services.db;
    const { key, session } = await sessionSeen58sAgo(s);
    // It expires in the database; the cached reading becomes over a minute old.
    await sql`UPDATE mcp_sessions SET last_seen_at = now() - interval '2 hours' WHERE id = ${session}`.execute(db);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const before = await t.usage(s.account);
    assertSessionGone(await helloIn(s, key, session), 'a call in a session expired in the database');
    assert.deepEqual(await t.usage(s.account), before, 'nothing counted');
    const row = await sql<{
      stale: boolean;
    }>`SELECT last_seen_at < now() - interval '1 hour' AS stale FROM mcp_sessions WHERE id = ${session}`.execute(db);
    assert.ok(row.rows.length === 0 || row.rows[0]!.stale, 'the expired session was not made live again');
  });

  test('its session ended through another node: an initialize still naming it starts a new session (as without the cache)', async () => {
    // An initialize is not "in" the session its Mcp-Session-Id names (mcp-endpoint.ts skips that
    // check for it): a client re-initializing after its session ended gets a new one, whatever
    // header it still sends, whether or not this node has the old session cached.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key, session } = await cachedSession(s);
    await sql`DELETE FROM mcp_sessions WHERE id = ${session}`.execute(t.server.server.services.db);
    const { response, text } = await initializeOnB(s, key, { 'mcp-session-id': session });
    assert.equal(response.status, 200, text);
    const renewed = response.headers.get('mcp-session-id');
    assert.ok(renewed && renewed !== session, `a new session, not ${renewed}`);
  });

  test('its key revoked through another node: a call in the cached session is refused, nothing counted', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key, id, session } = await cachedSession(s);
    const before = await t.usage(s.account);
    await revokeOnA(s, id);
    assertRefusedKey(await helloIn(s, key, session), 'a revoked key in its cached session');
    assert.deepEqual(await t.usage(s.account), before);
  });

  test("another account's session id with a cached key: not found, every time, nothing counted", async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const other = await t.space([{ name: 'hello', code: HELLO('other') }], 'wide');
    const theirs = await sessionOnB(other, (await cachedOnB(other)).key);
    const { key } = await cachedOnB(s);
    const before = await t.usage(s.account);
    for (let i = 0; i < 3; i++) assertSessionGone(await helloIn(s, key, theirs), `call ${i + 1}`);
    assert.deepEqual(await t.usage(s.account), before);
  });
});

describe('a 2025-03-26 batch with a cached key (each part is served as a request of its own)', () => {
  /** A batch of `parts` (ids 1, 2, … in order) to node B's run endpoint, no session; its answer and how many key lookups B made for it. */
  async function batchOnB(s: Space, key: string, parts: Array<Record<string, unknown>>) {
    const { value, lookups } = await countingLookups(async () => {
      const response = await fetch(`${b.url}/mcp/run/${s.ns}?mode=tools`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-03-26',
          authorization: `Bearer ${key}`,
        },
        body: JSON.stringify(parts.map((part, i) => ({ jsonrpc: '2.0', id: i + 1, ...part }))),
        signal: AbortSignal.timeout(60_000),
      });
      return { status: response.status, text: await response.text() };
    });
    return { ...value, lookups };
  }
  const copies = (message: Record<string, unknown>, count: number) => Array.from({ length: count }, () => message);

  test('revoked: every part refused after one lookup, not one lookup per part (tools/call and tools/list)', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    for (const message of [
      { method: 'tools/call', params: { name: 'utils__hello', arguments: {} } },
      { method: 'tools/list', params: {} },
    ]) {
      const { key, id } = await cachedOnB(s);
      const before = await t.usage(s.account);
      await revokeOnA(s, id);
      const answer = await batchOnB(s, key, copies(message, 20));
      const refusals = answer.text.match(/invalid, revoked or expired API key/g) ?? [];
      assert.equal(refusals.length, 20, `${message.method}: ${answer.text.slice(0, 500)}`);
      assert.equal(answer.lookups, 1, `${message.method}: key lookups for one batch`);
      assert.deepEqual(await t.usage(s.account), before, `${message.method}: nothing counted`);
    }
  });

  test('a tool its cached catalog does not have, made through another node: each call part, answered again once the key is looked up, runs once', async () => {
    // The parts share one lookup (the ping's, made before it is served): each call part's check
    // ends with it. The answers read with the cached catalog (tool not found) are discarded; each
    // call part is admitted with the new catalog and runs once, in its answer made afresh.
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key } = await cachedOnB(s);
    const before = await t.usage(s.account);
    await callOk(s.create, 'make_function', { service: 'utils', name: 'later', code: 'def main(input_data):\n    return "later"\n' });
    const calls = 4;
    const { status, text } = await batchOnB(s, key, [
      { method: 'ping' },
      ...copies({ method: 'tools/call', params: { name: 'utils__later', arguments: {} } }, calls),
    ]);
    assert.equal(status, 200, text.slice(0, 800));
    assert.equal((text.match(/\\"later\\"|"later"/g) ?? []).length, calls, text.slice(0, 1500));
    assert.equal((await t.usage(s.account)).executions, before.executions + calls);
  });

  test('live: its tools/list parts share one lookup; its calls are checked by their admissions and run', async () => {
    const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
    const { key } = await cachedOnB(s);
    const listed = await batchOnB(s, key, copies({ method: 'tools/list', params: {} }, 20));
    assert.equal((listed.text.match(/utils__hello/g) ?? []).length >= 20, true, listed.text.slice(0, 500));
    assert.equal(listed.lookups, 1);
    const called = await batchOnB(s, key, copies({ method: 'tools/call', params: { name: 'utils__hello', arguments: {} } }, 5));
    assert.equal((called.text.match(/"isError":false|\\"hi\\"|"hi"/g) ?? []).length >= 5, true, called.text.slice(0, 800));
    assert.equal((await t.usage(s.account)).executions, 2 + 5);
  });
});

test('revoked through the node that cached it: its next request is refused before its body is read', async () => {
  const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
  const { key, id } = await cachedOnB(s);
  // Its notification held back (the trigger off meanwhile): what drops the key is the revoking
  // node's own revokeKey, before its answer, not a notification that may come later.
  const db = t.server.server.services.db;
  await sql`ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify`.execute(db);
  try {
    const revoked = await fetch(`${b.url}/api/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${s.account.token}` } });
    assert.equal(revoked.status, 200);
  } finally {
    await sql`ALTER TABLE api_keys ENABLE TRIGGER api_keys_notify`.execute(db);
  }
  // Not JSON: a body that is read answers 400 (a parse error), a key refused before it 401.
  const answer = await fetch(`${b.url}/mcp/run/${s.ns}?mode=tools`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${key}` },
    body: '{not json',
  });
  assertRefusedKey({ status: answer.status, body: await answer.text() }, 'a key revoked through this node');
});

test('revoked through another node: the database tells this node, whose next request is refused before its body is read', async () => {
  const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
  const { key, id } = await cachedOnB(s);
  if (b === t.server) {
    // Embedded, one node: a revocation by another process (the operator's CLI) is the row's, and
    // its notification reaches this node as well.
    await sql`UPDATE api_keys SET revoked_at = now() WHERE id = ${id}`.execute(t.server.server.services.db);
  } else {
    const response = await fetch(`${t.server.url}/api/keys/${id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${s.account.token}` },
    });
    assert.equal(response.status, 200);
  }
  const answer = await notJsonOnBUntilRefused(s, key);
  assertRefusedKey(answer, 'a key revoked through another node, once its notification is in');
});

test("its listener reconnected: every key leaves the node's cache (a revocation's notification may have been missed)", async (ctx) => {
  if (b === t.server) return ctx.skip('PostgreSQL only: the embedded database has no connection to lose');
  const s = await t.space([{ name: 'hello', code: HELLO('hi') }], 'wide');
  const { key, id } = await cachedOnB(s);
  // Revoked with its notification lost, then the nodes' listening connections dropped by the server.
  await revokeOnA(s, id);
  const db = t.server.server.services.db;
  await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()`.execute(db);
  const answer = await notJsonOnBUntilRefused(s, key);
  assertRefusedKey(answer, 'a key revoked while the listener was away, once it is back');
});
