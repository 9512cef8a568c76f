/**
 * How loaded the machine was while a bench ran, so that a run on a busy machine is visibly
 * marked: the load average at start and end, and the CPU that processes outside the bench's own
 * tree (the bench, its server, sandboxes, peers and client processes) used meanwhile, from
 * /proc/stat less the tree's own CPU (bench/lib/tree.ts; or, given the bench's control group, its
 * usage: the tree walk misses runs' killed workers, whose CPU would be taken for other work's).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import type { CgroupCpu } from './cgroup-cpu.js';
import { treeCpu } from './tree.js';

/** USER_HZ: clock ticks per second in /proc/stat (100 on every Linux this runs on). */
const TICK_MS = 10;
/** Above this share of one core used by others, or this 1-minute load per core at start, a run is not an idle-machine figure. */
export const FOREIGN_CORES_LIMIT = 0.1;
const LOAD_PER_CORE_LIMIT = 0.25;

/** CPU the whole machine spent busy (user, nice, system, irq, softirq, steal) since boot, ms. */
export function machineBusyMs(stat = readFileSync('/proc/stat', 'utf8')): number {
  const fields = stat.split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) * TICK_MS;
}

/** Busy CPU of the whole machine over a span (machineBusyMs's difference), the bench process's own CPU over it, and its length, ms. */
export interface BusySpan {
  busyMs: number;
  selfMs: number;
  elapsedMs: number;
}

/**
 * What a span of work cost the whole machine, kernel threads included: its busy CPU less the bench
 * process's own, less what the machine does anyway at the rate `idle` (a span of no work, just
 * before) showed. `idleCores` is that rate (cores busy with other work and the bench's idle
 * upkeep). Not clamped at 0: a negative figure says the idle rate moved, and is printed as it is.
 */
export function beyondIdle(span: BusySpan, idle: BusySpan): { ms: number; idleCores: number } {
  const idleCores = (idle.busyMs - idle.selfMs) / idle.elapsedMs;
  return { ms: span.busyMs - span.selfMs - idleCores * span.elapsedMs, idleCores };
}

export interface LoadWatch {
  /** Lines saying the machine and its load over the run; `loaded` when the figures are not an idle machine's. */
  finish(): Promise<{ lines: string[]; loaded: boolean }>;
}

/**
 * Starts watching from now: the machine's busy CPU and the bench tree's CPU (the tree under this
 * process, and under `alsoOurs`: processes of the bench that are not its descendants, such as a
 * PostgreSQL that pg_ctl daemonised). With `group` (bench/lib/cgroup-cpu.ts, opened before the
 * bench forked anything), this process's tree is counted by the group's usage instead.
 */
export async function watchMachineLoad(alsoOurs: readonly number[] = [], group?: CgroupCpu): Promise<LoadWatch> {
  const cores = availableParallelism();
  const loadStart = loadavg();
  const started = performance.now();
  const busyStart = machineBusyMs();
  const ours = async () => {
    let totalMs = group ? group.totalMs() : (await treeCpu(process.pid)).totalMs;
    for (const pid of alsoOurs) totalMs += (await treeCpu(pid)).totalMs;
    return { totalMs };
  };
  const treeStart = await ours();
  return {
    async finish() {
      const treeEnd = await ours();
      const busyEnd = machineBusyMs();
      const elapsed = performance.now() - started;
      const loadEnd = loadavg();
      const foreignCores = Math.max(0, busyEnd - busyStart - (treeEnd.totalMs - treeStart.totalMs)) / elapsed;
      const loaded = foreignCores > FOREIGN_CORES_LIMIT || loadStart[0]! / cores > LOAD_PER_CORE_LIMIT;
      const lines = [
        `machine: ${cores} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}); load average (1, 5, 15 min) at start ${loadStart.map((l) => l.toFixed(2)).join(' ')}, at end ${loadEnd.map((l) => l.toFixed(2)).join(' ')} (the end includes this bench); ` +
          `CPU used outside this bench's processes meanwhile: ${foreignCores.toFixed(2)} cores on average`,
      ];
      if (loaded)
        lines.push(
          `LOADED MACHINE: other work used ${foreignCores.toFixed(2)} cores (limit ${FOREIGN_CORES_LIMIT}) or the load at start was ${(loadStart[0]! / cores).toFixed(2)} per core (limit ${LOAD_PER_CORE_LIMIT}); these figures are not an idle machine's`,
        );
      return { lines, loaded };
    },
  };
}
