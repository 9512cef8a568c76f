// The instances' CPU groups on the real host, with the real sandbox helper: where each is (a child
// of this process's own group, one per instance), its weight, which processes join it (a run's,
// when its code is sent; nothing before), dead instances' groups swept at start, and the default
// weight back only while a killed run is reaped before its answer. Needs root and a cpu controller.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultHostPaths } from '../host.js';
import { sandboxEnvironment } from '../plan/environment.js';
import {
  createRunCgroup,
  cpuSharesFor,
  DEFAULT_CPU_WEIGHT,
  detectCgroupLayout,
  openCgroupSupport,
  openNestedSupport,
  releaseCgroupSupport,
  SANDBOX_CPU_WEIGHT,
  type CgroupSupport,
  type CpuGroup,
  type RunCgroup,
} from './cgroup.js';
import { spawnHelper, type SpawnedProcess } from './spawn-helper.js';

const layout = detectCgroupLayout();
const paths = defaultHostPaths();
const LIMITS = { memoryBytes: 64 * 1024 * 1024, maxProcesses: 8 };
/** The cpu hierarchy's directory of this process's own group (v1 cpu, else the unified one). */
const own = (layout.v1.cpu ?? layout.v2)?.replace(/\/$/, '') ?? null;
/** A pid no process has: above the kernel's pid_max. */
const DEAD_PID = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
let support: CgroupSupport;
let other: CgroupSupport;
let deadGroup: string | null = null;

before(() => {
  // A group a dead server left (its pid cannot be alive): the next instance's start sweeps it.
  if (own) {
    deadGroup = join(own, 'mcpworks-sandbox-instance-0badc0de0badc0de');
    mkdirSync(join(deadGroup, `owner-${DEAD_PID}`), { recursive: true });
  }
  // A server's default: an idle group (its weight kept for kernels without cpu.idle).
  support = openCgroupSupport(layout, { cpuWeight: SANDBOX_CPU_WEIGHT, cpuIdle: true });
  // A second server's instance on the same host, at a weight of its own (MCPWORKS_SANDBOX_CPU_WEIGHT=40).
  other = openCgroupSupport(layout, { cpuWeight: 40 });
});

after(async () => {
  await releaseCgroupSupport(support);
  await releaseCgroupSupport(other);
});

const weightOf = (cpu: CpuGroup) => readFileSync(join(cpu.dir, cpu.version === 1 ? 'cpu.shares' : 'cpu.weight'), 'utf8').trim();
const weightFor = (cpu: CpuGroup, weight: number) => String(cpu.version === 1 ? cpuSharesFor(weight) : weight);
/** The kernel has cpu.idle (Linux 5.15+) for this group. */
const idleKnown = (cpu: CpuGroup) => existsSync(join(cpu.dir, 'cpu.idle'));
/** What the group reads for the runs: `idle` where cpu.idle is set, else its weight. */
const settingOf = (cpu: CpuGroup) =>
  idleKnown(cpu) && readFileSync(join(cpu.dir, 'cpu.idle'), 'utf8').trim() === '1' ? 'idle' : weightOf(cpu);

/** The helper in a run's groups, running `sleep 60` (its child) until killed. */
function helperIn(run: RunCgroup): SpawnedProcess {
  const args = ['exec', ...run.procsFiles.flatMap((file) => ['--cgroup', file])];
  return spawnHelper(paths.helper, [...args, '--', '/bin/sleep', '60'], {
    seccompProgram: paths.seccompProgram,
    env: sandboxEnvironment(),
  });
}

/**
 * Waits until `run`'s first group holds `count` processes; their pids. Bounded by 60 s, not by a
 * count of turns: 2000 turns of this loop last well under a second, and the helper, in a group of a
 * quarter of the CPU weight, can take longer than that to join on a loaded host.
 */
async function populated(run: RunCgroup, count: number): Promise<string[]> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    const pids = readFileSync(run.procsFiles[0]!, 'utf8').split('\n').filter(Boolean);
    if (pids.length >= count) return pids;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail('the helper and its program never joined the run group');
}

/** A process's group in the cpu hierarchy, as a directory under /sys/fs/cgroup. */
function cpuGroupOf(pid: string): string {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  const v1 = /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$/m.exec(lines)?.[1];
  if (v1 !== undefined) return join('/sys/fs/cgroup/cpu', v1).replace(/\/$/, '');
  return join(dirname(own!), /^0::(.*)$/m.exec(lines)![1]!).replace(/\/$/, '');
}

test('each instance has a CPU group of its own beside the server, idle or at the weight it was given; a dead instance’s group is swept', (t) => {
  if (!support.cpu || !other.cpu) return t.skip('no cpu controller of ours on this host (not root, or not delegated)');
  // Idle where asked for and the kernel has it; the other server's group at its weight, not idle.
  assert.equal(support.cpu.idle, idleKnown(support.cpu));
  assert.equal(other.cpu.idle, false);
  for (const [instance, weight] of [
    [support.cpu, SANDBOX_CPU_WEIGHT],
    [other.cpu, 40],
  ] as const) {
    // A child of the server's own group: a sibling of the server, which the kernel weighs against it.
    assert.equal(dirname(instance.dir), own);
    // Its name is seen by its runs (in /proc/self/cgroup, v1), so the owner's pid is a mark inside.
    assert.match(basename(instance.dir), /^mcpworks-sandbox-instance-[0-9a-f]{16}$/);
    assert.equal(existsSync(join(instance.dir, `owner-${process.pid}`)), true);
    assert.equal(settingOf(instance), instance.idle ? 'idle' : weightFor(instance, weight));
  }
  assert.notEqual(support.cpu.dir, other.cpu.dir);
  assert.equal(existsSync(deadGroup!), false, "the dead instance's group was removed");
  // v1 shares in proportion to v2 weights: 100 is the default 1024.
  assert.deepEqual([cpuSharesFor(25), cpuSharesFor(100), cpuSharesFor(1), cpuSharesFor(10_000)], [256, 1024, 10, 102400]);
});

test('no CPU group without a weight (npm builds)', async () => {
  const npm = openCgroupSupport(layout);
  try {
    assert.equal(npm.cpu ?? null, null);
  } finally {
    await releaseCgroupSupport(npm);
  }
});

test("a run's processes join its instance's CPU group only when its code is sent (lowerCpu), children too; another instance's runs join that one's", async (t) => {
  const cpu = support.cpu;
  if (!cpu || !other.cpu) return t.skip('no cpu controller of ours on this host (not root, or not delegated)');
  if (cpu.version === 2) {
    // v2: every run group is made in the instance's group, so its processes are in it from the start.
    const run = createRunCgroup(support, `v2-${process.pid}`, LIMITS)!;
    assert.equal(dirname(dirname(run.procsFiles[0]!)), cpu.dir);
    return run.remove();
  }
  const first = createRunCgroup(support, `cpu-a-${process.pid}`, LIMITS)!;
  const second = createRunCgroup(other, `cpu-b-${process.pid}`, LIMITS)!;
  const helpers = [helperIn(first), helperIn(second)];
  try {
    const pids = await populated(first, 2);
    // Started (a pool refill, a zygote's spare): at the server's weight, in the server's group.
    for (const pid of pids) assert.equal(cpuGroupOf(pid), own, `pid ${pid} before its code`);
    await first.lowerCpu();
    for (const pid of pids) assert.equal(cpuGroupOf(pid), cpu.dir, `pid ${pid} after lowerCpu`);
    const others = await populated(second, 2);
    for (const pid of others) assert.equal(cpuGroupOf(pid), own, 'the other instance’s run is untouched');
    // Settled (a zygote's child, up): its processes wait, so the one read finds them all.
    await second.lowerCpu({ settled: true });
    for (const pid of others) assert.equal(cpuGroupOf(pid), other.cpu.dir);
  } finally {
    for (const helper of helpers) helper.child.kill('SIGTERM');
    for (const helper of helpers) await helper.exited;
    await first.remove();
    await second.remove();
  }
});

for (const [which, instance, weight] of [
  ['an idle group', () => support, SANDBOX_CPU_WEIGHT],
  ['a weighted group', () => other, 40],
] as const)
  test(`a reap before the answer gives ${which} the default weight (not idle) while processes are left, and its own setting after`, async (t) => {
    const cpu = instance().cpu;
    if (!cpu) return t.skip('no cpu controller of ours on this host (not root, or not delegated)');
    const own = cpu.idle ? 'idle' : weightFor(cpu, weight);
    const run = createRunCgroup(instance(), `reap-${process.pid}`, LIMITS)!;
    try {
      let helper = helperIn(run);
      await populated(run, 2);
      await run.lowerCpu();
      // The reap's first look runs before its first await: processes are there, so it boosts.
      // (A deadline far above a reap's usual milliseconds: 2 s ran out once on a 2-core CI at load 12.)
      const reaped = run.killUntilEmpty(20_000, { boost: true });
      assert.equal(settingOf(cpu), weightFor(cpu, DEFAULT_CPU_WEIGHT));
      assert.equal(await reaped, true);
      assert.equal(settingOf(cpu), own);
      await helper.exited;
      // A finished run's leftovers (the zygote's recycling) are reaped at the low weight.
      helper = helperIn(run);
      await populated(run, 2);
      await run.lowerCpu();
      const recycled = run.killUntilEmpty(20_000);
      assert.equal(settingOf(cpu), own);
      await recycled;
      await helper.exited;
    } finally {
      await run.remove();
    }
  });

test("a zygote's groups (a nested support) are released without touching the instance's CPU group or the runs in it", async (t) => {
  const cpu = support.cpu;
  if (!cpu || cpu.version !== 1) return t.skip('no v1 cpu controller of ours on this host');
  // A live run of the instance, lowered into its CPU group (a TypeScript run, say).
  const run = createRunCgroup(support, `live-${process.pid}`, LIMITS)!;
  const helper = helperIn(run);
  let ended = false;
  void helper.exited.then(() => (ended = true));
  try {
    const pids = await populated(run, 2);
    await run.lowerCpu();
    for (const pid of pids) assert.equal(cpuGroupOf(pid), cpu.dir);
    // A zygote of the same instance retires meanwhile: its own groups go, nothing else.
    const zygote = openNestedSupport(support, `zygote-nested-${process.pid}`)!;
    assert.equal(zygote.cpu, cpu);
    await releaseCgroupSupport(zygote);
    assert.equal(existsSync(zygote.memory!.base), false);
    assert.equal(existsSync(zygote.pids!.base), false);
    assert.equal(existsSync(cpu.dir), true, "the instance's CPU group is still there");
    for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), true, `pid ${pid} of the live run survived`);
    assert.equal(ended, false);
  } finally {
    helper.child.kill('SIGTERM');
    await helper.exited;
    await run.remove();
  }
});
