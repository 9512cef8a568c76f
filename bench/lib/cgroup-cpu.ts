/**
 * The CPU of every process under a bench's server, counted whole: the bench process (where the
 * server runs) moves into a control group of its own before the server starts, so everything it
 * forks from then on (spawner, zygotes, bubblewrap, every run's processes, helpers) is born in it,
 * and the group's hierarchical CPU usage counts each process as it runs, whoever reaps it.
 *
 * Why not /proc cutime/cstime (bench/lib/tree.ts): a run's worker is killed at its answer and,
 * being in a PID namespace whose init is killed too, is reaped by the kernel without its CPU
 * reaching any parent (zap_pid_ns_processes ignores SIGCHLD), so a tree walk leaves out most of
 * each run. A group's usage does not depend on who reaps.
 *
 * Which hierarchy: cgroup v1 `cpuacct` where it is mounted (cpuacct.usage, ns, this group and all
 * below it), else the unified hierarchy (cpu.stat usage_usec, kept by the kernel for every group
 * whether or not the cpu controller is enabled). The sandbox (src/sandbox/host/cgroup.ts) moves a
 * run's processes only within the server's own groups: v1 memory, pids and cpu groups below the
 * server's (cpuacct is never written; where it is mounted together with cpu, the runs' CPU group is
 * made below the server's group, so below ours), and on v2 groups below the server's (its group, or
 * beside its leaf when it claims the group: cgroup-delegation.ts). Either way the runs stay inside
 * the bench's group, which is what makes its usage the whole count.
 *
 * The bench's other processes (load clients, peers) are born in the server's group too; each is
 * moved into a sibling group of its own (`setApart`) before it is measured, and its children are
 * then born there. Kernel threads' work a run causes (a network namespace's teardown in kworkers)
 * is in no group: bench/zygote-cpu counts it machine-wide.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Our groups are named `mcpworks-bench-<pid>`; one whose pid is gone is a dead bench's, removed when empty. */
const PREFIX = 'mcpworks-bench-';
/** Group `server` holds the bench process and what it forks; others are named by setApart. */
const SERVER = 'server';
/** How long close() waits for the last processes of the groups (killed runs being reaped) to leave. */
const CLOSE_ATTEMPTS = 40;
const CLOSE_PAUSE_MS = 50;

export type CgroupCpuKind = 'cgroup v1 cpuacct' | 'cgroup v2 cpu.stat';

/**
 * A group's CPU usage since it was made, ms, from its accounting file's text: v1 `cpuacct.usage`
 * (one number, ns) or v2 `cpu.stat` (`usage_usec N` among other lines). Undefined when the text
 * holds no such figure.
 */
export function parseCgroupCpuMs(kind: CgroupCpuKind, text: string): number | undefined {
  if (kind === 'cgroup v1 cpuacct') {
    const trimmed = text.trim();
    return /^\d+$/.test(trimmed) ? Number(trimmed) / 1e6 : undefined;
  }
  const match = /^usage_usec (\d+)$/m.exec(text);
  return match ? Number(match[1]) / 1000 : undefined;
}

/**
 * The path of this process's group in a hierarchy, from /proc/self/cgroup's text: the v1
 * hierarchy holding `controller` (`N:a,b:/path`), or the unified one (`0::/path`) for null.
 */
export function ownGroupPath(procSelfCgroup: string, controller: string | null): string | undefined {
  for (const line of procSelfCgroup.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controller === null ? line.startsWith('0::') : controllers.split(',').includes(controller)) return path;
  }
  return undefined;
}

export interface CgroupCpu {
  kind: CgroupCpuKind;
  /** The bench's group directory (its subgroups: `server` and one per setApart name). */
  dir: string;
  /** CPU used so far by group `name` (default: the server's) and every group below it, ms. */
  usageMs(name?: string): number;
  /** CPU used so far by every group of the bench (server and those set apart), ms. */
  totalMs(): number;
  /** Moves process `pid` (all its threads; its later children are born there) into group `name`, beside the server's. */
  setApart(pid: number, name: string): void;
  /** Moves this process back to where it was and removes the groups once empty (bounded wait). */
  close(): Promise<void>;
}

function locate(): { kind: CgroupCpuKind; parent: string; file: string } | { unavailable: string } {
  let selfCgroup: string;
  try {
    selfCgroup = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return { unavailable: 'no /proc/self/cgroup (not Linux?)' };
  }
  const v1 = ownGroupPath(selfCgroup, 'cpuacct');
  if (v1 !== undefined && existsSync('/sys/fs/cgroup/cpuacct/cpuacct.usage'))
    return { kind: 'cgroup v1 cpuacct', parent: join('/sys/fs/cgroup/cpuacct', v1), file: 'cpuacct.usage' };
  const v2 = ownGroupPath(selfCgroup, null);
  const mount = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((dir) => existsSync(join(dir, 'cgroup.controllers')));
  if (v2 !== undefined && mount) return { kind: 'cgroup v2 cpu.stat', parent: join(mount, v2), file: 'cpu.stat' };
  return { unavailable: 'neither the v1 cpuacct hierarchy nor the unified one is mounted' };
}

/** Removes `dir` and the groups below it, deepest first; false where one is still busy or not ours to remove. */
function removeTree(dir: string): boolean {
  try {
    for (const entry of readdirSync(dir, { withFileTypes: true }))
      if (entry.isDirectory() && !removeTree(join(dir, entry.name))) return false;
    rmdirSync(dir);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/**
 * Moves this process into a new group `<its group>/mcpworks-bench-<pid>/server` and returns the
 * account, or why it cannot (not root, no such hierarchy): the caller then prints the tree walk's
 * figure alone, saying so. Call before the server (and anything it forks) starts.
 */
export function openCgroupCpu(): CgroupCpu | { unavailable: string } {
  const place = locate();
  if ('unavailable' in place) return place;
  const { kind, parent, file } = place;
  // A dead bench's groups (killed before its close): removed where nothing is left in them.
  try {
    for (const entry of readdirSync(parent))
      if (entry.startsWith(PREFIX) && !existsSync(`/proc/${entry.slice(PREFIX.length)}`)) removeTree(join(parent, entry));
  } catch {
    // unreadable: mkdir below says whether the hierarchy is ours
  }
  const dir = join(parent, `${PREFIX}${process.pid}`);
  const group = (name: string) => join(dir, name);
  try {
    mkdirSync(group(SERVER), { recursive: true });
    if (kind === 'cgroup v2 cpu.stat') {
      // Hand down what the parent gives, so a server that claims its group for the sandbox's memory
      // and pids groups (cgroup-delegation.ts) can do so in ours as it would in its own. Our group
      // holds no process, so v2's no-internal-process rule allows it; a controller it lacks is skipped.
      const available = readFileSync(join(dir, 'cgroup.controllers'), 'utf8').split(/\s+/).filter(Boolean);
      for (const controller of available)
        try {
          writeFileSync(join(dir, 'cgroup.subtree_control'), `+${controller}`);
        } catch {
          // not delegable here: the server finds it missing, as it would have
        }
    }
    writeFileSync(join(group(SERVER), 'cgroup.procs'), String(process.pid));
  } catch (error) {
    removeTree(dir);
    return { unavailable: `cannot make or join ${group(SERVER)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` };
  }
  const usage = (at: string) => {
    const text = readFileSync(join(at, file), 'utf8');
    const value = parseCgroupCpuMs(kind, text);
    if (value === undefined) throw new Error(`no CPU usage in ${join(at, file)}: ${text.slice(0, 200)}`);
    return value;
  };
  return {
    kind,
    dir,
    usageMs: (name = SERVER) => usage(group(name)),
    totalMs: () => {
      // v1 counts the bench's group as a whole; v2 too (its cpu.stat is hierarchical).
      return usage(dir);
    },
    setApart(pid, name) {
      if (name === SERVER || name.includes('/')) throw new Error(`setApart: '${name}' is not a group name of its own`);
      mkdirSync(group(name), { recursive: true });
      writeFileSync(join(group(name), 'cgroup.procs'), String(pid));
    },
    async close() {
      try {
        writeFileSync(join(parent, 'cgroup.procs'), String(process.pid));
      } catch {
        // the parent is gone or no longer ours: the group is left for the next bench's sweep
      }
      for (let attempt = 0; attempt < CLOSE_ATTEMPTS; attempt++) {
        if (removeTree(dir)) return;
        await new Promise((resolve) => setTimeout(resolve, CLOSE_PAUSE_MS));
      }
    },
  };
}
