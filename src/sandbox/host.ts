/**
 * Where the sandbox's pieces live on this host: bubblewrap, the helper and seccomp program built by
 * scripts/setup.d/sandbox.sh, the interpreters, and the in-sandbox runner files.
 */
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProcMasks } from './plan/bwrap-args.js';

export type { ProcMasks };

/** The repository (or installed package) root: the nearest directory above us with package.json. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('mcpworks package root not found');
    dir = parent;
  }
}

export interface HostPaths {
  bwrap: string;
  helper: string;
  seccompProgram: string;
  /** The zygote's fork in C (native/mcpworks-zygote-child.c), loaded by zygote.py inside its sandbox. */
  zygoteLibrary: string;
  /**
   * What each zygote child's P1 becomes once its worker is forked (native/mcpworks-zygote-init.c);
   * null: none, P1 is forked and waits itself (as before it existed; the tests' way to reach that path).
   */
  zygoteInit: string | null;
  python: string;
  node: string;
  /** Directory of the programs that run inside the sandbox: runner.py, runner.cjs, zygote.py (the source tree's, since tsc copies no .py). */
  runtimeSource: string;
  /** The spawner process's program (host-bin/spawner.cjs): it runs on the host, never in a sandbox. */
  spawnerScript: string;
}

export function defaultHostPaths(): HostPaths {
  const root = packageRoot();
  return {
    bwrap: '/usr/bin/bwrap',
    helper: join(root, '.build', 'mcpworks-sandbox-helper'),
    seccompProgram: join(root, '.build', 'seccomp.bpf'),
    zygoteLibrary: join(root, '.build', 'mcpworks-zygote-child.so'),
    zygoteInit: join(root, '.build', 'mcpworks-zygote-init'),
    python: '/usr/bin/python3',
    node: process.execPath,
    runtimeSource: join(root, 'src', 'sandbox', 'runtime'),
    spawnerScript: join(root, 'src', 'sandbox', 'host-bin', 'spawner.cjs'),
  };
}

/**
 * bubblewrap arguments that recreate the host's top-level links into /usr (merged /usr: /bin → usr/bin)
 * or bind the real directories on hosts without merged /usr.
 */
export function topLevelSystemDirs(): string[] {
  const args: string[] = [];
  for (const name of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    let stat;
    try {
      stat = lstatSync(name);
    } catch {
      continue;
    }
    if (stat.isSymbolicLink()) args.push('--symlink', readlinkSync(name), name);
    else if (stat.isDirectory()) args.push('--ro-bind', name, name);
  }
  return args;
}

/**
 * /proc entries that tell about the host rather than the run (as runc's maskedPaths): kernel
 * configuration, boot id and command line, memory and symbol maps, keys, timers and scheduler
 * state, interrupts, devices, disks, locks and pressure stall figures. Files are covered by an
 * empty read-only file, directories by an empty read-only tmpfs. What programs commonly read
 * (cpuinfo, meminfo, stat, loadavg, uptime, version, /proc/self) stays.
 */
const MASKED_PROC_FILES = [
  'config.gz',
  'kcore',
  'keys',
  'key-users',
  'timer_list',
  'sched_debug',
  'latency_stats',
  'interrupts',
  'softirqs',
  'kallsyms',
  'kmsg',
  'iomem',
  'ioports',
  'vmallocinfo',
  'slabinfo',
  'buddyinfo',
  'pagetypeinfo',
  'zoneinfo',
  'kpagecount',
  'kpageflags',
  'kpagecgroup',
  'cmdline',
  'consoles',
  'devices',
  'misc',
  'modules',
  'mtrr',
  'dma',
  'partitions',
  'diskstats',
  'swaps',
  'locks',
  'fb',
  'sys/kernel/random/boot_id',
];
const MASKED_PROC_DIRS = ['acpi', 'asound', 'bus', 'driver', 'fs', 'irq', 'pressure', 'scsi', 'tty'];

/** The masked /proc entries this kernel has (a run's /proc is a new instance of the same kernel's). */
export function procMasks(): ProcMasks {
  const has = (name: string, directory: boolean) => {
    try {
      return lstatSync(join('/proc', name)).isDirectory() === directory;
    } catch {
      return false;
    }
  };
  return { files: MASKED_PROC_FILES.filter((name) => has(name, false)), dirs: MASKED_PROC_DIRS.filter((name) => has(name, true)) };
}
