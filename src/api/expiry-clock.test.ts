// test-database: postgres, a node's clock moved against the database's (PostgreSQL's now() does not follow the test's Date)
/**
 * Expiry sites on the database's clock (core/database-clock.ts), beside crash.test's skewed nodes:
 * one in-process server whose wall clock is moved after a session is made (as skewed-clock.mjs moves
 * a child's), the lease's renewals then measuring the offset. Housekeeping on a node an hour ahead
 * must not delete another node's live session; a node an hour behind must still touch the sessions
 * it serves (found by a review: both were still on the node's own clock).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { databaseClockOffsetMs } from '../core/database-clock.js';
import { MCP_SESSION_IDLE_MS } from '../store/accounts-store.js';
import { connect, createAccount, rawMcpPost, startTestServer, type TestServer } from '../test-support/harness.js';
import { until } from '../test-support/processes.js';

const RealDate = Date;
function skewClock(ms: number): void {
  class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + ms);
      else super(...(args as [number]));
    }
    static override now() {
      return RealDate.now() + ms;
    }
  }
  globalThis.Date = SkewedDate as DateConstructor;
}

let server: TestServer;
const skip = !process.env.MCPWORKS_TEST_DATABASE_URL && 'needs PostgreSQL (MCPWORKS_TEST_DATABASE_URL)';

before(async () => {
  if (skip) return;
  server = await startTestServer({ leaseMs: 600 });
});
after(async () => {
  globalThis.Date = RealDate;
  await server?.stop();
});

async function query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: server.databaseUrl! });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

async function skewAndMeasure(ms: number): Promise<void> {
  skewClock(ms);
  await until(
    'the lease measured the offset',
    async () => databaseClockOffsetMs(),
    (offset) => Math.abs(offset + ms) < 5_000,
  );
}

test('housekeeping on a node an hour ahead keeps a live MCP session made a moment ago', { skip }, async () => {
  const account = await createAccount(server.url);
  const url = `${server.url}/mcp/create/clock-ns`;
  const session = await connect(url, account.key, 'v1');
  const id = session.sessionId()!;
  assert.ok(id);
  try {
    await skewAndMeasure(3_600_000);
    // What the node's timer runs at start and every 5 minutes (services/housekeeping.ts).
    const swept = await server.server.services.housekeeping.sweep();
    const rows = await query('SELECT id FROM mcp_sessions WHERE id = $1', [id]);
    assert.equal(rows.length, 1, `a session used a moment ago was deleted as idle for an hour (swept ${JSON.stringify(swept)})`);
  } finally {
    globalThis.Date = RealDate;
    await session.close().catch(() => undefined);
  }
});

test('a node an hour behind keeps a session it serves alive (idle expiry touched on the database clock)', { skip }, async () => {
  const account = await createAccount(server.url);
  const url = `${server.url}/mcp/create/clock-ns2`;
  const session = await connect(url, account.key, 'v1');
  const id = session.sessionId()!;
  try {
    // Last seen 59 minutes ago by the database: one more minute idle and it expires.
    await query(`UPDATE mcp_sessions SET last_seen_at = now() - make_interval(secs => $2::float8) WHERE id = $1`, [
      id,
      (MCP_SESSION_IDLE_MS - 60_000) / 1000,
    ]);
    await skewAndMeasure(-3_600_000);
    const used = await rawMcpPost(url, account.key, { jsonrpc: '2.0', id: 5, method: 'tools/list' }, { 'mcp-session-id': id });
    assert.equal(used.status, 200);
    const [row] = await query<{ idle_s: number }>(
      `SELECT extract(epoch FROM now() - last_seen_at)::float8 AS idle_s FROM mcp_sessions WHERE id = $1`,
      [id],
    );
    assert.ok(row && row.idle_s < 60, `the session in use was not touched: idle ${row?.idle_s} s by the database, it expires at 3600`);
  } finally {
    globalThis.Date = RealDate;
    await session.close().catch(() => undefined);
  }
});
