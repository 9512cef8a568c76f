// test-database: embedded, process-wide worker pools; the database kind does not matter
// A server created and closed in-process leaves no worker behind (issue 11): the password KDF's
// worker processes and the output scanner's threads are the process's, and the last server to
// close stops them; the pools start workers again for a later server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedScanPool } from '../run/scan-pool.js';
import { passwordKdfStats } from '../services/credential-hashing.js';
import { createAccountOverHttp, startTestServer } from '../test-support/harness.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('close() stops the KDF worker processes and the scan threads the server started', async () => {
  for (let round = 0; round < 2; round++) {
    const server = await startTestServer();
    let workers: number[];
    try {
      // Registering and signing in hash passwords in KDF workers; a large answer (a run's answer with
      // 2 MB of output) is scanned in a thread.
      await createAccountOverHttp(server.url);
      await sharedScanPool.scan(['a-secret-value-that-is-long-enough-to-scan'], {
        ok: true,
        result: null,
        stdout: 'x'.repeat(2_000_000),
        stderr: '',
      });
      workers = passwordKdfStats().workers;
      assert.ok(workers.length > 0, 'a KDF worker ran');
      assert.ok(sharedScanPool.workers > 0, 'a scan thread ran');
    } finally {
      // Also when an assertion failed: a server left running would keep this file from ending.
      await server.stop();
    }
    assert.deepEqual(workers.filter(alive), [], `round ${round}: no KDF worker process left`);
    assert.deepEqual(passwordKdfStats().workers, []);
    assert.equal(sharedScanPool.workers, 0, `round ${round}: no scan thread left`);
  }
});
