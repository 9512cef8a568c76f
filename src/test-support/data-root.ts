import { accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';

/**
 * Where test data dirs are made: tmpfs (/dev/shm) when there is one, else the temp dir. Copying the
 * template (1,000 files) and removing it again cost ~0.7 s of CPU (mostly the kernel's) per test
 * server on the disk's file system, ~0.1 s on tmpfs; the database's own writes are cheaper too.
 */
export function testDataRoot(): string {
  testRoot ??= (() => {
    try {
      accessSync('/dev/shm', constants.W_OK | constants.X_OK);
      return '/dev/shm';
    } catch {
      return tmpdir();
    }
  })();
  return testRoot;
}
let testRoot: string | undefined;
