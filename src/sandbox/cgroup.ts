/**
 * Per-run control groups for memory and process-count limits. cgroup v2 is used where its memory
 * controller is delegated to us, else the v1 `memory` and `pids` hierarchies, else nothing (the
 * caller then falls back to rlimits). Each run gets its own group, so the OOM killer and the
 * pids limit see exactly one execution.
 */
import { mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const GROUP_NAME = 'mcpworks-sandbox';

export interface CgroupSupport {
  /** Where per-run memory groups are made; null when memory cannot be limited this way. */
  memory: { version: 1 | 2; base: string } | null;
  /** Where per-run pids groups are made (the same directory as memory for v2). */
  pids: { version: 1 | 2; base: string } | null;
}

export interface RunCgroup {
  /** cgroup.procs files the launcher writes itself into before exec. */
  readonly procsFiles: string[];
  /** True when the kernel's OOM killer killed something in this run. */
  oomKilled(): boolean;
  /** SIGKILLs every process still in the run's groups. */
  killAll(): void;
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

/** Makes (or reuses) our parent group and proves we may write to it; null when we may not. */
function prepareBase(base: string): boolean {
  try {
    mkdirSync(base, { recursive: true });
    // Groups left by a server that died mid-run: empty ones can go, busy ones are still dying.
    for (const entry of readdirSync(base, { withFileTypes: true })) {
      if (entry.isDirectory() && entry.name.startsWith('run-')) {
        try {
          rmdirSync(join(base, entry.name));
        } catch {
          // still has processes; the next start-up retries
        }
      }
    }
    return true;
  } catch {
    return false;
  }
}

function detectV2(): CgroupSupport['memory'] {
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
    if (!delegated.includes('memory') || !delegated.includes('pids')) return null;
    const base = join(parent, GROUP_NAME);
    if (!prepareBase(base)) return null;
    // Our group holds no processes, so it may hand memory and pids down to the per-run groups.
    writeFileSync(join(base, 'cgroup.subtree_control'), '+memory +pids');
    return { version: 2, base };
  } catch {
    return null;
  }
}

function detectV1(controller: 'memory' | 'pids'): { version: 1; base: string } | null {
  const mount = `/sys/fs/cgroup/${controller}`;
  if (!existsSync(join(mount, 'cgroup.procs'))) return null;
  const own = ownCgroupPath(controller);
  if (own === null) return null;
  const base = join(mount, own, GROUP_NAME);
  return prepareBase(base) ? { version: 1, base } : null;
}

export function detectCgroupSupport(): CgroupSupport {
  const v2 = detectV2();
  if (v2) return { memory: v2, pids: v2 };
  return { memory: detectV1('memory'), pids: detectV1('pids') };
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

function killProcsIn(dir: string): void {
  let pids: string[];
  try {
    pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already exited
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function removeDir(dir: string): Promise<void> {
  // EBUSY while the namespace's processes are still being reaped: retry with growing pauses (~4 s in all).
  for (let pause = 2; pause <= 2048; pause *= 2) {
    try {
      rmdirSync(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      killProcsIn(dir);
      await sleep(pause);
    }
  }
}

export function createRunCgroup(
  support: CgroupSupport,
  runId: string,
  limits: { memoryBytes: number; maxProcesses: number },
): RunCgroup | null {
  if (!support.memory && !support.pids) return null;
  const dirs: string[] = [];
  const created: RunCgroup = {
    procsFiles: [],
    oomKilled: () => false,
    killAll: () => dirs.forEach(killProcsIn),
    remove: async () => {
      for (const dir of dirs) await removeDir(dir);
    },
  };
  try {
    if (support.memory?.version === 2) {
      const dir = join(support.memory.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      writeFileSync(join(dir, 'memory.max'), String(limits.memoryBytes));
      if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
      writeFileSync(join(dir, 'pids.max'), String(limits.maxProcesses));
      created.procsFiles.push(join(dir, 'cgroup.procs'));
      created.oomKilled = () => readCounter(join(dir, 'memory.events'), 'oom_kill') > 0;
      created.killAll = () => {
        try {
          writeFileSync(join(dir, 'cgroup.kill'), '1');
        } catch {
          killProcsIn(dir);
        }
      };
      return created;
    }
    if (support.memory) {
      const dir = join(support.memory.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      writeFileSync(join(dir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // With swap accounting, memory+swap gets the same cap so the run cannot spill into swap.
      if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) {
        try {
          writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
        } catch {
          // swap accounting present but disabled
        }
      }
      created.procsFiles.push(join(dir, 'cgroup.procs'));
      const oomControl = join(dir, 'memory.oom_control');
      const failcnt = join(dir, 'memory.failcnt');
      created.oomKilled = () => {
        if (readCounter(oomControl, 'oom_kill') > 0) return true;
        // Kernels without the oom_kill counter: hitting the limit is the best evidence there is.
        return !readFileSync(oomControl, 'utf8').includes('oom_kill') && Number(readFileSync(failcnt, 'utf8')) > 0;
      };
    }
    if (support.pids) {
      const dir = join(support.pids.base, `run-${runId}`);
      mkdirSync(dir);
      dirs.push(dir);
      writeFileSync(join(dir, 'pids.max'), String(limits.maxProcesses));
      created.procsFiles.push(join(dir, 'cgroup.procs'));
    }
    return created;
  } catch (error) {
    void created.remove();
    throw error;
  }
}
