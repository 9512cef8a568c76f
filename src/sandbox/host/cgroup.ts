/**
 * Per-run control groups for memory and process-count limits. cgroup v2 is used where its memory
 * controller is delegated to us, else the v1 `memory` and `pids` hierarchies, else nothing (the
 * caller then falls back to rlimits). Each run gets its own group, so the OOM killer and the
 * pids limit see exactly one execution.
 */
import { mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const GROUP_NAME = 'mcpworks-sandbox';
/** A dead server's groups: tries to kill and remove them, this long apart (~2 s in all, at start-up only). */
const DEAD_GROUP_ATTEMPTS = 40;
const DEAD_GROUP_PAUSE_MS = 50;
/** A busy group's removal is retried with pauses doubling from the first to the last (~4 s in all). */
const REMOVE_FIRST_PAUSE_MS = 2;
const REMOVE_LAST_PAUSE_MS = 2048;
/** How often killUntilEmpty looks again at what is left in a run's group. */
const KILL_POLL_MS = 5;

/**
 * Where this process's own groups are, read once at start (detectCgroupLayout, a host fact passed
 * down): reading it makes and writes nothing.
 */
export interface CgroupLayout {
  /** The unified hierarchy's directory of this process's group, when memory and pids are delegated to it. */
  v2: string | null;
  /** The v1 memory and pids hierarchies' directories of this process's groups, where they are mounted. */
  v1: { memory: string | null; pids: string | null };
}

/** No usable cgroups: memory and processes are limited with rlimits only. */
export const NO_CGROUPS: CgroupLayout = { v2: null, v1: { memory: null, pids: null } };

interface CgroupBase {
  version: 1 | 2;
  /** This instance's own group, under which per-run groups are made. */
  base: string;
}

/** One sandbox instance's (or npm's) groups, made by openCgroupSupport from the host's layout. */
export interface CgroupSupport {
  /**
   * Where per-run memory groups are made; null when memory cannot be limited this way. `swap`: the
   * groups have a swap limit (memory.swap.max in v2, memory.memsw.limit_in_bytes in v1), seen once.
   */
  memory: (CgroupBase & { swap: boolean }) | null;
  /** Where per-run pids groups are made (the same directory as memory for v2). */
  pids: CgroupBase | null;
}

export interface RunCgroup {
  /** cgroup.procs files the launcher writes itself into before exec. */
  readonly procsFiles: string[];
  /** Sets the run's limits (a pre-made group is created before its run is known). */
  configure(limits: { memoryBytes: number; maxProcesses: number }): void;
  /** True when the kernel's OOM killer killed something in this run. */
  oomKilled(): boolean;
  /** SIGKILLs every process still in the run's groups, but for `spare`. */
  killAll(spare?: number): void;
  /** Kills until no process is left (or `ms` passes); true when the groups are empty. */
  killUntilEmpty(ms: number): Promise<boolean>;
  /** Removes the groups once their processes are gone. */
  remove(): Promise<void>;
}

function ownCgroupPath(controller: string | null): string | null {
  let content: string;
  try {
    content = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return null;
  }
  for (const line of content.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    if (controller === null ? controllers === '' && line.startsWith('0:') : controllers.split(',').includes(controller)) {
      return path;
    }
  }
  return null;
}

/** Removes a group and the groups below it, deepest first (a zygote's runs sit two levels down). */
function removeGroupTree(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) removeGroupTree(join(dir, entry.name));
  rmdirSync(dir);
}

/** SIGKILLs every process in a group and the groups below it; the number signalled. */
function killGroupTree(dir: string): number {
  let killed = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) killed += killGroupTree(join(dir, entry.name));
  const pids = procsIn(dir);
  killPids(pids);
  return killed + pids.length;
}

/**
 * A dead server's groups: whatever still runs in them (a sandbox its helper could not end) is
 * killed first, then the groups are removed, waiting (bounded, ~2 s) for the kills to land.
 */
function removeDeadInstance(dir: string): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let attempt = 0; attempt < DEAD_GROUP_ATTEMPTS; attempt++) {
    try {
      killGroupTree(dir);
      removeGroupTree(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      // EBUSY: killed processes are still exiting. Start-up only, so a short blocking pause.
      Atomics.wait(pause, 0, 0, DEAD_GROUP_PAUSE_MS);
    }
  }
}

/**
 * Makes this sandbox instance's own group under the shared parent (so instances in several
 * processes never touch each other's runs) and removes groups left by processes that are gone.
 */
function prepareBase(parent: string): string | null {
  try {
    mkdirSync(parent, { recursive: true });
    for (const entry of readdirSync(parent, { withFileTypes: true })) {
      const owner = /^instance-(\d+)-/.exec(entry.name);
      if (!entry.isDirectory() || !owner || existsSync(`/proc/${owner[1]}`)) continue;
      try {
        removeDeadInstance(join(parent, entry.name));
      } catch {
        // unreadable: the next start-up retries
      }
    }
    const base = join(parent, `instance-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(base);
    return base;
  } catch {
    return null;
  }
}

/** The unified hierarchy's directory of our group, if it delegates memory and pids to us. */
function detectV2(): string | null {
  const mount = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? '/sys/fs/cgroup'
    : existsSync('/sys/fs/cgroup/unified/cgroup.controllers')
      ? '/sys/fs/cgroup/unified'
      : null;
  const own = ownCgroupPath(null);
  if (mount === null || own === null) return null;
  const parent = join(mount, own);
  try {
    const delegated = readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8').split(/\s+/);
    return delegated.includes('memory') && delegated.includes('pids') ? parent : null;
  } catch {
    return null;
  }
}

function detectV1(controller: 'memory' | 'pids'): string | null {
  const mount = `/sys/fs/cgroup/${controller}`;
  if (!existsSync(join(mount, 'cgroup.procs'))) return null;
  const own = ownCgroupPath(controller);
  return own === null ? null : join(mount, own);
}

/** The host's cgroup layout as this process sees it: read once at start, by the composition root. */
export function detectCgroupLayout(): CgroupLayout {
  return { v2: detectV2(), v1: { memory: detectV1('memory'), pids: detectV1('pids') } };
}

function openV2(parent: string): CgroupSupport['memory'] {
  try {
    const shared = join(parent, GROUP_NAME);
    mkdirSync(shared, { recursive: true });
    // These groups hold no processes, so they may hand memory and pids down to the per-run groups.
    writeFileSync(join(shared, 'cgroup.subtree_control'), '+memory +pids');
    const base = prepareBase(shared);
    if (base === null) return null;
    writeFileSync(join(base, 'cgroup.subtree_control'), '+memory +pids');
    return { version: 2, base, swap: existsSync(join(base, 'memory.swap.max')) };
  } catch {
    return null;
  }
}

function openV1(parent: string | null): CgroupBase | null {
  if (parent === null) return null;
  const base = prepareBase(join(parent, GROUP_NAME));
  return base === null ? null : { version: 1, base };
}

/**
 * This instance's own groups under the host's layout: made now (v2 where it is delegated, else the
 * v1 hierarchies), and removed by releaseCgroupSupport. Groups of dead processes are swept first.
 */
export function openCgroupSupport(layout: CgroupLayout): CgroupSupport {
  const v2 = layout.v2 === null ? null : openV2(layout.v2);
  if (v2) return { memory: v2, pids: v2 };
  const memory = openV1(layout.v1.memory);
  return {
    memory: memory && { ...memory, swap: existsSync(join(memory.base, 'memory.memsw.limit_in_bytes')) },
    pids: openV1(layout.v1.pids),
  };
}

function readCounter(file: string, key: string): number {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [name, value] = line.split(/\s+/);
      if (name === key) return Number(value);
    }
  } catch {
    // the group is already gone
  }
  return 0;
}

function procsIn(dir: string): string[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

function killPids(pids: string[], spare?: number): void {
  for (const pid of pids) {
    if (Number(pid) === spare) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already exited
    }
  }
}

function killProcsIn(dir: string, spare?: number): void {
  killPids(procsIn(dir), spare);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function removeDir(dir: string): Promise<void> {
  // EBUSY while the namespace's processes are still being reaped: retry with growing pauses (~4 s in all).
  for (let pause = REMOVE_FIRST_PAUSE_MS; pause <= REMOVE_LAST_PAUSE_MS; pause *= 2) {
    try {
      // Off the event loop: removing a v1 memory group blocks in the kernel for ~10 ms, which a
      // synchronous rmdir would add to the very answer the removal must not delay.
      await rmdir(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      killProcsIn(dir);
      await sleep(pause);
    }
  }
}

/** Removes this instance's own groups (after its runs' groups are gone). */
export async function releaseCgroupSupport(support: CgroupSupport): Promise<void> {
  for (const base of new Set([support.memory?.base, support.pids?.base])) {
    if (base) await removeDir(base);
  }
}

export function createRunCgroup(
  support: CgroupSupport,
  runId: string,
  limits: { memoryBytes: number; maxProcesses: number },
): RunCgroup | null {
  if (!support.memory && !support.pids) return null;
  const dirs: string[] = [];
  const configurers: Array<(limits: { memoryBytes: number; maxProcesses: number }) => void> = [];
  const created: RunCgroup = {
    procsFiles: [],
    configure: (next) => configurers.forEach((apply) => apply(next)),
    oomKilled: () => false,
    // A run's processes join its memory group first, then its pids group, and every process they
    // start is born in both: the first group's list is the whole run, so one read serves.
    killAll: (spare) => killProcsIn(dirs[0], spare),
    killUntilEmpty: async (ms) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const left = procsIn(dirs[0]);
        if (left.length === 0) return true;
        killPids(left);
        if (Date.now() > deadline) return false;
        await sleep(KILL_POLL_MS);
      }
    },
    remove: async () => {
      for (const dir of dirs) await removeDir(dir);
    },
  };
  try {
    if (support.memory?.version === 2) {
      const dir = join(support.memory.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      if (support.memory.swap) writeFileSync(join(dir, 'memory.swap.max'), '0');
      configurers.push((next) => {
        writeFileSync(join(dir, 'memory.max'), String(next.memoryBytes));
        writeFileSync(join(dir, 'pids.max'), String(next.maxProcesses));
      });
      created.procsFiles.push(join(dir, 'cgroup.procs'));
      created.oomKilled = () => readCounter(join(dir, 'memory.events'), 'oom_kill') > 0;
      created.killAll = (spare) => {
        if (spare !== undefined) return killProcsIn(dir, spare);
        try {
          writeFileSync(join(dir, 'cgroup.kill'), '1');
        } catch {
          killProcsIn(dir);
        }
      };
      created.configure(limits);
      return created;
    }
    if (support.memory) {
      const dir = join(support.memory.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      const swapAccounted = support.memory.swap;
      configurers.push((next) => {
        const value = String(next.memoryBytes);
        // With swap accounting, memory+swap gets the same cap so the run cannot spill into swap.
        // The kernel keeps memsw >= memory at every step, so the order depends on the direction.
        const writeMemsw = () => {
          if (!swapAccounted) return;
          try {
            writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), value);
          } catch {
            // swap accounting present but disabled
          }
        };
        try {
          writeFileSync(join(dir, 'memory.limit_in_bytes'), value);
          writeMemsw();
        } catch {
          writeMemsw();
          writeFileSync(join(dir, 'memory.limit_in_bytes'), value);
        }
      });
      created.procsFiles.push(join(dir, 'cgroup.procs'));
      const oomControl = join(dir, 'memory.oom_control');
      const failcnt = join(dir, 'memory.failcnt');
      created.oomKilled = () => {
        if (readCounter(oomControl, 'oom_kill') > 0) return true;
        try {
          // Kernels without the oom_kill counter: hitting the limit is the best evidence there is.
          return !readFileSync(oomControl, 'utf8').includes('oom_kill') && Number(readFileSync(failcnt, 'utf8')) > 0;
        } catch {
          return false;
        }
      };
    }
    if (support.pids) {
      const dir = join(support.pids.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      configurers.push((next) => writeFileSync(join(dir, 'pids.max'), String(next.maxProcesses)));
      created.procsFiles.push(join(dir, 'cgroup.procs'));
    }
    created.configure(limits);
    return created;
  } catch (error) {
    void created.remove();
    throw error;
  }
}
