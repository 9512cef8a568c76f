import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isPlatformError } from '../core/errors.js';
import { acquireDataDirLock, DataDirLockedError } from './data-dir-lock.js';

test('a data dir held by a live process is a data_dir_locked PlatformError naming the holder; a stale lock is taken over', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-lock-'));
  try {
    // The parent process (the test runner) is alive and is not this process.
    writeFileSync(path.join(dataDir, 'mcpworks.lock'), JSON.stringify({ pid: process.ppid, holder: 'mcpworks serve' }));
    assert.throws(
      () => acquireDataDirLock(dataDir, 'mcpworks account'),
      (error: unknown) => {
        assert.ok(error instanceof DataDirLockedError && isPlatformError(error, 'data_dir_locked'), String(error));
        assert.equal(
          error.message,
          `the data dir ${dataDir} is in use by mcpworks serve (pid ${process.ppid}); stop it first, or use its HTTP API`,
        );
        assert.equal(error.name, 'DataDirLockedError');
        assert.deepEqual(error.data, { pid: process.ppid, holder: 'mcpworks serve', dataDir });
        return true;
      },
    );
    // Its own pid's lock is stale (a process never waits for itself): taken over, and released.
    writeFileSync(path.join(dataDir, 'mcpworks.lock'), JSON.stringify({ pid: process.pid, holder: 'mcpworks serve' }));
    acquireDataDirLock(dataDir, 'mcpworks account')();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
