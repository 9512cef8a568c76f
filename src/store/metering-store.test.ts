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
import { MeteringStore, monthKey, type AdmissionRequest } from './metering-store.js';

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
    const { accountId } = await newAccount();
    for (let i = 0; i < 3; i++) assert.equal((await admit(accountId, { monthlyExecutions: 3 })).rejection, undefined);
    assert.deepEqual((await admit(accountId, { monthlyExecutions: 3 })).rejection, { code: 'QUOTA_EXCEEDED', usage: 3, limit: 3 });
    const usage = await metering.usage(accountId, new Date());
    assert.equal(usage.executions, 3);
    assert.equal(usage.active, 3);
    assert.equal(usage.lastMinute, 3);
  });

  test('parallel admissions against a quota of 10 admit exactly 10', async () => {
    const { accountId } = await newAccount();
    const results = await Promise.all(Array.from({ length: 30 }, () => admit(accountId, { monthlyExecutions: 10 })));
    assert.equal(results.filter((r) => r.rejection === undefined).length, 10);
    assert.ok(results.filter((r) => r.rejection !== undefined).every((r) => r.rejection?.code === 'QUOTA_EXCEEDED'));
    assert.equal((await metering.usage(accountId, new Date())).executions, 10);
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
      // One instant for all (the rate window must not roll over mid-test).
      const now = new Date(Math.floor(Date.now() / 60_000) * 60_000 + 1_000);
      const accounts = await Promise.all(Array.from({ length: 4 }, () => newAccount()));
      const results = await Promise.all(
        accounts.flatMap(({ accountId }) =>
          Array.from({ length: 40 }, () => admit(accountId, limits, now).then((r) => ({ accountId, ...r }))),
        ),
      );
      for (const { accountId } of accounts) {
        const mine = results.filter((r) => r.accountId === accountId);
        assert.equal(mine.filter((r) => r.rejection === undefined).length, 7, `${gate}: admitted`);
        assert.ok(mine.filter((r) => r.rejection !== undefined).every((r) => r.rejection?.code === code));
        const usage = await metering.usage(accountId, now);
        assert.deepEqual([usage.executions, usage.lastMinute, usage.active], [7, 7, 7], `${gate}: counted`);
      }
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
    await metering.settle(first.ticketId, accountId, first.now, true);
    assert.equal((await admit(accountId, { concurrency: 1 })).rejection, undefined);
    assert.equal((await metering.usage(accountId, new Date())).executions, 2, 'a refused admission counts nothing');
  });

  test('executions per minute: a full window refuses until the next one', async () => {
    const { accountId } = await newAccount();
    const start = new Date(Math.floor(Date.now() / 60_000) * 60_000 + 15_000);
    for (let i = 0; i < 2; i++) assert.equal((await admit(accountId, { executionsPerMinute: 2 }, start)).rejection, undefined);
    assert.deepEqual((await admit(accountId, { executionsPerMinute: 2 }, start)).rejection, {
      code: 'EXECUTION_RATE_EXCEEDED',
      limit: 2,
      retryAfter: 45,
    });
    assert.equal((await admit(accountId, { executionsPerMinute: 2 }, new Date(start.getTime() + 60_000))).rejection, undefined);
  });

  test('rate units (sandboxes a running call starts) share the minute window with admissions, exactly, in parallel', async () => {
    const { accountId } = await newAccount();
    const start = new Date(Math.floor(Date.now() / 60_000) * 60_000 + 15_000);
    assert.equal((await admit(accountId, { executionsPerMinute: 10 }, start)).rejection, undefined);
    // 20 units and 5 admissions at once against the 9 left: exactly 9 pass.
    const [taken, admitted] = await Promise.all([
      Promise.all(Array.from({ length: 20 }, () => metering.takeRateUnit(accountId, 10, start))),
      Promise.all(Array.from({ length: 5 }, () => admit(accountId, { executionsPerMinute: 10 }, start))),
    ]);
    const admittedCount = admitted.filter((a) => !a.rejection).length;
    assert.equal(taken.filter(Boolean).length + admittedCount, 9);
    const usage = await metering.usage(accountId, start);
    assert.equal(usage.lastMinute, 10);
    assert.equal(usage.executions, 1 + admittedCount, 'a unit takes nothing of the monthly quota');
    assert.equal(await metering.takeRateUnit(accountId, null, start), true, 'no limit: counted all the same');
    assert.equal((await metering.usage(accountId, start)).lastMinute, 11);
    assert.equal(await metering.takeRateUnit(accountId, 10, new Date(start.getTime() + 60_000)), true, 'the next window');
  });

  test('settle: a failed call gives its unit back once; a successful one keeps it', async () => {
    const { accountId } = await newAccount();
    const failed = await admit(accountId, {});
    const succeeded = await admit(accountId, {});
    await metering.settle(failed.ticketId, accountId, failed.now, false);
    await metering.settle(failed.ticketId, accountId, failed.now, false);
    await metering.settle(succeeded.ticketId, accountId, succeeded.now, true);
    const usage = await metering.usage(accountId, new Date());
    assert.equal(usage.executions, 1);
    assert.equal(usage.active, 0);
  });

  test('finish settles and records in one: refunds an uncounted call, keeps a counted one, records both with security events', async () => {
    const { accountId, namespaceId } = await newAccount();
    const counted = await admit(accountId, {});
    const uncounted = await admit(accountId, {});
    await executions.finish(
      { ticketId: counted.ticketId, accountId, admittedAt: counted.now, counted: true },
      record(accountId, namespaceId, counted.ticketId),
      ['api_key', 'jwt'],
    );
    await executions.finish(
      { ticketId: uncounted.ticketId, accountId, admittedAt: uncounted.now, counted: false },
      { ...record(accountId, namespaceId, uncounted.ticketId), status: 'error', errorType: 'SandboxError', errorMessage: 'x\u0000y' },
      [],
    );
    // Already settled (e.g. by the endpoint): only the record; a refund is never taken twice.
    await executions.finish(
      { ticketId: uncounted.ticketId, accountId, admittedAt: uncounted.now, counted: false },
      record(accountId, namespaceId, randomUUID()),
      [],
    );
    await executions.finish(null, record(accountId, namespaceId, randomUUID()), []);
    const usage = await metering.usage(accountId, new Date());
    assert.equal(usage.executions, 1);
    assert.equal(usage.active, 0);
    const rows = await executions.list({ namespaceId }, { limit: 10 });
    assert.equal(rows.length, 4);
    assert.equal(rows.find((r) => r.id === uncounted.ticketId)?.error_message, 'x\uFFFDy');
    const events = await executions.listSecurityEvents({ namespaceId }, undefined, 10);
    assert.deepEqual(events.map((e) => (e.detail as { detection: string }).detection).sort(), ['api_key', 'jwt']);
    assert.ok(events.every((e) => e.execution_id === counted.ticketId));
  });

  test('a slot left by a dead node frees itself once expired, refunding its unit unless the call was recorded', async () => {
    const { accountId, namespaceId } = await newAccount();
    const limits = { concurrency: 2, timeoutSeconds: 1 };
    // Admitted last month (UTC) and never settled: the refund goes to that month.
    const now = new Date();
    const lastMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) - 3600_000);
    const orphan = await admit(accountId, limits, lastMonth);
    const recorded = await admit(accountId, limits, lastMonth);
    await executions.record(record(accountId, namespaceId, recorded.ticketId), []);
    assert.equal((await metering.usage(accountId, lastMonth)).active, 2);
    await ageSlots(accountId, 3_600_000);
    const later = await admit(accountId, limits, now);
    assert.equal(later.rejection, undefined, 'both expired slots were freed');
    assert.equal((await metering.usage(accountId, lastMonth)).executions, 1, 'the unrecorded call was refunded, the recorded one kept');
    assert.equal((await metering.usage(accountId, now)).executions, 1);
    assert.equal((await metering.usage(accountId, now)).active, 1);
    // Settling the freed ticket later changes nothing.
    await metering.settle(orphan.ticketId, accountId, orphan.now, false);
    assert.equal((await metering.usage(accountId, lastMonth)).executions, 1);
    assert.equal(monthKey(lastMonth) < monthKey(now), true);
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
    assert.equal((await metering.usage(accountId, now)).executions, 3);
    assert.equal(await metering.releaseStale(now, [(dead as unknown as { instanceId: string }).instanceId]), 2);
    const usage = await metering.usage(accountId, now);
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
    assert.equal((await metering.usage(accountId, now)).active, 2);
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
    assert.equal((await metering.usage(accountId, later)).executions, 1);
    await metering.releaseStale(later, null);
    assert.equal((await metering.usage(accountId, later)).active, 0, 'no other server: every slot is stale');
  });
});
