/** Small helpers for tests that start servers and sandboxes as real processes. */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

/** A loopback port nothing listens on (now). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * fetch() bounded at `ms`, failing with an Error that says what went unanswered. AbortSignal.timeout
 * alone rejects with a DOMException, which node:test's process boundary turns into a bare `{}`
 * (V8 serialises it as a plain object): a failed bound then said nothing.
 */
export async function fetchWithin(ms: number, url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(ms) });
  } catch (error) {
    const what = `${init.method ?? 'GET'} ${new URL(url).pathname}`;
    if (error instanceof Error && error.name !== 'TimeoutError' && error.name !== 'AbortError') throw error;
    const timedOut = (error as { name?: unknown } | null)?.name === 'TimeoutError';
    throw new Error(timedOut ? `${what}: no answer within ${ms} ms` : `${what}: ${String(error)}`, { cause: error });
  }
}

/** Reads until `done` says so (every 100 ms, 30 s at most), then gives the last value. */
export async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  for (let i = 0; i < 300; i++) {
    const value = await read();
    if (done(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** The cgroup directories whose names start with `prefix`, in every hierarchy the sandbox uses. */
export function cgroupDirsNamed(prefix: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 8) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      if (entry.name.startsWith(prefix)) found.push(join(dir, entry.name));
      else walk(join(dir, entry.name), depth + 1);
    }
  };
  for (const hierarchy of ['/sys/fs/cgroup/memory', '/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified']) walk(hierarchy, 0);
  return found;
}

/**
 * Waits until at least `count` runs are in progress in zygote children of `sandbox` (their code is
 * running), instead of a fixed sleep that a loaded machine outlasts. Where zygotes are off, waits
 * `fallbackMs`. Bounded at 60 s, for a hung test only.
 */
export async function zygoteRunsActive(
  sandbox: { zygoteStats(): { zygotes: Array<{ active: number }> } | null },
  count: number,
  fallbackMs: number,
): Promise<void> {
  if (sandbox.zygoteStats() === null) {
    await new Promise((resolve) => setTimeout(resolve, fallbackMs));
    return;
  }
  const active = () => sandbox.zygoteStats()?.zygotes.reduce((sum, zygote) => sum + zygote.active, 0) ?? 0;
  for (let waited = 0; active() < count; waited += 20) {
    if (waited > 60_000) throw new Error(`gave up waiting for ${count} zygote runs: ${JSON.stringify(sandbox.zygoteStats())}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Runs `sandbox` has handed a sandbox so far, counting those in zygote children now: every run not
 * forked from a zygote claims from the pool (hit or miss), after its code is loaded. A run has
 * started once this passes the value read before it was sent.
 */
export function sandboxRunsStarted(sandbox: {
  poolStats(): { claims: number } | null;
  zygoteStats(): { zygotes: Array<{ active: number }> } | null;
}): number {
  return (sandbox.poolStats()?.claims ?? 0) + (sandbox.zygoteStats()?.zygotes.reduce((sum, zygote) => sum + zygote.active, 0) ?? 0);
}

/** Pids of this machine's processes (other than this one) whose command line contains `text`. */
export function processesWith(text: string): number[] {
  return processesWithEach([text])[0]!;
}

/**
 * processesWith for several texts in one pass over /proc: a pass reads every process's command
 * line (~5 ms of CPU on a busy host), and a test polling for four sandboxes every 50 ms spent a
 * fifth of a core on four passes.
 */
export function processesWithEach(texts: readonly string[]): number[][] {
  const found = texts.map(() => [] as number[]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let line: string;
    try {
      line = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue; // ended meanwhile
    }
    texts.forEach((text, i) => {
      if (line.includes(text)) found[i]!.push(Number(entry));
    });
  }
  return found;
}

/**
 * Nine random digits for this test process, for sleep markers found with processesWith: a pid
 * followed by a counter is ambiguous between test files running at once (pid 4242 + 13 and pid
 * 42421 + 3 are both "424213"), and a match found in another file's run makes a test act too early.
 */
export const RUN_MARK = String(100_000_000 + Math.floor(Math.random() * 900_000_000));

/** A thread's scheduling policy (field 41 of /proc/PID/task/TID/stat): 0 SCHED_OTHER, 5 SCHED_IDLE. */
export function schedulingPolicy(pid: number, tid: number | string): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
}

/** SCHED_IDLE's number where this host lets util-linux's chrt set it (a seccomp profile may refuse it), else SCHED_OTHER's. */
export function schedIdleHere(): number {
  return spawnSync('/usr/bin/chrt', ['--idle', '0', '/bin/true']).status === 0 ? 5 : 0;
}

/** The child processes one thread of this process forked (/proc lists a child under the thread that forked it). */
export function threadChildren(task: string | number): number[] {
  return readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Whether `pid` is a schema worker (schema-worker.mjs); false once it has gone. */
export function isSchemaWorker(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('schema-worker.mjs');
  } catch {
    return false;
  }
}

/** The schema worker processes of this process (any guard's or server's): children of any of its threads. */
export function schemaWorkers(): number[] {
  return readdirSync(`/proc/${process.pid}/task`).flatMap(threadChildren).filter(isSchemaWorker);
}
