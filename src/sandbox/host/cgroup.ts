/**
 * Per-run control groups for memory and process-count limits. cgroup v2 is used where its memory
 * controller is delegated to us, else the v1 `memory` and `pids` hierarchies, else nothing (the
 * caller then falls back to rlimits). Each run gets its own group, so the OOM killer and the
 * pids limit see exactly one execution. Where the cpu controller is ours too, the runs' user code
 * of one sandbox instance shares one low-weight CPU group beside the server (see CpuGroup).
 */
import { mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { open, rmdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { claimV2Subtree, handedDown } from './cgroup-delegation.js';

const GROUP_NAME = 'mcpworks-sandbox';
/** An instance's CPU group (v1; v2: its whole group) sits directly in the server's own group (v2: beside its leaf): `mcpworks-sandbox-instance-HEX`. */
const CPU_GROUP_PREFIX = `${GROUP_NAME}-instance-`;
/** A default group's CPU weight in v2 units (v1: 1024 shares), which a group has back while a killed run is reaped. */
export const DEFAULT_CPU_WEIGHT = 100;
/**
 * The runs' CPU weight unless MCPWORKS_SANDBOX_CPU_WEIGHT says otherwise: a quarter of a default
 * group's, so busy runs together weigh a quarter of the server's main thread.
 */
export const SANDBOX_CPU_WEIGHT = 25;
/** A dead server's groups: tries to kill and remove them, this long apart (~2 s in all, at start-up only). */
const DEAD_GROUP_ATTEMPTS = 40;
const DEAD_GROUP_PAUSE_MS = 50;
/** A busy group's removal is retried with pauses doubling from the first to the last (~4 s in all). */
const REMOVE_FIRST_PAUSE_MS = 2;
const REMOVE_LAST_PAUSE_MS = 2048;
/** How often killUntilEmpty looks again at what is left in a run's group (without the boost: at first, then less often, up to the max). */
const KILL_POLL_MS = 5;
const KILL_POLL_MAX_MS = 80;

/**
 * Where this process's own groups are, found once at start (detectCgroupLayout, a host fact passed
 * down). It writes nothing, but for cgroup v2's one step: a server in a leaf group moves into a
 * leaf of its own so that its group can hand controllers down (cgroup-delegation.ts).
 */
export interface CgroupLayout {
  /** The unified hierarchy's group our groups are made in (the server's, or the one its leaf is in), handing down memory and pids. */
  v2: string | null;
  /** The v1 memory, pids and cpu hierarchies' directories of this process's groups, where they are mounted. */
  v1: { memory: string | null; pids: string | null; cpu?: string | null };
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
  /** This instance's low-weight CPU group, where the cpu controller is ours (openCgroupSupport's `cpuWeight`). */
  cpu?: CpuGroup | null;
}

/**
 * One instance's CPU group, a child of the server's own group (so a sibling of the server, never
 * of another server's runs: two servers' runs never share one weight). v1: its own directory in
 * the cpu hierarchy, which a run's processes join when its code is sent (RunCgroup.lowerCpu), so
 * zygotes and pre-started sandboxes start at the default weight. v2: the instance's group itself,
 * under which every run group is made (one hierarchy: a process is in one group only).
 */
export interface CpuGroup {
  version: 1 | 2;
  dir: string;
  /** The weight in v2 units, 1 to 10000 (v1: cpuShares of it). */
  weight: number;
  /**
   * The group is an idle group (cpu.idle, Linux 5.15+): its runs get only the CPU time that nothing
   * else in the server's group wants, and a waking server thread takes a core from them at once,
   * where a low weight still let a busy run finish its slice first. false: the weight alone (idle
   * not asked for, or a kernel without cpu.idle).
   */
  idle: boolean;
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
  /**
   * Moves the run's processes into the instance's low-weight CPU group (v1; on v2 they are in it
   * from the start). Called before the run's code is sent: its processes then only wait or start.
   * Off the event loop: a v1 move takes the kernel's cgroup lock for writing, which waits for an
   * RCU grace period (measured 4.5 to 22 ms on a busy 2-core host), and a synchronous write held
   * every request for that long.
   * `settled`: the caller knows no process of the run starts before its code is sent (a zygote's
   * child, up: P1 waits for its worker, the worker for its request), so the first read is the whole
   * run and no second read confirms it.
   */
  lowerCpu(options?: { settled?: boolean }): Promise<void>;
  /**
   * Kills until no process is left (or `ms` passes); true when the groups are empty. `boost`: the
   * run's answer waits for this reap, so the instance's CPU group has the default weight meanwhile.
   */
  killUntilEmpty(ms: number, options?: { boost?: boolean }): Promise<boolean>;
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

/** A CPU group's owner: an empty child group `owner-PID`, since the group's own name is seen by its runs. */
const OWNER_MARK = /^owner-(\d+)$/;

/** The pid that owns instance group `dir`: from its name `PREFIX<pid>-…`, else its owner mark; null when neither says. */
function ownerOf(dir: string, rest: string): string | null {
  const named = /^(\d+)-/.exec(rest);
  if (named) return named[1]!;
  try {
    for (const entry of readdirSync(dir)) {
      const mark = OWNER_MARK.exec(entry);
      if (mark) return mark[1]!;
    }
  } catch {
    // gone meanwhile
  }
  return null;
}

/** Removes the groups `PREFIX…` in `parent` whose owning process is gone (none there: nothing). */
function sweepDeadInstances(parent: string, prefix: string): void {
  let entries;
  try {
    entries = readdirSync(parent, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.isDirectory() || !entry.name.startsWith(prefix)) continue;
    // No owner yet: another process is making it this moment.
    const owner = ownerOf(join(parent, entry.name), entry.name.slice(prefix.length));
    if (owner === null || existsSync(`/proc/${owner}`)) continue;
    try {
      removeDeadInstance(join(parent, entry.name));
    } catch {
      // unreadable: the next start-up retries
    }
  }
}

/**
 * Makes this sandbox instance's own group in `parent` (so instances in several processes never
 * touch each other's runs) and removes groups left by processes that are gone. Named
 * `PREFIX<pid>-<hex>`; `hidden`: `PREFIX<hex>` with an owner mark inside, for a group a run's
 * processes move into after their cgroup namespace is made, who would read its name in
 * /proc/self/cgroup (the server's pid is none of their business).
 */
function prepareBase(parent: string, prefix = 'instance-', hidden = false): string | null {
  try {
    mkdirSync(parent, { recursive: true });
    sweepDeadInstances(parent, prefix);
    const base = join(
      parent,
      hidden ? `${prefix}${randomBytes(8).toString('hex')}` : `${prefix}${process.pid}-${randomBytes(4).toString('hex')}`,
    );
    mkdirSync(base);
    if (hidden) mkdirSync(join(base, `owner-${process.pid}`));
    return base;
  } catch {
    return null;
  }
}

/** The owner mark prepareBase made in a hidden group, removed before it. */
const ownerMarkOf = (dir: string | undefined) => dir && join(dir, `owner-${process.pid}`);

/** The unified hierarchy's directory under which our groups are made, where memory and pids can be handed down there. */
function detectV2(): string | null {
  const mount = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? '/sys/fs/cgroup'
    : existsSync('/sys/fs/cgroup/unified/cgroup.controllers')
      ? '/sys/fs/cgroup/unified'
      : null;
  const own = ownCgroupPath(null);
  if (mount === null || own === null) return null;
  // A leaf (a systemd service's group) is claimed: its processes move into a leaf of their own.
  return claimV2Subtree(mount, own);
}

function detectV1(controller: 'memory' | 'pids' | 'cpu'): string | null {
  const mount = `/sys/fs/cgroup/${controller}`;
  if (!existsSync(join(mount, 'cgroup.procs'))) return null;
  const own = ownCgroupPath(controller);
  return own === null ? null : join(mount, own);
}

/** The host's cgroup layout as this process sees it: read once at start, by the composition root. */
export function detectCgroupLayout(): CgroupLayout {
  return { v2: detectV2(), v1: { memory: detectV1('memory'), pids: detectV1('pids'), cpu: detectV1('cpu') } };
}

/** cgroup v1 cpu.shares for a v2 weight: the default weight (100) is the default shares (1024), in proportion. */
export function cpuSharesFor(weight: number): number {
  return Math.min(262144, Math.max(2, Math.round((weight * 1024) / DEFAULT_CPU_WEIGHT)));
}

/** Sets or clears the group's cpu.idle; false where the kernel has none (before 5.15) or refuses it. */
function setCpuIdle(cpu: Pick<CpuGroup, 'dir'>, idle: boolean): boolean {
  try {
    writeFileSync(join(cpu.dir, 'cpu.idle'), idle ? '1' : '0');
    return true;
  } catch {
    return false;
  }
}

/** The group's weight file and what it must read for `weight` (v2 units). */
function cpuWeightWrite(cpu: Pick<CpuGroup, 'version' | 'dir'>, weight: number): [file: string, value: string] {
  return cpu.version === 1 ? [join(cpu.dir, 'cpu.shares'), String(cpuSharesFor(weight))] : [join(cpu.dir, 'cpu.weight'), String(weight)];
}

/**
 * v2: the instance's group. Where the server's group hands the cpu controller down too, the
 * instance's group is made directly in it (the runs' weight beside the server's, not shared with
 * other instances in a common parent) and gets the runs' weight; else under the shared parent as
 * before. The server's own group holds the server, so nothing is ever enabled in it (v2's
 * no-internal-process rule): memory, pids and cpu must be delegated to it already.
 */
function openV2(
  parent: string,
  cpuWeight: number | undefined,
  cpuIdle: boolean,
): { memory: CgroupSupport['memory']; cpu: CpuGroup | null } {
  const none = { memory: null, cpu: null };
  try {
    const shared = join(parent, GROUP_NAME);
    sweepDeadInstances(parent, CPU_GROUP_PREFIX);
    const weighted = cpuWeight !== undefined && handedDown(parent).includes('cpu');
    let base: string | null;
    if (weighted) {
      sweepDeadInstances(shared, 'instance-');
      base = prepareBase(parent, CPU_GROUP_PREFIX, true);
    } else {
      mkdirSync(shared, { recursive: true });
      // These groups hold no processes, so they may hand memory and pids down to the per-run groups.
      writeFileSync(join(shared, 'cgroup.subtree_control'), '+memory +pids');
      base = prepareBase(shared);
    }
    if (base === null) return none;
    writeFileSync(join(base, 'cgroup.subtree_control'), '+memory +pids');
    let cpu: CpuGroup | null = null;
    if (weighted) {
      cpu = { version: 2, dir: base, weight: cpuWeight, idle: false };
      try {
        writeFileSync(...cpuWeightWrite(cpu, cpuWeight));
        cpu.idle = cpuIdle && setCpuIdle(cpu, true);
      } catch {
        cpu = null;
      }
    }
    return { memory: { version: 2, base, swap: existsSync(join(base, 'memory.swap.max')) }, cpu };
  } catch {
    return none;
  }
}

/** v1: this instance's CPU group, directly in the server's own cpu group, at `weight` (and idle if asked); null where it cannot be made. */
function openV1Cpu(parent: string, weight: number, idle: boolean): CpuGroup | null {
  const dir = prepareBase(parent, CPU_GROUP_PREFIX, true);
  if (dir === null) return null;
  const cpu: CpuGroup = { version: 1, dir, weight, idle: false };
  try {
    writeFileSync(...cpuWeightWrite(cpu, weight));
    cpu.idle = idle && setCpuIdle(cpu, true);
    return cpu;
  } catch {
    void removeDir(ownerMarkOf(dir)!).then(() => removeDir(dir));
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
 * `cpuWeight` (v2 units): the runs' user code gets a CPU group of this instance's at that weight
 * (`cpuIdle`: an idle group, the weight kept for kernels without cpu.idle),
 * where the cpu controller is ours; without it (npm builds), no CPU group.
 */
export function openCgroupSupport(layout: CgroupLayout, options: { cpuWeight?: number; cpuIdle?: boolean } = {}): CgroupSupport {
  const cpuIdle = options.cpuIdle ?? false;
  const v2 = layout.v2 === null ? null : openV2(layout.v2, options.cpuWeight, cpuIdle);
  if (v2?.memory) return owning({ memory: v2.memory, pids: v2.memory, cpu: v2.cpu });
  const memory = openV1(layout.v1.memory);
  const pids = openV1(layout.v1.pids);
  const cpuParent = layout.v1.cpu ?? null;
  return owning({
    memory: memory && { ...memory, swap: existsSync(join(memory.base, 'memory.memsw.limit_in_bytes')) },
    pids,
    // Only with a run group of its own to find a run's processes by.
    cpu: (memory || pids) && cpuParent && options.cpuWeight !== undefined ? openV1Cpu(cpuParent, options.cpuWeight, cpuIdle) : null,
  });
}

/**
 * The directories each support's opener made, and so the only ones releaseCgroupSupport removes.
 * A nested support (a zygote's) shares its instance's CPU group, which holds every live run of the
 * instance: removing it there killed them all (removeDir kills what is left in a busy group).
 */
const ownedDirs = new WeakMap<CgroupSupport, string[]>();

function owning(
  support: CgroupSupport,
  // The owner mark first: a group with a child group cannot be removed.
  dirs = [ownerMarkOf(support.cpu?.dir), support.memory?.base, support.pids?.base, support.cpu?.dir],
): CgroupSupport {
  ownedDirs.set(support, [...new Set(dirs.filter((dir): dir is string => Boolean(dir)))]);
  return support;
}

/**
 * A group `name` of its own inside `support`'s memory and pids groups (a zygote's, which makes its
 * children's run groups there), sharing the instance's CPU group; releaseCgroupSupport removes only
 * the new groups. Null where memory and pids are not both limited by groups.
 */
export function openNestedSupport(support: CgroupSupport, name: string): CgroupSupport | null {
  if (!support.memory || !support.pids) return null;
  const memory = { ...support.memory, base: join(support.memory.base, name) };
  const pids = { ...support.pids, base: join(support.pids.base, name) };
  mkdirSync(memory.base);
  if (pids.base !== memory.base) mkdirSync(pids.base);
  // v2: the group holds no process (its owner's is in a run group below), so it hands both down.
  if (memory.version === 2) writeFileSync(join(memory.base, 'cgroup.subtree_control'), '+memory +pids');
  return owning({ memory, pids, cpu: support.cpu }, [memory.base, pids.base]);
}

function readCounter(file: string, key: string): number {
  return counterIn(readOrEmpty(file), key) ?? 0;
}

/** A cgroup file's text; empty when the group is already gone. */
function readOrEmpty(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** `key`'s value in a flat-keyed cgroup file's text (`name value` lines); undefined where it has none. */
function counterIn(text: string, key: string): number | undefined {
  for (const line of text.split('\n')) {
    const [name, value] = line.split(/\s+/);
    if (name === key) return Number(value);
  }
  return undefined;
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

/**
 * One open cgroup.procs per instance CPU group (v1), shared by its runs' lowerCpu for as long as
 * the group lives: an open and a close of it for each run were two thread-pool trips (and two
 * wake-ups of the event loop) a run.
 */
const cpuProcsHandles = new Map<string, Promise<FileHandle>>();
/** Groups released (one per closed instance): a lowerCpu still in flight opens no new handle on one, which nothing would close. */
const releasedCpuDirs = new Set<string>();

function cpuProcsHandle(dir: string): Promise<FileHandle> {
  if (releasedCpuDirs.has(dir)) return Promise.reject(new Error('the CPU group was released'));
  let handle = cpuProcsHandles.get(dir);
  if (!handle) {
    const opening = open(join(dir, 'cgroup.procs'), 'w');
    handle = opening;
    cpuProcsHandles.set(dir, opening);
    // A failed open (the group is gone) is not kept: the next run tries again.
    opening.catch(() => {
      if (cpuProcsHandles.get(dir) === opening) cpuProcsHandles.delete(dir);
    });
  }
  return handle;
}

/** Removes the groups `support`'s opener made (after its runs' groups are gone), never a shared one. */
export async function releaseCgroupSupport(support: CgroupSupport): Promise<void> {
  const dirs = ownedDirs.get(support) ?? [];
  ownedDirs.delete(support);
  for (const dir of dirs) {
    releasedCpuDirs.add(dir);
    const handle = cpuProcsHandles.get(dir);
    cpuProcsHandles.delete(dir);
    await handle?.then((h) => h.close()).catch(() => undefined);
    await removeDir(dir);
  }
}

/** Reaps in progress per CPU group in this process (see boostCpu). */
const boosts = new Map<string, number>();

/**
 * The instance's CPU group at the default weight while a killed run is reaped before its answer (a
 * timeout, an overflow): killed processes must run to exit, and at a low weight on a busy host a
 * fork bomb's 64 can take longer than the reap bound. A finished run's leftovers are reaped at the
 * low weight. Returns the function that sets the low weight back once this process reaps none.
 * An idle group is not idle meanwhile: the kernel refuses a weight for an idle group, and clearing
 * cpu.idle gives it the default weight back, so the weight is written after, and idle set again last.
 */
function boostCpu(cpu: CpuGroup | null | undefined): () => void {
  if (!cpu) return () => {};
  const write = (weight: number) => {
    try {
      writeFileSync(...cpuWeightWrite(cpu, weight));
    } catch {
      // the group is gone (the server is closing): nothing to weigh
    }
  };
  const reaping = boosts.get(cpu.dir) ?? 0;
  boosts.set(cpu.dir, reaping + 1);
  if (reaping === 0) {
    if (cpu.idle) setCpuIdle(cpu, false);
    write(DEFAULT_CPU_WEIGHT);
  }
  return () => {
    const left = (boosts.get(cpu.dir) ?? 1) - 1;
    if (left > 0) return void boosts.set(cpu.dir, left);
    boosts.delete(cpu.dir);
    write(cpu.weight);
    if (cpu.idle) setCpuIdle(cpu, true);
  };
}

/** Most passes of lowerCpu: each moves what the last read found (a run's start-up forks a few processes). */
const LOWER_CPU_PASSES = 16;

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
    lowerCpu: async (options) => {
      const cpu = support.cpu;
      if (cpu?.version !== 1) return;
      // A process forked after its parent moved is born in the CPU group; one forked before is in
      // the run's group at the next read. So a read with nothing new means the whole run is in.
      const moved = new Set<string>();
      // Reading a group's list is quick (as killAll's is); moving a process into a v1 group can
      // wait in the kernel for milliseconds now and then, so the writes stay off the event loop,
      // through the group's one open file (an open, a write and a close each cost the loop a
      // thread-pool trip).
      let target: FileHandle | undefined;
      const passes = options?.settled ? 1 : LOWER_CPU_PASSES;
      for (let pass = 0; pass < passes; pass++) {
        const left = procsIn(dirs[0]).filter((pid) => !moved.has(pid));
        if (left.length === 0) return;
        try {
          target ??= await cpuProcsHandle(cpu.dir);
        } catch {
          // The CPU group is gone (the server is closing): nothing to move into.
          return;
        }
        for (const pid of left) {
          moved.add(pid);
          try {
            // One pid per write(2): a cgroup.procs write takes one.
            await target.write(pid);
          } catch {
            // exited meanwhile (or the group closed with its server)
          }
        }
      }
    },
    killUntilEmpty: async (ms, options) => {
      const deadline = Date.now() + ms;
      let unboost: (() => void) | undefined;
      // With the boost, also until the killed processes are reaped (a zombie has left the run's
      // group but not /proc): their parents are at the low weight too.
      const killed = new Set<string>();
      // Without the boost nothing waits on this (a finished run's groups, recycled): each look
      // waits twice as long as the last, and a pid is sent SIGKILL once.
      const signalled = new Set<string>();
      let pause = KILL_POLL_MS;
      try {
        for (;;) {
          const left = procsIn(dirs[0]);
          if (options?.boost) for (const pid of killed) if (!existsSync(`/proc/${pid}`)) killed.delete(pid);
          if (left.length === 0 && killed.size === 0) return true;
          if (options?.boost) {
            killPids(left);
            for (const pid of left) killed.add(pid);
            unboost ??= boostCpu(support.cpu);
          } else {
            killPids(left.filter((pid) => !signalled.has(pid)));
            for (const pid of left) signalled.add(pid);
          }
          if (Date.now() > deadline) return false;
          await sleep(pause);
          if (!options?.boost) pause = Math.min(pause * 2, KILL_POLL_MAX_MS);
        }
      } finally {
        unboost?.();
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
        // One read of oom_control per look (twice per run: its record, then its group's recycling).
        const kills = counterIn(readOrEmpty(oomControl), 'oom_kill');
        if (kills !== undefined) return kills > 0;
        try {
          // Kernels without the oom_kill counter: hitting the limit is the best evidence there is.
          return Number(readFileSync(failcnt, 'utf8')) > 0;
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
