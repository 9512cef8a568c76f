import { execFile } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
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

/**
 * Puts the calling thread under SCHED_IDLE: it then runs only on CPU time no other thread of the
 * machine's level wants, and a waking server thread takes the core from it at once (a nice value
 * still let it finish its slice). Node has no call for a scheduling policy, so util-linux's chrt
 * (Debian: essential) sets it, started without waiting for it (the start forks this process
 * once, on this thread). Where chrt is missing or the host refuses it, the thread keeps its policy.
 */
export function setThreadIdle(): void {
  try {
    // "/proc/thread-self" links to "PID/task/TID".
    const tid = readlinkSync('/proc/thread-self').split('/').pop()!;
    execFile('/usr/bin/chrt', ['--idle', '-p', '0', tid], { env: {}, timeout: 10_000 }, () => undefined);
  } catch {
    // No /proc, or no process could be started: the thread keeps its policy.
  }
}
