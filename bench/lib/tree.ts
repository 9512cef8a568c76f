/**
 * What a process and all its descendants use, read from /proc (Linux): the server, its KDF and
 * schema workers, the sandbox spawner and zygotes, helpers and the sandboxes themselves. Walking
 * /proc works the same on cgroup v1, hybrid and v2-only hosts and needs no privilege for the
 * server's own processes; a cgroup would not do, as the sandbox moves runs into cgroups of its own.
 *
 * Memory is PSS (/proc/PID/smaps_rollup: each shared page divided among the processes that map
 * it, so zygote children sharing their parent's pages are not counted twice); where smaps_rollup
 * cannot be read (a sandbox under another uid when the bench is not root) that process counts with
 * its RSS (VmRSS) instead, and the sample says how many did. A watch (watchTree) reads the root's
 * smaps_rollup once, then follows it by its RSS: reading smaps_rollup walks a process's page tables
 * under its mmap lock (about 13 ms of CPU for a 560 MB server), and every mmap/munmap of the
 * process's threads waits for the walk (a 1 MB mmap in a 600 MB process: up to 158 ms while another
 * process read its smaps_rollup 4 times a second): a watcher must not do that to the server it
 * measures. The root is not a fork of anything, so what it adds is private: its PSS grows as its
 * RSS does.
 *
 * CPU is utime + stime + cutime + cstime summed over the tree: a process that exits during a phase
 * leaves its time in its parent's cutime/cstime once reaped (node, the helper and the zygotes all
 * reap their children), so the difference of two samples is the CPU the whole tree used between
 * them, including processes that lived only in between.
 */
import { readdir, readFile } from 'node:fs/promises';

/** USER_HZ: clock ticks per second in /proc/PID/stat (100 on every Linux this runs on). */
const TICK_MS = 10;

export interface TreeSample {
  /** When taken (performance.now()). */
  at: number;
  processes: number;
  /** PSS (or RSS where PSS could not be read) summed over the tree, MB. */
  memoryMb: number;
  /** RSS summed over the tree, MB (counts shared pages once per process). */
  rssMb: number;
  /** Processes counted with RSS because their smaps_rollup could not be read. */
  rssFallbacks: number;
  /** CPU used by the tree since each process started, with reaped children's, ms. */
  cpuMs: number;
}

export interface Stat {
  ppid: number;
  /** utime + stime + cutime + cstime. */
  cpuTicks: number;
  /** utime + stime. */
  ownTicks: number;
}

export function parseStat(text: string): Stat | undefined {
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ppid = Number(fields[1]);
  const own = Number(fields[11]) + Number(fields[12]);
  const ticks = own + Number(fields[13]) + Number(fields[14]);
  return Number.isFinite(ppid) && Number.isFinite(ticks) ? { ppid, cpuTicks: ticks, ownTicks: own } : undefined;
}

async function kbField(file: string, field: string): Promise<number | undefined> {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(await readFile(file, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The pids of `root` and all its descendants (less the subtrees under `exclude`), with their stat figures; empty when root is gone. */
async function descendants(root: number, exclude: ReadonlySet<number> = new Set()): Promise<Map<number, Stat>> {
  const stats = new Map<number, Stat>();
  const children = new Map<number, number[]>();
  const entries = await readdir('/proc');
  await Promise.all(
    entries.map(async (entry) => {
      const pid = Number(entry);
      if (!Number.isInteger(pid)) return;
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').then(parseStat, () => undefined);
      if (!stat) return;
      stats.set(pid, stat);
      const siblings = children.get(stat.ppid);
      if (siblings) siblings.push(pid);
      else children.set(stat.ppid, [pid]);
    }),
  );
  return walk(root, stats, children, exclude);
}

/** The tree under `root` from every process's stat and its parent's children, less the subtrees under `exclude`. */
export function walk(
  root: number,
  stats: ReadonlyMap<number, Stat>,
  children: ReadonlyMap<number, readonly number[]>,
  exclude: ReadonlySet<number> = new Set(),
): Map<number, Stat> {
  const tree = new Map<number, Stat>();
  const pending = stats.has(root) ? [root] : [];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    tree.set(pid, stats.get(pid)!);
    for (const child of children.get(pid) ?? []) if (!tree.has(child) && !exclude.has(child)) pending.push(child);
  }
  return tree;
}

/**
 * CPU of the tree under `root` (reaped children's included), ms: `rootMs` is root's own utime +
 * stime, `restMs` everything else (root's reaped children and every live descendant), with the
 * subtrees under `exclude` (e.g. a bench's client or peer processes) left out. The difference of
 * two samples is what the tree used between them, as long as no excluded process was reaped by
 * root in between (its time would then land in root's cutime).
 */
export async function treeCpu(root: number, exclude: readonly number[] = []): Promise<{ rootMs: number; restMs: number; totalMs: number }> {
  const tree = await descendants(root, new Set(exclude));
  let rootTicks = 0;
  let restTicks = 0;
  for (const [pid, stat] of tree) {
    if (pid === root) {
      rootTicks += stat.ownTicks;
      restTicks += stat.cpuTicks - stat.ownTicks;
    } else restTicks += stat.cpuTicks;
  }
  return { rootMs: rootTicks * TICK_MS, restMs: restTicks * TICK_MS, totalMs: (rootTicks + restTicks) * TICK_MS };
}

/** The root's PSS read once, with its RSS at the time: later samples add the RSS it gained since. */
export interface RootBase {
  pssKb: number;
  rssKb: number;
}

/**
 * One sample of the tree under `root`; undefined when root no longer exists. With `rootBase`, the
 * root's PSS is not read again (its smaps_rollup) but followed through its RSS from /proc/PID/status,
 * which reads counters and takes no lock of the process.
 */
export async function sampleTree(root: number, rootBase?: RootBase): Promise<TreeSample | undefined> {
  return (await sample(root, rootBase))?.sample;
}

async function sample(root: number, rootBase?: RootBase): Promise<{ sample: TreeSample; rootBase: RootBase | undefined } | undefined> {
  const at = performance.now();
  const tree = await descendants(root);
  if (tree.size === 0) return undefined;
  let memoryKb = 0;
  let rssKb = 0;
  let rssFallbacks = 0;
  let cpuTicks = 0;
  let base: RootBase | undefined;
  await Promise.all(
    [...tree].map(async ([pid, stat]) => {
      cpuTicks += stat.cpuTicks;
      const followed = pid === root && rootBase !== undefined;
      const [read, rss] = await Promise.all([
        followed ? undefined : kbField(`/proc/${pid}/smaps_rollup`, 'Pss'),
        kbField(`/proc/${pid}/status`, 'VmRSS'),
      ]);
      const pss = followed && rss !== undefined ? rootBase.pssKb + (rss - rootBase.rssKb) : read;
      if (pid === root) base = rootBase ?? (pss !== undefined && rss !== undefined ? { pssKb: pss, rssKb: rss } : undefined);
      rssKb += rss ?? 0;
      if (pss !== undefined) memoryKb += pss;
      else if (rss !== undefined) {
        memoryKb += rss;
        rssFallbacks++;
      }
    }),
  );
  return {
    sample: { at, processes: tree.size, memoryMb: memoryKb / 1024, rssMb: rssKb / 1024, rssFallbacks, cpuMs: cpuTicks * TICK_MS },
    rootBase: base,
  };
}

/**
 * Samples the tree under `root` every `everyMs` until stopped; `stop()` takes a last sample and
 * returns them all (a first one is taken at once, so a phase always has its start and end; `ready`
 * resolves once it is in: the only one that reads the root's smaps_rollup, see above).
 */
export function watchTree(root: number, everyMs = 250): { ready: Promise<void>; stop(): Promise<TreeSample[]> } {
  const samples: TreeSample[] = [];
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let rootBase: RootBase | undefined;
  let current: Promise<void> = Promise.resolve();
  const take = () =>
    (current = sample(root, rootBase).then(
      (taken) => {
        if (!taken) return;
        samples.push(taken.sample);
        rootBase ??= taken.rootBase;
      },
      () => {},
    ));
  // The next sample is timed from the end of the last, so a slow read (a loaded machine) is not overlapped.
  const loop = async () => {
    await take();
    if (!stopped) timer = setTimeout(loop, everyMs);
  };
  void loop();
  return {
    // loop() started the first sample synchronously: `current` is it.
    ready: current,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current;
      await take();
      return samples;
    },
  };
}

/** One thread's scheduler figures (/proc/PID/task/TID/schedstat): the server's own threads each by its id, others `process/thread` by name. */
export interface ThreadSched {
  label: string;
  /** ns on a CPU, and ns runnable but waiting on a run queue, since the thread started. */
  runNs: number;
  waitNs: number;
}

/**
 * Every thread of the tree under `root`, keyed `PID/TID`: what each ran and waited for a CPU since it
 * started. The difference of two snapshots is what each thread did between them; threads that
 * ended in between are not in the second one (their time is lost to it, unlike treeCpu's).
 */
export async function threadSchedstats(root: number): Promise<Map<string, ThreadSched>> {
  const tree = await descendants(root);
  const threads = new Map<string, ThreadSched>();
  await Promise.all(
    [...tree.keys()].map(async (pid) => {
      const processName = await readFile(`/proc/${pid}/comm`, 'utf8').then(
        (text) => text.trim(),
        () => '?',
      );
      const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
      await Promise.all(
        tids.map(async (tid) => {
          const [sched, name, stat] = await Promise.all([
            readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').catch(() => undefined),
            readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').then(
              (text) => text.trim(),
              () => '?',
            ),
            readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => ''),
          ]);
          if (!sched) return;
          const [run, wait] = sched.split(' ').map(Number);
          if (!Number.isFinite(run) || !Number.isFinite(wait)) return;
          // The root's threads one by one (Node names most of them just `node`), other processes by name.
          // With its nice value (field 19 of stat, after the parenthesised name): what competes with the
          // main thread at its own priority is then told apart from what is already niced.
          const nice = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16] ?? '?';
          const label =
            (pid !== root ? `${processName}/${name}` : pid === Number(tid) ? `server main thread` : `server ${name} thread ${tid}`) +
            ` (nice ${nice})`;
          threads.set(`${pid}/${tid}`, { label, runNs: run!, waitNs: wait! });
        }),
      );
    }),
  );
  return threads;
}
