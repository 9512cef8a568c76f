import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PlatformError } from '../core/errors.js';

/**
 * Embedded PostgreSQL allows one process per data dir. This lock file makes a second process
 * (a CLI command while the server runs, or a second server) refuse with a clear message
 * instead of corrupting the database.
 */
export class DataDirLockedError extends PlatformError {
  declare readonly data: Readonly<{ pid: number; holder: string; dataDir: string }>;

  constructor(pid: number, holder: string, dataDir: string) {
    super('data_dir_locked', `the data dir ${dataDir} is in use by ${holder} (pid ${pid}); stop it first, or use its HTTP API`, {
      pid,
      holder,
      dataDir,
    });
    this.name = 'DataDirLockedError';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function acquireDataDirLock(dataDir: string, holder: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'mcpworks.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, JSON.stringify({ pid: process.pid, holder }), { flag: 'wx' });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        rmSync(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      let owner: { pid?: number; holder?: string } = {};
      try {
        owner = JSON.parse(readFileSync(file, 'utf8')) as typeof owner;
      } catch {
        // A half-written or unreadable lock is treated as stale below.
      }
      if (typeof owner.pid === 'number' && owner.pid !== process.pid && alive(owner.pid)) {
        throw new DataDirLockedError(owner.pid, owner.holder ?? 'another process', dataDir);
      }
      rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock the data dir ${dataDir}`);
}
