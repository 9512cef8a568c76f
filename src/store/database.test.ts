// test-database: postgres, migrations and the SQL dialect must hold on both databases
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { getPriority, setPriority } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { AccountsStore } from './accounts-store.js';
import { describeError, maintain, openDatabase } from './database.js';
import { breakdown, type MemoryBreakdown } from '../../bench/lib/smaps.js';
import { testDataRoot } from '../test-support/data-root.js';
import { freshDatabaseUrl, seedEmbeddedDatabase } from '../test-support/harness.js';

test('embedded PGlite: maintenance vacuums the tables each call churns (there is no autovacuum)', async (t) => {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) {
    t.skip('PostgreSQL vacuums itself');
    return;
  }
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-maintain-'));
  const database = await openDatabase({ dataDir });
  try {
    const { db } = database;
    const accountId = randomUUID();
    await db
      .insertInto('accounts')
      .values({ id: accountId, email: `${accountId}@example.com`, password_hash: 'x', tier: 'pro' })
      .execute();
    // What admission and settling leave behind: a slot row inserted and deleted per call.
    for (let i = 0; i < 300; i++) {
      const id = randomUUID();
      await db
        .insertInto('active_executions')
        .values({ id, account_id: accountId, expires_at: new Date(Date.now() + 60_000) })
        .execute();
      await db.deleteFrom('active_executions').where('id', '=', id).execute();
    }
    const dead = async () => {
      // Statistics reach pg_stat_* at most once a second unless a flush is asked for.
      await sql`SELECT pg_stat_force_next_flush()`.execute(db);
      return Number(
        (
          await sql<{
            dead: number;
          }>`SELECT n_dead_tup::float8 AS dead FROM pg_stat_user_tables WHERE relname = 'active_executions'`.execute(db)
        ).rows[0]?.dead,
      );
    };
    assert.ok((await dead()) >= 300, 'the deleted rows are dead tuples');
    const vacuumed = await maintain(db);
    assert.ok(vacuumed.includes('active_executions'), JSON.stringify(vacuumed));
    assert.equal(await dead(), 0);
    assert.deepEqual(await maintain(db), [], 'nothing left to do');
  } finally {
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('embedded PGlite: a new data dir is created in a process that is gone after, and the buffer cache is what was asked', async (t) => {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) {
    t.skip('no embedded database');
    return;
  }
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-create-'));
  const memories = () => breakdown(readFileSync('/proc/self/smaps', 'utf8'));
  const children = () =>
    readdirSync('/proc/self/task').flatMap((tid) => readFileSync(`/proc/self/task/${tid}/children`, 'utf8').split(' ').filter(Boolean));
  const before = memories();
  // (tsx's esbuild service may be one already.)
  const childrenBefore = children();
  const database = await openDatabase({ dataDir, cacheMb: 8 });
  try {
    // initdb runs a second PGlite and a WASM module of its own: in this process their memories
    // (about 450 MB) would stay mapped for good. Only the serving thread's is here.
    // (Node's own small WASM modules, its CJS lexer and HTTP parser, map memories of a few MB per thread.)
    const databases = (parts: MemoryBreakdown) => parts.wasmMemoryMb.filter((mb) => mb >= 4);
    const after = memories();
    assert.equal(
      databases(after).length,
      databases(before).length + 1,
      `one more database-sized WebAssembly memory, the database thread's: ${before.wasmMemoryMb.map(Math.round)} MB before, ${after.wasmMemoryMb.map(Math.round)} MB after`,
    );
    assert.deepEqual(
      children().filter((pid) => !childrenBefore.includes(pid)),
      [],
      'the set-up process has exited',
    );
    const { rows } = await sql<{ shared_buffers: string }>`SHOW shared_buffers`.execute(database.db);
    assert.equal(rows[0]!.shared_buffers, '8MB');
    // The cache is zeroed at open, so resident in full: 128 MB of it at PostgreSQL's default.
    assert.ok(after.wasmMb - before.wasmMb < 64, `the database's WASM memory holds ${after.wasmMb - before.wasmMb} MB`);
  } finally {
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("embedded PGlite: the server's process compiles WebAssembly with V8's baseline tier only once the database is open", async (t) => {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) {
    t.skip('no embedded database');
    return;
  }
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-tier-'));
  await seedEmbeddedDatabase(dataDir);
  // A process of its own, without the test pool's --liftoff-only. --wasm-tier-mask-for-testing=1
  // compiles a module's function 0 with TurboFan at once, unless --liftoff-only forbids TurboFan:
  // a tiny module's add function then tells which tiers the process allows (V8's natives say it).
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const database = pathToFileURL(path.join(repoRoot, 'src', 'store', 'database.ts')).href;
  const tierAfter = (open: boolean) => {
    const program = `
      const { openDatabase } = await import(${JSON.stringify(database)});
      if (${open}) await (await openDatabase({ dataDir: ${JSON.stringify(dataDir)} })).close();
      const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,6,1,96,1,127,1,127,3,2,1,0,7,5,1,1,102,0,0,10,9,1,7,0,32,0,65,1,106,11]);
      const { instance } = await WebAssembly.instantiate(bytes);
      instance.exports.f(1); // (V8 tells an uncalled function's tier wrongly)
      const liftoff = new Function('f', 'return %IsLiftoffFunction(f)')(instance.exports.f);
      process.stdout.write(liftoff ? 'liftoff' : 'turbofan');`;
    return execFileSync(
      process.execPath,
      ['--allow-natives-syntax', '--wasm-tier-mask-for-testing=1', '--import', 'tsx', '--input-type=module', '-e', program],
      { cwd: repoRoot, env: { ...process.env, LOG_LEVEL: 'silent' }, encoding: 'utf8' },
    );
  };
  try {
    assert.equal(tierAfter(false), 'turbofan', 'without the database, this V8 compiles the masked function with TurboFan');
    assert.equal(tierAfter(true), 'liftoff', "after the database opened, TurboFan is off (its compile memory stayed in glibc's arenas)");
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('describeError: whatever start-up throws prints its message, never [object Object]', () => {
  assert.equal(describeError(new Error('boom')), 'boom');
  assert.equal(describeError({ name: 'ErrnoError', errno: 51 }), 'no space left on device (ENOSPC)');
  assert.equal(describeError({ name: 'ErrnoError', errno: 999 }), 'file system error (errno 999)');
  assert.equal(describeError({ message: 'relation missing', code: '42P01' }), 'relation missing (42P01)');
  assert.equal(describeError({ what: 1 }), '{"what":1}');
  assert.equal(describeError('plain'), 'plain');
});

test('embedded PGlite: a statement runs on the database thread while the event loop goes on; errors keep their fields', async (t) => {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) {
    t.skip('PostgreSQL runs in its own processes');
    return;
  }
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-thread-'));
  await seedEmbeddedDatabase(dataDir);
  // This process's threads 5 steps nicer than this one (field 19 of /proc/self/task/TID/stat): the
  // database thread's nice is relative to the server's (a server started at nice 5 gets it at 10).
  // Started from a loop not at nice 0 (here 3 nicer than this process was), as a server started
  // with `nice` is: an absolute 5 would pass at 0 and fail here.
  const startedAt = getPriority();
  setPriority(Math.min(19, startedAt + 3));
  t.after(() => {
    try {
      setPriority(startedAt);
    } catch {
      // raising a priority needs privileges: the rest of this file runs a little nicer
    }
  });
  const target = String(Math.min(19, getPriority() + 5));
  const niced = () =>
    readdirSync('/proc/self/task').filter((tid) => {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16] === target;
    }).length;
  const before = niced();
  const database = await openDatabase({ dataDir });
  try {
    // Woken for each statement, the database thread must not preempt the event loop: it runs at nice 5.
    assert.equal(niced(), before + 1, `one more thread at nice ${target}: the database thread`);

    // Seconds of work in the backend: in-thread, PGlite's WASM would hold the loop for all of it,
    // and the loop could turn only at the few awaits around the statement.
    let turns = 0;
    let done = false;
    const statement = sql<{ n: number }>`SELECT count(*)::int AS n FROM generate_series(1, 400000) AS g WHERE md5(g::text) LIKE '0%'`
      .execute(database.db)
      .finally(() => (done = true));
    while (!done) {
      await new Promise((resolve) => setImmediate(resolve));
      turns++;
    }
    assert.ok(Number((await statement).rows[0]!.n) > 0);
    assert.ok(turns > 200, `the event loop turned ${turns} times during the statement`);

    // What callers look at in a database error crosses the thread: SQLSTATE, message, detail.
    await assert.rejects(sql`SELECT * FROM no_such_table`.execute(database.db), (error: any) => {
      assert.ok(error instanceof Error);
      assert.equal((error as { code?: unknown }).code, '42P01');
      assert.match(error.message, /no_such_table/);
      return true;
    });
    const id = randomUUID();
    await database.db
      .insertInto('accounts')
      .values({ id, email: `${id}@example.com`, password_hash: 'x', tier: 'pro' })
      .execute();
    await assert.rejects(
      database.db
        .insertInto('accounts')
        .values({ id, email: `${id}@example.com`, password_hash: 'x', tier: 'pro' })
        .execute(),
      (error: any) => error.code === '23505' && /already exists/.test(String(error.detail)),
    );
    // Values cross both ways as the in-thread database gave them (timestamps as Date).
    const { rows } = await sql<{ at: Date; bytes: Uint8Array }>`SELECT now() AS at, '\\x0102'::bytea AS bytes`.execute(database.db);
    assert.ok(rows[0]!.at instanceof Date);
    assert.deepEqual([...rows[0]!.bytes], [1, 2]);
  } finally {
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('embedded PGlite: a prepared statement whose table changed shape fails once, then reads the new shape (its rows are read by the description kept at preparing)', async (t) => {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) {
    t.skip("the embedded thread's own statement cache");
    return;
  }
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-prepared-'));
  await seedEmbeddedDatabase(dataDir);
  const database = await openDatabase({ dataDir });
  try {
    await sql`CREATE TABLE shape_test (id INTEGER PRIMARY KEY, a TEXT)`.execute(database.db);
    await sql`INSERT INTO shape_test VALUES (1, 'one')`.execute(database.db);
    const read = () => sql<Record<string, unknown>>`SELECT * FROM shape_test WHERE id = ${1}`.execute(database.db).then((r) => r.rows);
    // Past the fifth run: PostgreSQL's generic plan.
    for (let i = 0; i < 6; i++) assert.deepEqual(await read(), [{ id: 1, a: 'one' }]);
    await sql`ALTER TABLE shape_test ADD COLUMN b INTEGER NOT NULL DEFAULT 7`.execute(database.db);
    // Never the old description over the new rows: PostgreSQL refuses the statement, which is prepared afresh.
    await assert.rejects(read(), /cached plan must not change result type/);
    assert.deepEqual(await read(), [{ id: 1, a: 'one', b: 7 }]);
    await sql`ALTER TABLE shape_test ALTER COLUMN b TYPE TEXT`.execute(database.db);
    await assert.rejects(read(), /cached plan must not change result type/);
    assert.deepEqual(await read(), [{ id: 1, a: 'one', b: '7' }]);
  } finally {
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("PostgreSQL: the key lookup every authenticated request runs (a statement prepared per connection) still answers after another node's migration adds a column to api_keys", async (t) => {
  const admin = process.env.MCPWORKS_TEST_DATABASE_URL;
  if (!admin) return t.skip('PostgreSQL only: the pg pool prepares hot statements by name');
  const databaseUrl = await freshDatabaseUrl();
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-key-shape-'));
  const database = await openDatabase({ databaseUrl, dataDir });
  const other = new pg.Client({ connectionString: databaseUrl });
  await other.connect();
  try {
    const accounts = new AccountsStore(database.db);
    const account = (await accounts.createAccount({
      email: `${randomUUID()}@example.com`,
      passwordHash: 'x',
      tier: 'pro',
      trialEndsAt: null,
    }))!;
    const prefix = `mcpw_${randomUUID().slice(0, 8)}`;
    await accounts.createKey({
      accountId: account.id,
      name: 'k',
      prefix,
      keyHash: 'h',
      namespace: null,
      scopes: ['execute'],
      expiresAt: null,
    });
    // Sequential lookups run on the pool's one idle connection, which prepares the statement there.
    for (let i = 0; i < 3; i++) assert.equal((await accounts.findKeyForRequest({ prefix }, {}))?.prefix, prefix);
    // A newer node's migration, while this node serves: its requests must not fail for it.
    await other.query(`ALTER TABLE api_keys ADD COLUMN note_from_newer_node TEXT`);
    for (let i = 0; i < 3; i++) assert.equal((await accounts.findKeyForRequest({ prefix }, {}))?.prefix, prefix);
  } finally {
    await other.end();
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
