// test-database: postgres, migrations and the SQL dialect must hold on both databases
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { sql } from 'kysely';
import { describeError, maintain, openDatabase } from './database.js';
import { testDataRoot } from '../test-support/data-root.js';

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

test('describeError: whatever start-up throws prints its message, never [object Object]', () => {
  assert.equal(describeError(new Error('boom')), 'boom');
  assert.equal(describeError({ name: 'ErrnoError', errno: 51 }), 'no space left on device (ENOSPC)');
  assert.equal(describeError({ name: 'ErrnoError', errno: 999 }), 'file system error (errno 999)');
  assert.equal(describeError({ message: 'relation missing', code: '42P01' }), 'relation missing (42P01)');
  assert.equal(describeError({ what: 1 }), '{"what":1}');
  assert.equal(describeError('plain'), 'plain');
});
