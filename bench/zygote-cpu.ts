/**
 * Sandbox CPU per Python run forked from a zygote (issue 18: ≤ 4 ms): every process of the run (P1,
 * the worker and whatever it forks, kernel time included) and the zygote's own share (its fork and
 * its request loop), without the server, the helper or the spawner.
 *
 *   bench/zygote-cpu [--shape hello|pandas] [--runs N] [--rounds R]
 *   (defaults: hello, 300 runs a round, 3 rounds)
 *
 * The real sandbox in this process (zygotes on, no pre-started sandboxes), runs back to back,
 * counted by `perf stat -e task-clock,page-faults -p ZYGOTE` (Linux perf, run as root) over each
 * round: the zygote and every process it forks from then on, kernel time included, counted as each
 * process exits, whoever reaps it. Not the zygote's cutime/cstime (/proc/PID/stat): the server
 * kills a run's processes once it has its answer, and an init of a PID namespace that is killed
 * lets the kernel reap its children without adding their CPU to its own (zap_pid_ns_processes
 * ignores SIGCHLD), so the worker's CPU, most of a run's, never reaches the zygote's counts. perf
 * does not count the kernel's own threads (a network namespace's teardown runs in kernel workers),
 * so beside it, over the same round, a machine-wide count: /proc/stat's busy time of all CPUs,
 * less this process's own CPU (the server's side of the sandbox: what the run is not), less what
 * the machine did at the rate measured over IDLE_MS of no runs just before (other work, the idle
 * sandbox's upkeep: printed as the idle rate). On an idle machine it is the honest figure, the
 * larger one, and the target is read from it; on a busy one the other work's swings land in it
 * too, so the load is printed with it. Third, the bench's control group (bench/lib/cgroup-cpu.ts)
 * less this process: every process of the sandbox (helper and spawner too), no kernel threads.
 * CPU counts are steadier than wall times on a shared machine: compare builds by them, alternating
 * the builds; page faults (each a copy-on-write copy or a mapping) are steadier still.
 * No spare children: each run's child is forked when the run claims it, so every process counted
 * is one of the round's runs. With spares, those forked before the count starts (as many as 12)
 * would run some of the round's runs uncounted, and those forked for later runs be counted.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { sandboxLimitsFor, type SandboxRequest } from '../src/core/sandbox.js';
import { limitsFor } from '../src/core/tiers.js';
import { createBubblewrapSandbox } from '../src/sandbox/bubblewrap.js';
import { openCgroupCpu } from './lib/cgroup-cpu.js';
import { beyondIdle, FOREIGN_CORES_LIMIT, machineBusyMs, type BusySpan } from './lib/machine.js';
import { median } from './lib/measure.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'hello' },
    runs: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
  },
});
const runs = Number(values.runs);
const rounds = Number(values.rounds);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');

const SHAPES: Record<string, { imports: string[]; code: string }> = {
  hello: {
    imports: [],
    code: 'def main(input_data):\n    name = input_data.get("name", "World")\n    return {"greeting": f"Hello, {name}!", "message": "MCPWorks is working"}\n',
  },
  pandas: {
    imports: ['pandas'],
    code: 'import pandas as pd\n\ndef main(input_data):\n    frame = pd.DataFrame({"x": [1, 2, 3]})\n    return {"sum": int(frame["x"].sum())}\n',
  },
};
const shape = SHAPES[values.shape!];
if (!shape) throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);

/** The idle machine's rate is measured over this long before each round (no runs, perf not yet attached). */
const IDLE_MS = 3000;
const TARGET_MS = 4;

// Before the sandbox forks anything: its processes are then born in the group.
const cgroup = openCgroupCpu();
const group = 'unavailable' in cgroup ? undefined : cgroup;
const limits = sandboxLimitsFor(limitsFor('pro'));
const sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: { minSpares: 0, maxSpares: 0 } });
const request: SandboxRequest = {
  language: 'python',
  code: shape.code,
  input: { name: 'bench' },
  limits,
  warm: { group: `zygote-cpu-${values.shape}`, imports: shape.imports },
};

function statFields(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** This process's zygotes' Python processes (not bubblewrap's, nor the zygote's children, which share its command line). */
function zygotePids(): number[] {
  const isZygote = (pid: number) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return /python3[.0-9]*$/.test(argv[0]!) && argv.includes('/sandbox/zygote.py');
    } catch {
      return false;
    }
  };
  const parent = (pid: number) => Number(statFields(pid)?.[1] ?? 0);
  const mine = (pid: number) => {
    for (let at = parent(pid); at > 1; at = parent(at)) if (at === process.pid) return true;
    return false;
  };
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (isZygote(pid) && !isZygote(parent(pid)) && mine(pid)) pids.push(pid);
  }
  return pids;
}

/** Counts the zygote and what it forks until stop() (SIGINT): task-clock ms and page faults. */
function perfStat(pid: number): { stop(): Promise<{ cpuMs: number; faults: number }> } {
  const perf = spawn('perf', ['stat', '-x', ',', '-e', 'task-clock,page-faults', '-p', String(pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let text = '';
  perf.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const ended = new Promise<void>((resolve, reject) => {
    perf.once('error', reject);
    perf.once('close', () => resolve());
  });
  return {
    async stop() {
      perf.kill('SIGINT');
      await ended;
      const count = (event: string) =>
        Number(
          text
            .split('\n')
            .find((line) => line.split(',')[2] === event)
            ?.split(',')[0],
        );
      const cpuMs = count('task-clock');
      const faults = count('page-faults');
      if (!Number.isFinite(cpuMs) || !Number.isFinite(faults)) throw new Error(`perf stat said: ${text.trim()}`);
      return { cpuMs, faults };
    },
  };
}

/** The machine's busy CPU, this process's and the group's, from now until the returned function is called. */
function span(): () => BusySpan & { groupMs: number } {
  const busy = machineBusyMs();
  const self = process.cpuUsage();
  const groupMs = group?.usageMs() ?? Number.NaN;
  const started = performance.now();
  return () => {
    const own = process.cpuUsage(self);
    return {
      busyMs: machineBusyMs() - busy,
      selfMs: (own.user + own.system) / 1000,
      elapsedMs: performance.now() - started,
      groupMs: (group?.usageMs() ?? Number.NaN) - groupMs,
    };
  };
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function one(): Promise<number> {
  const started = performance.now();
  const outcome = await sandbox.run(request);
  if (!outcome.ok) throw new Error(`run failed: ${JSON.stringify(outcome)}`);
  return performance.now() - started;
}

/** Until no run is in progress, and a pause for the last run's processes to end (a live one is counted so far). */
async function settled(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (sandbox.zygoteStats()?.zygotes.every((zygote) => zygote.active === 0)) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
}

try {
  for (let i = 0; i < 50; i++) await one();
  const [zygote] = zygotePids();
  if (zygote === undefined) throw new Error('no zygote started (zygotes need root and memory and pids cgroups)');
  console.log(`zygote-cpu: shape ${values.shape}, ${runs} runs x ${rounds} rounds, load ${loadavg()}`);
  const larger: number[] = [];
  const perfs: number[] = [];
  let loaded = false;
  for (let round = 0; round < rounds; round++) {
    await settled();
    const idleSpan = span();
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const idle = idleSpan();
    const counter = perfStat(zygote);
    // perf attaches within milliseconds; a run before that would go uncounted.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const roundSpan = span();
    const walls: number[] = [];
    for (let i = 0; i < runs; i++) walls.push(await one());
    await settled();
    const taken = roundSpan();
    const { cpuMs, faults } = await counter.stop();
    if (zygotePids()[0] !== zygote) throw new Error('the zygote changed during the round');
    if (sandbox.zygoteStats()!.zygotes.some((entry) => entry.spares > 0))
      throw new Error('a spare child was forked: it would be counted with no run');
    const machine = beyondIdle(taken, idle);
    const perfMs = cpuMs / runs;
    const machineMs = machine.ms / runs;
    larger.push(Math.max(perfMs, machineMs));
    perfs.push(perfMs);
    loaded ||= machine.idleCores > FOREIGN_CORES_LIMIT;
    console.log(
      `round ${round + 1}: per run ${perfMs.toFixed(2)} ms CPU (perf, the zygote and what it forks), ` +
        `${machineMs.toFixed(2)} ms machine-wide (kernel threads included; idle rate ${machine.idleCores.toFixed(3)} cores over ${IDLE_MS / 1000} s before, load ${loadavg()}), ` +
        `${group ? `${((taken.groupMs - taken.selfMs) / runs).toFixed(2)} ms the sandbox's processes (${group.kind}, helper and spawner too)` : `no control group (${(cgroup as { unavailable: string }).unavailable})`}; ` +
        `${Math.round(faults / runs)} page faults; wall median ${median(walls).toFixed(1)} ms`,
    );
  }
  const worst = Math.max(...larger);
  // A loaded machine's machine-wide count is noise, so the larger of the two is no reading: perf's alone would leave the kernel's threads out.
  const verdict = loaded
    ? `not read (loaded machine: the machine-wide count is noise; perf's alone, without the kernel's threads, at most ${Math.max(...perfs).toFixed(2)} ms)`
    : worst <= TARGET_MS
      ? 'met'
      : 'not met';
  console.log(
    `target (issue 18): ≤ ${TARGET_MS} ms of CPU per run, every process and the kernel included, read from the larger of perf's and the machine-wide count each round: ` +
      `${larger.map((value) => value.toFixed(2)).join(', ')} ms: ${verdict}.`,
  );
  if (loaded)
    console.log(
      `LOADED MACHINE: an idle rate above ${FOREIGN_CORES_LIMIT} cores before a round; other work's swings are larger than a run's cost, so the machine-wide count is noise here, not a figure to quote`,
    );
} finally {
  await sandbox.close();
  await group?.close();
}
