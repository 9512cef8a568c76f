// The guarded PostgreSQL pool against a black hole: a loopback port that accepts connections and
// never answers, as a PostgreSQL stopped with SIGSTOP (or a black-holed network) looks to a client.
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { DatabaseHealth, DatabaseUnavailableError } from './db-health.js';
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
