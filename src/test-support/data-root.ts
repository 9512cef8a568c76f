import { accessSync, constants, readFileSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';

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
