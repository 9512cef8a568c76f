/**
 * The database's part of a metered call alone (issue 18): the admission of a call with a cached key
 * and its settlement with its record, as the stores run them, N times, against the embedded
 * database on its thread (or a fresh database on the PostgreSQL of MCPWORKS_TEST_DATABASE_URL).
 *
 *   bench/db-call [--calls N] [--warmup W] [--gap MS]   (defaults: 2000 calls, 1000 warm-up, no gap)
 *
 * Per call: the two round trips' wall time (from the store's call to its answer), the event loop's
 * CPU and the database thread's (/proc/self/task/TID/schedstat), or on PostgreSQL its backends'
 * (those serving the bench's database, read from /proc: PostgreSQL on this host). Back to back, both threads stay
 * hot; `--gap 3` waits 3 ms after each statement, as a call's run does between them in the server,
 * so caches and the sleeping thread are as cold as there (CPU per call rises by about half).
 * Compare builds alternating, in one load.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freshDatabaseUrl, seedEmbeddedDatabase, testDataRoot } from '../src/test-support/harness.js';
import { AccountsStore } from '../src/store/accounts-store.js';
import { CatalogStore } from '../src/store/catalog-store.js';
import { openDatabase, type OpenDatabase } from '../src/store/database.js';
import { sql } from 'kysely';
import { ExecutionsStore, type ExecutionRecord } from '../src/store/executions-store.js';
import { MeteringStore } from '../src/store/metering-store.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    warmup: { type: 'string', default: '1000' },
    gap: { type: 'string', default: '0' },
  },
});
const calls = Number(values.calls);
const warmup = Number(values.warmup);
const gap = Number(values.gap);
const pause = () => (gap > 0 ? new Promise((resolve) => setTimeout(resolve, gap)) : undefined);

function threadNs(): { main: number; db: number } {
  let main = 0;
  let db = 0;
  for (const entry of readdirSync('/proc/self/task')) {
    try {
      const ns = Number(readFileSync(`/proc/self/task/${entry}/schedstat`, 'utf8').split(' ')[0]);
      if (Number(entry) === process.pid) main += ns;
      else if (readFileSync(`/proc/self/task/${entry}/comm`, 'utf8').trim() === 'mcpw-pglite') db += ns;
    } catch {
      // gone
    }
  }
  return { main, db };
}

/** CPU ms of PostgreSQL's backends serving this database (same host: their /proc entries), 0 when embedded. */
async function postgresMs(db: OpenDatabase): Promise<number> {
  if (db.kind !== 'postgres') return 0;
  const { rows } = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`.execute(db.db);
  let ticks = 0;
  for (const { pid } of rows) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // Another host, or the backend ended.
    }
  }
  return (ticks * 1000) / 100;
}

const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-dbcall-'));
const databaseUrl = await freshDatabaseUrl();
if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
const database = await openDatabase({ databaseUrl, dataDir });
try {
  const accounts = new AccountsStore(database.db);
  const catalog = new CatalogStore(database.db);
  const metering = new MeteringStore(database.db, null);
  const executions = new ExecutionsStore(database.db);
  const account = (await accounts.createAccount({
    email: `b-${randomUUID()}@example.com`,
    passwordHash: 'x',
    tier: 'pro',
    trialEndsAt: null,
  }))!;
  const ns = (await catalog.createNamespace(account.id, 'bench', ''))!;
  const key = await accounts.createKey({
    accountId: account.id,
    name: 'k',
    prefix: randomUUID().slice(0, 12),
    keyHash: 'h',
    namespace: null,
    scopes: ['execute'],
    expiresAt: null,
  });
  const limits = { monthlyExecutions: null, executionsPerMinute: null, concurrency: 10, timeoutSeconds: 30 };
  let waited = 0;
  const one = async () => {
    const ticketId = randomUUID();
    const run = {
      namespace_id: ns.id,
      key_id: key.id,
      mode: 'tools' as const,
      trigger: 'mcp-tools',
      service_name: 'utils',
      function_name: 'hello',
      function_id: randomUUID(),
      version: 1,
      functions: ['utils.hello@1'],
      language: 'python',
    };
    let started = performance.now();
    const rejected = await metering.admit({
      ticketId,
      accountId: account.id,
      limits,
      now: new Date(),
      run,
      cachedKey: { keyId: key.id, tier: 'pro', namespaceId: ns.id, catalogVersion: ns.catalog_version },
    });
    waited += performance.now() - started;
    if (rejected) throw new Error(`rejected: ${JSON.stringify(rejected)}`);
    const record: ExecutionRecord = {
      id: ticketId,
      accountId: account.id,
      namespaceId: ns.id,
      keyId: key.id,
      mode: 'tools',
      serviceName: 'utils',
      functionName: 'hello',
      functionId: run.function_id,
      version: 1,
      functions: run.functions,
      language: 'python',
      status: 'success',
      errorType: null,
      errorMessage: null,
      durationMs: 12.3,
      bytesOut: 40,
      stdout: '',
      stderr: '',
      result: '{"greeting":"Hello, bench!"}',
    };
    await pause();
    started = performance.now();
    await executions.finish({ ticketId, accountId: account.id, counted: true }, record, []);
    waited += performance.now() - started;
    await pause();
  };
  for (let i = 0; i < warmup; i++) await one();
  // From here: the event loop's CPU, the database thread's (named by pglite-worker.ts) or PostgreSQL's.
  const pgBefore = await postgresMs(database);
  const before = threadNs();
  waited = 0;
  for (let i = 0; i < calls; i++) await one();
  const after = threadNs();
  const pgAfter = await postgresMs(database);
  console.log(
    JSON.stringify({
      kind: database.kind,
      calls,
      gap,
      wallMs: +(waited / calls).toFixed(3),
      mainCpuMs: +((after.main - before.main) / 1e6 / calls).toFixed(3),
      dbCpuMs: +((after.db - before.db) / 1e6 / calls).toFixed(3),
      // PostgreSQL's backends (clock ticks of 10 ms: read over at least 1000 calls).
      ...(database.kind === 'postgres' ? { postgresCpuMs: +((pgAfter - pgBefore) / calls).toFixed(3) } : {}),
    }),
  );
} finally {
  await database.close();
  rmSync(dataDir, { recursive: true, force: true });
}
