// The guarded PostgreSQL pool against a black hole: a loopback port that accepts connections and
// never answers, as a PostgreSQL stopped with SIGSTOP (or a black-holed network) looks to a client.
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { DatabaseHealth, DatabaseUnavailableError } from './db-health.js';
import { hotStatement } from './hot-statements.js';
import { guardedPostgresPool } from './pg-pool.js';

const sockets = new Set<Socket>();
const blackHole = createServer((socket) => {
  sockets.add(socket);
  socket.on('error', () => undefined);
  socket.on('close', () => sockets.delete(socket));
});
let url = '';

before(async () => {
  await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
  const address = blackHole.address();
  assert.ok(address && typeof address === 'object');
  url = `postgres://nobody:secret@127.0.0.1:${address.port}/nothing`;
});

after(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => blackHole.close(resolve));
});

test('a checkout waiting on an unanswering database is refused (503) once the probe finds it unreachable, not after the connect timeout', async () => {
  const health = new DatabaseHealth();
  // A connect timeout far beyond the bound below: only the probe's finding can end this checkout in time.
  const { pool, stop } = guardedPostgresPool(url, health, { connectTimeoutMs: 600_000 });
  try {
    const checkout = pool.connect();
    // Bounded for a broken build only (the probe gives up after 2 s): a hang fails here, not at the 10-minute test timeout.
    let bound: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      checkout.then(
        () => 'connected',
        (error: unknown) => error,
      ),
      new Promise((resolve) => (bound = setTimeout(() => resolve('still waiting after 60 s'), 60_000))),
    ]).finally(() => clearTimeout(bound));
    assert.ok(outcome instanceof DatabaseUnavailableError, `refused as unavailable, got: ${String(outcome)}`);
    assert.equal(outcome.type, 'unavailable');
    assert.equal(health.state, 'unreachable');
    // Known away: the next checkout is refused at once, without queueing on the pool.
    await assert.rejects(pool.connect(), DatabaseUnavailableError);
  } finally {
    stop();
    // The abandoned connection attempt still holds its pool slot; the black hole's sockets are destroyed in after().
    for (const socket of sockets) socket.destroy();
    await pool.end();
  }
});

test("a hot statement whose result type another node changed (a rolling upgrade's migration) fails once on a connection, not on every later call", async (t) => {
  const databaseUrl = process.env.MCPWORKS_TEST_DATABASE_URL;
  if (!databaseUrl) return t.skip('PostgreSQL only: named prepared statements are prepared by the pg pool');
  const fn = `pg_pool_shape_${process.pid}`;
  const other = new pg.Client({ connectionString: databaseUrl });
  await other.connect();
  const health = new DatabaseHealth();
  const { pool, stop } = guardedPostgresPool(databaseUrl, health);
  try {
    await other.query(`CREATE FUNCTION ${fn}(p int) RETURNS TABLE(rejected text, used int) LANGUAGE sql AS $$ SELECT 'no'::text, p $$`);
    const statement = hotStatement(`pg_pool_shape_test`, `SELECT rejected, used FROM ${fn}($1)`);
    const run = async () => {
      const client = await pool.connect();
      try {
        return (await client.query(statement.text, [1])).rows;
      } finally {
        client.release();
      }
    };
    // Prepared under its name on the pool's one idle connection (a checkout takes the last one released).
    for (let i = 0; i < 2; i++) assert.deepEqual(await run(), [{ rejected: 'no', used: 1 }]);
    // Another node's migration: the same columns, one of another type (DROP and CREATE, as CREATE OR REPLACE cannot).
    await other.query(
      `DROP FUNCTION ${fn}(int); CREATE FUNCTION ${fn}(p int) RETURNS TABLE(rejected text, used bigint) LANGUAGE sql AS $$ SELECT 'no'::text, p::bigint $$`,
    );
    // PostgreSQL refuses the statement prepared before; once, not for every call the connection serves after.
    await run().catch((error: unknown) => assert.match(String(error), /cached plan must not change result type/));
    for (let i = 0; i < 3; i++) assert.deepEqual(await run(), [{ rejected: 'no', used: '1' }]);
  } finally {
    stop();
    await other.query(`DROP FUNCTION IF EXISTS ${fn}(int)`).catch(() => undefined);
    await other.end();
    await pool.end();
  }
});
