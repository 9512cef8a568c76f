// Worker process for the password KDF (scrypt): one hash at a time, on this process's own thread,
// at a lower CPU priority than the server. The server's event loop and its libuv threadpool (file
// and DNS work) then never wait behind a hash, and the 32 MiB each hash needs is not the server's.
// Plain JavaScript so that it loads the same way from the source tree and from a build.
import { scryptSync } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

// Five steps nicer than the server (CFS weight 335 against 1024): under CPU contention the server
// runs first; an idle machine hashes at full speed. Nicer still would starve logins on a busy host.
const NICER = 5;
try {
  const nice = Math.min(19, getPriority() + NICER);
  // The nice value is per thread: this one and V8's, started before this line (GC, compilers).
  for (const tid of readdirSync('/proc/self/task')) setPriority(Number(tid), nice);
} catch {
  // Not permitted here (some containers): still off the server's thread and threadpool.
}

process.on('message', (job) => {
  let answer;
  try {
    const hash = scryptSync(job.secret, Buffer.from(job.salt, 'base64'), job.keylen, { N: job.N, r: job.r, p: job.p, maxmem: job.maxmem });
    answer = { id: job.id, hash: hash.toString('base64') };
  } catch (error) {
    answer = { id: job.id, error: error instanceof Error ? error.message : String(error) };
  }
  process.send?.(answer);
});
// The server went away: so do we.
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: true });
