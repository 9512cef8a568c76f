import { accessSync, constants, readdirSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Free space /dev/shm must have to hold test data dirs (each ~40 MB, a few at once per file); Docker's default is 64 MB. */
const MIN_FREE_BYTES = 2 * 1024 ** 3;

/**
 * Where test data dirs are made: tmpfs (/dev/shm) when it is writable, roomy and allows exec (as
 * the temp dir does), else the temp dir. Copying the database template (1,000 files) and removing it
 * again cost ~0.7 s of CPU (mostly the kernel's) per test server on the disk's file system, ~0.1 s
 * on tmpfs; the database's own writes are cheaper too.
 */
export function testDataRoot(): string {
  testRoot ??= shmUsable() ? '/dev/shm' : tmpdir();
  return testRoot;
}
let testRoot: string | undefined;

function shmUsable(): boolean {
  try {
    accessSync('/dev/shm', constants.W_OK | constants.X_OK);
    const stats = statfsSync('/dev/shm');
    if (stats.bavail * stats.bsize < MIN_FREE_BYTES) return false;
    const mount = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' '))
      .filter((fields) => fields[1] === '/dev/shm')
      .pop();
    return mount?.[2] === 'tmpfs' && !mount[3]!.split(',').includes('noexec');
  } catch {
    return false;
  }
}

/** A test data dir untouched this long belongs to no running test file (a file's wall limit is 15 minutes). */
const STALE_MS = 6 * 3600_000;

/**
 * Removes the data dirs that test files killed before their cleanup left on tmpfs, where they hold
 * memory until the next boot. Once per test process that seeds a database (and by scripts/test.sh first).
 */
export function sweepStaleTestDirs(): void {
  const root = testDataRoot();
  if (root !== '/dev/shm') return;
  for (const name of readdirSync(root)) {
    if (!name.startsWith('mcpworks-')) continue;
    const dir = path.join(root, name);
    try {
      if (Date.now() - statSync(dir).mtimeMs > STALE_MS) rmSync(dir, { recursive: true, force: true });
    } catch {
      // Gone meanwhile, or not ours to remove.
    }
  }
}
