import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';

/**
 * Sets every thread of process `pid` to nice `nice`. On Linux a nice value belongs to a thread:
 * setpriority(pid) moves only the thread whose id is the pid, and the threads Node started before
 * (V8's platform threads: GC and compiler work for that process's heap) would stay at the server's
 * priority. Threads started later inherit from the one that starts them (the lowered main thread).
 * Throws if the process is gone or the change is not permitted; a thread that ended meanwhile is skipped.
 */
export function setProcessNice(pid: number, nice: number): void {
  const target = Math.min(19, nice);
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      setPriority(Number(tid), target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }
}
