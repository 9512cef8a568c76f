// test-database: postgres, admission races over parallel connections (the account row lock)
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { freshDatabaseUrl, seedEmbeddedDatabase, testDataRoot } from '../test-support/harness.js';
import { AccountsStore } from './accounts-store.js';
import { CatalogStore } from './catalog-store.js';
import { openDatabase, type OpenDatabase } from './database.js';
import { ExecutionsStore, type ExecutionRecord } from './executions-store.js';
import { MeteringStore, type AdmissionRequest } from './metering-store.js';

// The quota ledger on its own (embedded PGlite, or the PostgreSQL of MCPWORKS_TEST_DATABASE_URL):
// admission, settling and the run ledger's settle-and-record, including slots left by a dead node.

let database: OpenDatabase;
let dataDir: string;
let accounts: AccountsStore;
let catalog: CatalogStore;
let metering: MeteringStore;
let executions: ExecutionsStore;

before(async () => {
  dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-metering-'));
  const databaseUrl = await freshDatabaseUrl();
  if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
  database = await openDatabase({ databaseUrl, dataDir });
  accounts = new AccountsStore(database.db);
  catalog = new CatalogStore(database.db);
  metering = new MeteringStore(database.db);
  executions = new ExecutionsStore(database.db);
});

after(async () => {
  await database.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/**
 * Time passing for the database's clock, which slot expiries and leases are compared with (never
 * a caller's `now`): the account's slots expire and deadlines come `ms` earlier.
 */
async function ageSlots(accountId: string, ms: number): Promise<void> {
  await sql`UPDATE active_executions SET expires_at = expires_at - make_interval(secs => ${ms / 1000}::float8),
    deadline_at = deadline_at - make_interval(secs => ${ms / 1000}::float8) WHERE account_id = ${accountId}`.execute(database.db);
}

/** Time passing for the database's clock, which minute windows are: the account's windows are a minute older. */
async function ageWindows(accountId: string): Promise<void> {
  await sql`UPDATE rate_windows SET window_start = window_start - interval '1 minute' WHERE account_id = ${accountId}`.execute(database.db);
}

/** The database's minute (its clock: what admission counts by). */
async function databaseMinute(): Promise<string> {
  const { rows } = await sql<{ minute: string }>`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS minute`.execute(
    database.db,
  );
  return rows[0]!.minute;
}

/**
 * Runs `attempt` until it ran within one minute of the database's clock (at most 3 times): an
 * attempt that straddled a window's end proves nothing about the window.
 */
async function withinOneMinute<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    const before = await databaseMinute();
    const result = await attempt();
    if ((await databaseMinute()) === before || tries === 3) return result;
  }
}

/** An account's count in `month` (`YYYY-MM`), read from the ledger. */
async function countIn(accountId: string, month: string): Promise<number> {
  const row = await database.db
    .selectFrom('usage_months')
    .select('executions')
    .where('account_id', '=', accountId)
    .where('month', '=', month)
    .executeTakeFirst();
  return row?.executions ?? 0;
}

/**
 * Until a statement containing `text` waits for a lock (the account's row another connection
 * holds). Read outside that connection's transaction: within one, pg_stat_activity is the
 * snapshot of its first read.
 */
async function untilWaitingForLock(text: string): Promise<void> {
  for (let waited = 0; ; waited += 10) {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND strpos(query, ${text}) > 0 AND pid <> pg_backend_pid()`.execute(database.db);
    if (Number(rows[0]!.n) > 0) return;
    assert.ok(waited < 10_000, `a statement with ${text} waits for the account's row`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const UNLIMITED = { monthlyExecutions: null, executionsPerMinute: null, concurrency: null, timeoutSeconds: 30 };

async function newAccount(): Promise<{ accountId: string; namespaceId: string }> {
  const account = await accounts.createAccount({
    email: `m-${randomUUID()}@example.com`,
    passwordHash: 'x',
    tier: 'pro',
    trialEndsAt: null,
  });
  assert.ok(account);
  const ns = await catalog.createNamespace(account.id, `ns-${randomUUID().slice(0, 8)}`, '');
  assert.ok(ns);
  return { accountId: account.id, namespaceId: ns.id };
}

function admit(accountId: string, limits: Partial<AdmissionRequest['limits']>, now = new Date(), ticketId = randomUUID()) {
  return metering
    .admit({ ticketId, accountId, limits: { ...UNLIMITED, ...limits }, now })
    .then((rejection) => ({ ticketId, rejection, now }));
}

function record(accountId: string, namespaceId: string, id: string): ExecutionRecord {
  return {
    id,
    accountId,
    namespaceId,
    keyId: null,
    mode: 'tools',
    serviceName: 'utils',
    functionName: 'hello',
    functionId: null,
    version: 1,
    functions: ['utils.hello@1'],
    language: 'python',
    status: 'success',
    errorType: null,
    errorMessage: null,
    durationMs: 3,
    bytesOut: 10,
    stdout: '',
    stderr: '',
  };
}

describe('metering store', () => {
  test('a quota of N admits N, then refuses with the count and counts nothing more', async () => {
    // Within one minute of the database's clock: `lastMinute` counts the minute's admissions.
    const { usage } = await withinOneMinute(async () => {
      const { accountId } = await newAccount();
      for (let i = 0; i < 3; i++) assert.equal((await admit(accountId, { monthlyExecutions: 3 })).rejection, undefined);
      assert.deepEqual((await admit(accountId, { monthlyExecutions: 3 })).rejection, { code: 'QUOTA_EXCEEDED', usage: 3, limit: 3 });
      return { accountId, usage: await metering.usage(accountId) };
    });
    assert.equal(usage.executions, 3);
    assert.equal(usage.active, 3);
    assert.equal(usage.lastMinute, 3);
  });

  test('parallel admissions against a quota of 10 admit exactly 10', async () => {
    const { accountId } = await newAccount();
    const results = await Promise.all(Array.from({ length: 30 }, () => admit(accountId, { monthlyExecutions: 10 })));
    assert.equal(results.filter((r) => r.rejection === undefined).length, 10);
    assert.ok(results.filter((r) => r.rejection !== undefined).every((r) => r.rejection?.code === 'QUOTA_EXCEEDED'));
    assert.equal((await metering.usage(accountId)).executions, 10);
  });

  // The races: many admissions of one account at once. On PostgreSQL (scripts/test.sh re-runs this
  // file there) they go over up to 10 parallel connections, so without the account's row lock in
  // mcpworks_admit two of them read the same count and both pass: these tests then fail. PGlite
  // serialises every checkout, so there they cannot fail; they must run on PostgreSQL.
  for (const [gate, limits, code] of [
    ['monthly quota', { monthlyExecutions: 7 }, 'QUOTA_EXCEEDED'],
    ['per-minute rate', { executionsPerMinute: 7 }, 'EXECUTION_RATE_EXCEEDED'],
    ['concurrency', { concurrency: 7 }, 'CONCURRENCY_LIMIT_EXCEEDED'],
  ] as const) {
    test(`race: 4 accounts x 40 parallel admissions against a ${gate} of 7 admit exactly 7 each`, async () => {
      // Within one minute of the database's clock (the rate window must not roll over mid-test).
      const { accounts, results, usages } = await withinOneMinute(async () => {
        const accounts = await Promise.all(Array.from({ length: 4 }, () => newAccount()));
        const results = await Promise.all(
          accounts.flatMap(({ accountId }) =>
            Array.from({ length: 40 }, () => admit(accountId, limits).then((r) => ({ accountId, ...r }))),
          ),
        );
        const usages = await Promise.all(accounts.map(({ accountId }) => metering.usage(accountId)));
        return { accounts, results, usages };
      });
      accounts.forEach(({ accountId }, i) => {
        const mine = results.filter((r) => r.accountId === accountId);
        assert.equal(mine.filter((r) => r.rejection === undefined).length, 7, `${gate}: admitted`);
        assert.ok(mine.filter((r) => r.rejection !== undefined).every((r) => r.rejection?.code === code));
        const usage = usages[i]!;
        assert.deepEqual([usage.executions, usage.lastMinute, usage.active], [7, 7, 7], `${gate}: counted`);
      });
    });
  }

  test('the concurrency limit counts held slots; settling frees one', async () => {
    const { accountId } = await newAccount();
    const first = await admit(accountId, { concurrency: 1 });
    assert.equal(first.rejection, undefined);
    // Retry after: when the held call reaches its time limit (30 s, plus 2 s to settle).
    assert.deepEqual((await admit(accountId, { concurrency: 1 }, first.now)).rejection, {
      code: 'CONCURRENCY_LIMIT_EXCEEDED',
      limit: 1,
      retryAfter: 32,
    });
    await ageSlots(accountId, 20_500);
    assert.deepEqual((await admit(accountId, { concurrency: 1 }, new Date(first.now.getTime() + 20_500))).rejection, {
      code: 'CONCURRENCY_LIMIT_EXCEEDED',
      limit: 1,
      retryAfter: 12,
    });
    // Held past its deadline (an install or a queue before the sandbox): free by its expiry (30 s + 120 s) at the latest.
    await ageSlots(accountId, 19_500);
    assert.deepEqual((await admit(accountId, { concurrency: 1 }, new Date(first.now.getTime() + 40_000))).rejection, {
      code: 'CONCURRENCY_LIMIT_EXCEEDED',
      limit: 1,
      retryAfter: 110,
    });
    await metering.settle(first.ticketId, accountId, true);
    assert.equal((await admit(accountId, { concurrency: 1 })).rejection, undefined);
    assert.equal((await metering.usage(accountId)).executions, 2, 'a refused admission counts nothing');
  });

  test("executions per minute: a full window refuses until the database's next minute", async () => {
    const { accountId, refused } = await withinOneMinute(async () => {
      const { accountId } = await newAccount();
      for (let i = 0; i < 2; i++) assert.equal((await admit(accountId, { executionsPerMinute: 2 })).rejection, undefined);
      return { accountId, refused: (await admit(accountId, { executionsPerMinute: 2 })).rejection };
    });
    assert.equal(refused?.code, 'EXECUTION_RATE_EXCEEDED');
    assert.equal(refused?.limit, 2);
    // Until the database's minute ends: at most a minute.
    const retryAfter = (refused as { retryAfter: number }).retryAfter;
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry after ${retryAfter} s`);
    await ageWindows(accountId);
    assert.equal((await admit(accountId, { executionsPerMinute: 2 })).rejection, undefined);
  });

  test('rate units (sandboxes a running call starts) share the minute window with admissions, exactly, in parallel', async () => {
    const { accountId, taken, admittedCount, usage } = await withinOneMinute(async () => {
      const { accountId } = await newAccount();
      assert.equal((await admit(accountId, { executionsPerMinute: 10 })).rejection, undefined);
      // 20 units and 5 admissions at once against the 9 left: exactly 9 pass.
      const [taken, admitted] = await Promise.all([
        Promise.all(Array.from({ length: 20 }, () => metering.takeRateUnit(accountId, 10))),
        Promise.all(Array.from({ length: 5 }, () => admit(accountId, { executionsPerMinute: 10 }))),
      ]);
      return { accountId, taken, admittedCount: admitted.filter((a) => !a.rejection).length, usage: await metering.usage(accountId) };
    });
    assert.equal(taken.filter((unit) => unit.taken).length + admittedCount, 9);
    const refusal = taken.find((unit) => !unit.taken);
    assert.ok(
      refusal && !refusal.taken && refusal.windowEndsInMs > 0 && refusal.windowEndsInMs <= 60_000,
      'a refusal says when the window ends',
    );
    assert.equal(usage.lastMinute, 10);
    assert.equal(usage.executions, 1 + admittedCount, 'a unit takes nothing of the monthly quota');
    await ageWindows(accountId);
    assert.deepEqual(await metering.takeRateUnit(accountId, 10), { taken: true }, 'the next window');
    assert.deepEqual(await metering.takeRateUnit(accountId, null), { taken: true }, 'no limit: counted all the same');
    assert.equal((await metering.usage(accountId)).lastMinute, 2);
  });

  test("skewed node clocks: the month and the minute window are the database's, whatever the admitting node's clock says", async () => {
    // Three nodes at one instant: one whose clock is right, one 40 days ahead, one 40 days behind.
    const { accountId, refused, usage, month } = await withinOneMinute(async () => {
      const { accountId } = await newAccount();
      const limits = { executionsPerMinute: 3 };
      const day = 86_400_000;
      const admitted = [];
      for (const skew of [0, 40 * day, -40 * day]) admitted.push(await admit(accountId, limits, new Date(Date.now() + skew)));
      assert.deepEqual(
        admitted.map((a) => a.rejection),
        [undefined, undefined, undefined],
      );
      // One window for all three: a fourth call, by any node's clock, is refused.
      const refused = (await admit(accountId, limits, new Date(Date.now() + 3_600_000))).rejection;
      const usage = await metering.usage(accountId);
      return { accountId, refused, usage, month: usage.month };
    });
    assert.equal(refused?.code, 'EXECUTION_RATE_EXCEEDED', 'the per-minute window is shared');
    assert.equal(usage.executions, 3, "all three count in the database's month");
    assert.equal(usage.lastMinute, 3);
    assert.equal(await countIn(accountId, month), 3, 'and nowhere else');
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM usage_months WHERE account_id = ${accountId}`.execute(
      database.db,
    );
    assert.equal(rows[0]!.n, 1, 'one month row');
    // A refund goes back to the month the unit was counted in, whatever the settling node's clock.
    const skewed = await admit(accountId, {}, new Date(Date.now() + 40 * 86_400_000));
    assert.equal(skewed.rejection, undefined);
    assert.equal((await metering.usage(accountId)).executions, 4);
    await metering.settle(skewed.ticketId, accountId, false);
    assert.equal(await countIn(accountId, month), 3, 'refunded in the month it was counted in');
  });

  test('settle: a failed call gives its unit back once; a successful one keeps it', async () => {
    const { accountId } = await newAccount();
    const failed = await admit(accountId, {});
    const succeeded = await admit(accountId, {});
    await metering.settle(failed.ticketId, accountId, false);
    await metering.settle(failed.ticketId, accountId, false);
    await metering.settle(succeeded.ticketId, accountId, true);
    const usage = await metering.usage(accountId);
    assert.equal(usage.executions, 1);
    assert.equal(usage.active, 0);
  });

  test('finish settles and records in one: refunds an uncounted call, keeps a counted one, records both with security events', async () => {
    const { accountId, namespaceId } = await newAccount();
    const counted = await admit(accountId, {});
    const uncounted = await admit(accountId, {});
    await executions.finish({ ticketId: counted.ticketId, accountId, counted: true }, record(accountId, namespaceId, counted.ticketId), [
      'api_key',
      'jwt',
    ]);
    await executions.finish(
      { ticketId: uncounted.ticketId, accountId, counted: false },
      { ...record(accountId, namespaceId, uncounted.ticketId), status: 'error', errorType: 'SandboxError', errorMessage: 'x\u0000y' },
      [],
    );
    // Already settled (e.g. by the endpoint): only the record; a refund is never taken twice.
    await executions.finish({ ticketId: uncounted.ticketId, accountId, counted: false }, record(accountId, namespaceId, randomUUID()), []);
    await executions.finish(null, record(accountId, namespaceId, randomUUID()), []);
    const usage = await metering.usage(accountId);
    assert.equal(usage.executions, 1);
    assert.equal(usage.active, 0);
    const rows = await executions.list({ namespaceId }, { limit: 10 });
    assert.equal(rows.length, 4);
    assert.equal(rows.find((r) => r.id === uncounted.ticketId)?.error_message, 'x\uFFFDy');
    const events = await executions.listSecurityEvents({ namespaceId }, undefined, 10);
    assert.deepEqual(events.map((e) => (e.detail as { detection: string }).detection).sort(), ['api_key', 'jwt']);
    assert.ok(events.every((e) => e.execution_id === counted.ticketId));
  });

  test('every shape of the recording statement (settled counted or not, or not at all; with security events or none) writes the same record', async () => {
    const { accountId, namespaceId } = await newAccount();
    // A second namespace of the account: an event filed under the wrong one would show.
    assert.ok(await catalog.createNamespace(accountId, `ns-${randomUUID().slice(0, 8)}`, ''));
    for (const settled of ['counted', 'uncounted', 'none'] as const) {
      for (const findings of [[], ['password', 'api_key']]) {
        const admitted = await admit(accountId, {});
        const settlement = settled === 'none' ? null : { ticketId: admitted.ticketId, accountId, counted: settled === 'counted' };
        const written: ExecutionRecord = {
          ...record(accountId, namespaceId, admitted.ticketId),
          agentId: null,
          trigger: 'schedule',
          status: 'error',
          errorType: 'TimeoutError',
          errorMessage: `${settled} ${findings.length}`,
          durationMs: 12.6,
          stdout: 'out',
          stderr: 'err',
          code: 'print(1)',
          result: '{"a":1}',
        };
        await executions.finish(settlement, written, findings);
        const row = await executions.find(namespaceId, admitted.ticketId);
        assert.ok(row, `${settled}, ${findings.length} events: recorded`);
        assert.deepEqual(
          [row.account_id, row.namespace_id, row.key_id, row.agent_id, row.mode, row.trigger, row.service_name, row.function_name],
          [accountId, namespaceId, null, null, 'tools', 'schedule', 'utils', 'hello'],
        );
        assert.deepEqual(
          [row.function_id, row.version, row.functions, row.language, row.status, row.error_type, row.error_message],
          [null, 1, ['utils.hello@1'], 'python', 'error', 'TimeoutError', `${settled} ${findings.length}`],
        );
        assert.deepEqual(
          [row.duration_ms, row.bytes_out, row.stdout, row.stderr, row.code, row.result],
          [13, 10, 'out', 'err', 'print(1)', '{"a":1}'],
        );
        const events = (await executions.listSecurityEvents({ namespaceId }, undefined, 100)).filter(
          (e) => e.execution_id === admitted.ticketId,
        );
        assert.deepEqual(events.map((e) => (e.detail as { detection: string }).detection).sort(), [...findings].sort());
        for (const event of events) {
          assert.deepEqual(
            [event.account_id, event.namespace_id, event.service_name, event.function_name, event.event_type],
            [accountId, namespaceId, 'utils', 'hello', 'secret_redacted'],
          );
        }
        assert.equal(new Set(events.map((e) => e.id)).size, findings.length, 'each event an id of its own');
        // Settled: the slot freed; not settled here: still held (settle() frees it after).
        assert.equal((await metering.usage(accountId)).active, settled === 'none' ? 1 : 0);
        if (settled === 'none') await metering.settle(admitted.ticketId, accountId, true);
      }
    }
    // 6 admitted; the 2 uncounted given back.
    assert.equal((await metering.usage(accountId)).executions, 4);
  });

  test('on PostgreSQL, the statements every metered call runs are prepared once per connection, under their names', async (t) => {
    if (database.kind !== 'postgres') return t.skip('PostgreSQL only: the embedded thread prepares every statement by its text');
    const { accountId, namespaceId } = await newAccount();
    // One transaction: one connection of the pool, whose prepared statements are listed.
    const prepared = await database.db.transaction().execute(async (trx) => {
      const metered = new MeteringStore(trx);
      const recorder = new ExecutionsStore(trx);
      for (let i = 0; i < 3; i++) {
        const ticketId = randomUUID();
        assert.equal(await metered.admit({ ticketId, accountId, limits: UNLIMITED, now: new Date() }), undefined);
        await recorder.finish({ ticketId, accountId, counted: true }, record(accountId, namespaceId, ticketId), []);
      }
      const { rows } = await sql<{ name: string; runs: number }>`SELECT name, (generic_plans + custom_plans)::int AS runs
        FROM pg_prepared_statements WHERE NOT from_sql`.execute(trx);
      return new Map(rows.map((row) => [row.name, Number(row.runs)]));
    });
    // Earlier tests may have prepared others on this connection: each of these ran at least 3 times as one statement.
    assert.ok((prepared.get('mcpworks_admit_call') ?? 0) >= 3, JSON.stringify([...prepared]));
    assert.ok((prepared.get('mcpworks_record_counted') ?? 0) >= 3, JSON.stringify([...prepared]));
  });

  test("on PostgreSQL, the record of a failed call (its unit given back) beside an admission of its account (which holds the account's row) completes both: no deadlock", async (t) => {
    if (database.kind !== 'postgres') return t.skip('PostgreSQL only: the embedded database has one connection, nothing runs beside');
    const { accountId, namespaceId } = await newAccount();
    const failed = await admit(accountId, {});
    // As in the start-up release's test below: the admission holds the account's row, the record
    // arrives, then the admission counts the month.
    let finishing: Promise<void> | undefined;
    const admitted = await database.db.transaction().execute(async (trx) => {
      await sql`SELECT 1 FROM accounts WHERE id = ${accountId} FOR UPDATE`.execute(trx);
      const execution = { ...record(accountId, namespaceId, failed.ticketId), status: 'error' as const, errorType: 'RuntimeError' };
      finishing = executions.finish({ ticketId: failed.ticketId, accountId, counted: false }, execution, []);
      finishing.catch(() => undefined);
      await untilWaitingForLock('INSERT INTO executions');
      return new MeteringStore(trx).admit({ ticketId: randomUUID(), accountId, limits: UNLIMITED, now: new Date() });
    });
    assert.equal(admitted, undefined, 'the admission is answered');
    await finishing;
    const usage = await metering.usage(accountId);
    assert.deepEqual([usage.active, usage.executions], [1, 1], 'the failed call gave its unit back; the new one holds its slot and unit');
  });

  test('a slot left by a dead node frees itself once expired, refunding its unit unless the call was recorded', async () => {
    const { accountId, namespaceId } = await newAccount();
    const limits = { concurrency: 2, timeoutSeconds: 1 };
    const orphan = await admit(accountId, limits);
    const recorded = await admit(accountId, limits);
    await executions.record(record(accountId, namespaceId, recorded.ticketId), []);
    assert.equal((await metering.usage(accountId)).active, 2);
    // Admitted in the last hour of last month by the database's clock, and never settled: the
    // slots and their units are moved there, and the refund goes to that month.
    const { rows } = await sql<{ last: string; current: string }>`SELECT
        to_char((date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 hour'), 'YYYY-MM') AS last,
        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS current`.execute(database.db);
    const { last, current } = rows[0]!;
    await sql`UPDATE active_executions SET started_at = (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 hour') AT TIME ZONE 'UTC'
      WHERE account_id = ${accountId}`.execute(database.db);
    await sql`UPDATE usage_months SET month = ${last} WHERE account_id = ${accountId}`.execute(database.db);
    await ageSlots(accountId, 3_600_000);
    const later = await admit(accountId, limits);
    assert.equal(later.rejection, undefined, 'both expired slots were freed');
    assert.equal(await countIn(accountId, last), 1, 'the unrecorded call was refunded, the recorded one kept');
    assert.equal(await countIn(accountId, current), 1);
    assert.equal((await metering.usage(accountId)).executions, 1);
    assert.equal((await metering.usage(accountId)).active, 1);
    // Settling the freed ticket later changes nothing.
    await metering.settle(orphan.ticketId, accountId, false);
    assert.equal(await countIn(accountId, last), 1);
    assert.ok(last < current);
  });
});

describe('server instances and their slots', () => {
  const run = (namespaceId: string) => ({
    namespace_id: namespaceId,
    key_id: null,
    mode: 'tools' as const,
    service_name: 'utils',
    function_name: 'hello',
    function_id: null,
    version: 1,
    functions: ['utils.hello@1'],
    language: 'python',
  });
  async function instance(id: string, leaseUntil: Date): Promise<MeteringStore> {
    await database.db
      .insertInto('server_instances')
      .values({ id, host: 'test', pid: 1, started_at: new Date(), lease_until: leaseUntil })
      .execute();
    return new MeteringStore(database.db, id);
  }

  test("a dead instance's slots are released at start: quota given back, runs recorded as interrupted; a live one's stay", async () => {
    const { accountId, namespaceId } = await newAccount();
    const now = new Date();
    const dead = await instance(randomUUID(), new Date(now.getTime() + 60_000));
    const live = await instance(randomUUID(), new Date(now.getTime() + 60_000));
    const lost = randomUUID();
    await dead.admit({ ticketId: lost, accountId, limits: UNLIMITED, now, run: run(namespaceId) });
    await dead.admit({ ticketId: randomUUID(), accountId, limits: UNLIMITED, now });
    await live.admit({ ticketId: randomUUID(), accountId, limits: UNLIMITED, now, run: run(namespaceId) });
    assert.equal((await metering.usage(accountId)).executions, 3);
    assert.equal(await metering.releaseStale(now, [(dead as unknown as { instanceId: string }).instanceId]), 2);
    const usage = await metering.usage(accountId);
    assert.equal(usage.active, 1, "the live instance's slot is kept");
    assert.equal(usage.executions, 1, 'the lost calls are not counted');
    const rows = await executions.list({ namespaceId }, { limit: 10 });
    assert.deepEqual(
      rows.map((row) => [row.id, row.status, row.error_type, row.function_name, row.mode]),
      [[lost, 'interrupted', 'interrupted', 'hello', 'tools']],
    );
    // Exactly once: a second release finds nothing.
    assert.equal(await metering.releaseStale(now, [(dead as unknown as { instanceId: string }).instanceId]), 0);
  });

  test("a dead instance's interrupted runs keep the trigger and agent their admission named; a slot without one (an older node's) is told by its mode", async () => {
    const { accountId, namespaceId } = await newAccount();
    const now = new Date();
    const dead = await instance(randomUUID(), new Date(now.getTime() + 60_000));
    const [scheduled, older] = [randomUUID(), randomUUID()];
    await dead.admit({
      ticketId: scheduled,
      accountId,
      limits: UNLIMITED,
      now,
      run: { ...run(namespaceId), trigger: 'schedule', agent_id: 'agent-1' },
    });
    await dead.admit({
      ticketId: older,
      accountId,
      limits: UNLIMITED,
      now,
      run: { ...run(namespaceId), mode: 'code' as never, service_name: null, function_name: null },
    });
    assert.equal(await metering.releaseStale(now, [(dead as unknown as { instanceId: string }).instanceId]), 2);
    const rows = await database.db
      .selectFrom('executions')
      .select(['id', 'trigger', 'agent_id', 'key_id', 'status'])
      .where('namespace_id', '=', namespaceId)
      .execute();
    const byId = new Map(rows.map((row) => [row.id, [row.trigger, row.agent_id, row.key_id, row.status]]));
    assert.deepEqual(byId.get(scheduled), ['schedule', 'agent-1', null, 'interrupted']);
    assert.deepEqual(byId.get(older), ['mcp-code', null, null, 'interrupted']);
  });

  test("a dead instance's interrupted run released by a node whose clock is 40 days off is dated by the database's clock (the dashboard's day, the history's order)", async () => {
    const { accountId, namespaceId } = await newAccount();
    const day = 86_400_000;
    for (const skew of [40 * day, -40 * day]) {
      const dead = await instance(randomUUID(), new Date(Date.now() + 60_000));
      const lost = randomUUID();
      await dead.admit({ ticketId: lost, accountId, limits: UNLIMITED, now: new Date(Date.now() + skew), run: run(namespaceId) });
      // The releasing node's clock is off by `skew`: its now is what it passes.
      assert.equal(await metering.releaseStale(new Date(Date.now() + skew), [(dead as unknown as { instanceId: string }).instanceId]), 1);
      const { rows } = await sql<{ off_s: number; status: string }>`
        SELECT abs(extract(epoch FROM (created_at - now())))::float8 AS off_s, status FROM executions WHERE id = ${lost}`.execute(
        database.db,
      );
      assert.equal(rows[0]?.status, 'interrupted');
      // Written a moment ago by the database's clock: far from 40 days either way.
      assert.ok(rows[0]!.off_s < day / 1000, `skew ${skew / day} days: the record is ${rows[0]!.off_s} s from the database's now`);
    }
  });

  test("on PostgreSQL, a start-up release of a dead instance's slot beside an admission of its account (which holds the account's row) completes both: no deadlock", async (t) => {
    if (database.kind !== 'postgres') return t.skip('PostgreSQL only: the embedded database has one connection, nothing runs beside');
    const { accountId, namespaceId } = await newAccount();
    const now = new Date();
    const deadId = randomUUID();
    const dead = await instance(deadId, new Date(now.getTime() + 60_000));
    const lost = randomUUID();
    await dead.admit({ ticketId: lost, accountId, limits: UNLIMITED, now, run: run(namespaceId) });
    const live = randomUUID();
    await instance(live, new Date(now.getTime() + 60_000));
    // An admission's first statement holds the account's row (FOR UPDATE); its count of the month
    // comes after. Here the two are split by the release arriving in between, as it did in the
    // cluster test (a restarted node's start beside a call on another node of the same account).
    let release: Promise<number> | undefined;
    const admitted = await database.db.transaction().execute(async (trx) => {
      await sql`SELECT 1 FROM accounts WHERE id = ${accountId} FOR UPDATE`.execute(trx);
      release = metering.releaseStale(now, [deadId]);
      release.catch(() => undefined);
      await untilWaitingForLock('mcpworks_release_stale(NULL');
      return new MeteringStore(trx, live).admit({ ticketId: randomUUID(), accountId, limits: UNLIMITED, now });
    });
    assert.equal(admitted, undefined, 'the admission is answered');
    assert.equal(await release, 1, 'the release is done');
    const usage = await metering.usage(accountId);
    assert.deepEqual([usage.active, usage.executions], [1, 1], 'the live call holds its slot and unit; the lost one neither');
    assert.deepEqual(
      (await executions.list({ namespaceId }, { limit: 10 })).map((row) => [row.id, row.status]),
      [[lost, 'interrupted']],
    );
  });

  test('a live server whose lease lapsed (the database was away) keeps its own slots: its admissions and start-up sweep never release them', async () => {
    const { accountId, namespaceId } = await newAccount();
    const now = new Date();
    const self = await instance(randomUUID(), new Date(now.getTime() - 60_000));
    await self.admit({ ticketId: randomUUID(), accountId, limits: { ...UNLIMITED, concurrency: 2 }, now, run: run(namespaceId) });
    const second = await self.admit({
      ticketId: randomUUID(),
      accountId,
      limits: { ...UNLIMITED, concurrency: 2 },
      now: new Date(now.getTime() + 1_000),
      run: run(namespaceId),
    });
    assert.equal(second, undefined);
    assert.equal(
      (
        await self.admit({
          ticketId: randomUUID(),
          accountId,
          limits: { ...UNLIMITED, concurrency: 2 },
          now: new Date(now.getTime() + 2_000),
        })
      )?.code,
      'CONCURRENCY_LIMIT_EXCEEDED',
      'its own two runs still hold their slots',
    );
    assert.equal(await self.releaseStale(new Date(now.getTime() + 2_000), []), 0);
    assert.equal((await metering.usage(accountId)).active, 2);
    assert.deepEqual(await executions.list({ namespaceId }, { limit: 10 }), [], 'nothing recorded as interrupted');
  });

  test('an instance whose lease expired loses its slots at the next admission; with every slot stale (embedded), all go', async () => {
    const { accountId, namespaceId } = await newAccount();
    const now = new Date();
    const stalled = await instance(randomUUID(), new Date(now.getTime() + 5_000));
    await stalled.admit({ ticketId: randomUUID(), accountId, limits: { ...UNLIMITED, concurrency: 1 }, now, run: run(namespaceId) });
    assert.equal(
      (await admit(accountId, { concurrency: 1 }, new Date(now.getTime() + 4_000))).rejection?.code,
      'CONCURRENCY_LIMIT_EXCEEDED',
      'within the lease',
    );
    const later = new Date(now.getTime() + 6_000);
    // Six seconds on, by the database's clock.
    await sql`UPDATE server_instances SET lease_until = lease_until - interval '6 seconds' WHERE id = ${(stalled as unknown as { instanceId: string }).instanceId}`.execute(
      database.db,
    );
    const after = await admit(accountId, { concurrency: 1 }, later);
    assert.equal(after.rejection, undefined, 'the lease is over: its slot is released');
    assert.deepEqual(
      (await executions.list({ namespaceId }, { limit: 10 })).map((row) => row.status),
      ['interrupted'],
    );
    assert.equal((await metering.usage(accountId)).executions, 1);
    await metering.releaseStale(later, null);
    assert.equal((await metering.usage(accountId)).active, 0, 'no other server: every slot is stale');
  });
});
