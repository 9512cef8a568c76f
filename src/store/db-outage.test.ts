// test-database: postgres, a real PostgreSQL stopped and started under load
// Issue 11, item 1: a real PostgreSQL stopped (-m immediate, then -m fast) and started again under
// load, then black-holed (SIGSTOP: its connections stay open and nothing answers) and resumed. The server must survive (an unhandled `error` on a checked-out pg client killed it), answer
// 503 + Retry-After while the database is away, report /healthz degraded promptly, reconnect by
// itself, and record and count every run that ran (held in the pending-writes outbox meanwhile),
// with no slot left taken. Runs on the PostgreSQL leg only (MCPWORKS_TEST_DATABASE_URL set), on a
// PostgreSQL of its own so that the suite's shared one stays up.
import assert from 'node:assert/strict';
import pg from 'pg';
import { after, before, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import {
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { startPrivatePostgres, type PrivatePostgres } from '../test-support/private-postgres.js';
import { fetchWithin, until } from '../test-support/processes.js';

const enabled = !!process.env.MCPWORKS_TEST_DATABASE_URL;
const SLOW = 'import time\ndef main(input_data):\n    time.sleep(input_data.get("s", 0))\n    return {"slept": input_data.get("s", 0)}\n';

let database: PrivatePostgres;
let server: TestServer;
let account: TestAccount;
let ns: string;

before(async () => {
  if (!enabled) return;
  database = startPrivatePostgres();
  server = await startTestServer({
    databaseUrl: database.url,
    tiers: applyTierOverrides(JSON.stringify({ open: { monthly_executions: -1, executions_per_minute: -1, concurrency: -1 } })),
  });
  account = await createAccount(server.url);
  await server.server.services.accounts.setTier(account.email, 'open');
  ns = `outage-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'm' });
  await callOk(create, 'make_function', { service: 'm', name: 'slow', code: SLOW });
  await create.close();
});

after(async () => {
  try {
    database?.resume();
  } catch {
    // not running
  }
  await server?.stop();
  database?.remove();
});

async function health(): Promise<{ status: number; body: any }> {
  // Prompt even with the database gone: the probe is bounded (1 s), far below this.
  const response = await fetchWithin(5_000, `${server.url}/healthz`);
  return { status: response.status, body: await response.json() };
}

const usage = async () =>
  (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } })).json() as Promise<any>;

async function recordsOf(accountId: string): Promise<number> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  try {
    const { rows } = await client.query('SELECT count(*)::int AS n FROM executions WHERE account_id = $1', [accountId]);
    return rows[0].n;
  } finally {
    await client.end();
  }
}

for (const mode of ['immediate', 'fast', 'black-holed'] as const) {
  const fault =
    mode === 'black-holed'
      ? 'black-holed (every postgres process stopped with SIGSTOP: connections stay open, nothing answers)'
      : `stopped with -m ${mode}`;
  test(
    `PostgreSQL ${fault} under load: 503 + Retry-After, /healthz degraded, reconnects, every run recorded and counted once`,
    { skip: !enabled && 'needs MCPWORKS_TEST_DATABASE_URL (the PostgreSQL leg)' },
    async (t) => {
      const before = await usage();
      const recordsBefore = await recordsOf(account.accountId);
      const tools = `${server.url}/mcp/run/${ns}?mode=tools`;
      // Clients of every era connect (and the function's code is cached) while the database is up.
      const clients: McpTestClient[] = [
        await connect(tools, account.key, 'v1'),
        await connect(tools, account.key, 'v2'),
        await connect(tools, account.key, 'v2-legacy'),
      ];
      const code = await connect(`${server.url}/mcp/run/${ns}`, account.key, 'v2');
      clients.push(code);
      let succeeded = 0;
      assert.deepEqual(await callOk(clients[0]!, 'm__slow', { s: 0 }), { slept: 0 });
      succeeded++;

      const quick = await connect(tools, account.key, 'v2');
      // Four runs in flight (tool mode in three eras, and code mode) when the database goes.
      const inFlight = [
        ...clients.slice(0, 3).map((client) => client.callTool('m__slow', { s: 5 })),
        code.callTool('execute', { code: 'import time\ntime.sleep(5)\nresult = 5' }),
      ];
      await until('four slots taken', usage, (u) => u.concurrency.active >= before.concurrency.active + 4);
      // A steady stream of short calls throughout the outage, counting what each got (started once
      // the four runs hold their slots, so that those four are what the count below sees).
      let streaming = true;
      t.after(() => {
        streaming = false;
      });
      const outcomes = { ok: 0, toolError: 0, refused: 0 };
      const stream = (async () => {
        while (streaming) {
          try {
            const result = await quick.callTool('m__slow', { s: 0 });
            if (result.isError) outcomes.toolError++;
            else if (parseResult(result).slept === 0) outcomes.ok++;
          } catch {
            outcomes.refused++;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      })();

      if (mode === 'black-holed') database.pause();
      else database.stop(mode);

      const degraded = await until('/healthz degraded', health, (h) => h.status === 503);
      assert.equal(degraded.body.status, 'degraded');
      assert.equal(degraded.body.database_state, 'unreachable');

      // Requests that need the database: 503, Retry-After, a JSON error (never a 500 or a hang).
      const refused = await fetchWithin(5_000, tools, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${account.key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'm__slow', arguments: {} } }),
      });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '5');
      assert.equal(((await refused.json()) as any).error.data.type, 'unavailable');
      const login = await fetch(`${server.url}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: account.email, password: account.password }),
      });
      assert.equal(login.status, 503);
      assert.ok(login.headers.get('retry-after'));

      // The runs in flight ran fully: their answers go out, their records wait in the outbox.
      const answers = await Promise.all(inFlight);
      for (const answer of answers.slice(0, 3)) assert.deepEqual(parseResult(answer), { slept: 5 });
      assert.equal(parseResult(answers[3]!), 5);
      succeeded += 4;
      assert.ok((await health()).body.pending_writes >= 4, 'the four records are pending');

      if (mode === 'black-holed') database.resume();
      else database.start();
      const back = await until('/healthz ok again', health, (h) => h.status === 200 && h.body.pending_writes === 0);
      assert.equal(back.body.database_state, 'ok');
      await until(
        'a call succeeds again',
        async () => outcomes.ok,
        (n) => n > 0 && streaming,
      );
      const okBefore = outcomes.ok;
      await until(
        'more calls succeed',
        async () => outcomes.ok,
        (n) => n >= okBefore + 3,
      );
      streaming = false;
      await stream;
      succeeded += outcomes.ok;
      assert.equal(outcomes.toolError, 0, 'a refused call is refused before it runs (HTTP 503), never a tool error after');

      // Every run that ran is recorded and counted exactly once; no slot stays taken.
      const after = await usage();
      assert.equal(after.executions - before.executions, succeeded, 'counted: every answered run, nothing else');
      assert.equal((await recordsOf(account.accountId)) - recordsBefore, succeeded, 'recorded: every answered run');
      assert.equal(after.concurrency.active, 0, 'no slot leaked');
      for (const client of [...clients, quick]) await client.close().catch(() => undefined);
    },
  );
}
