// The sandboxes' shared CPU group on the real host, with the real sandbox helper: where it is, its
// weight, that a run's kill never reaches the other runs in it, and its default weight back only
// while a killed run is reaped before its answer. Needs root and a cpu controller of ours.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { defaultHostPaths } from '../host.js';
import { sandboxEnvironment } from '../plan/environment.js';
import {
  createRunCgroup,
  detectCgroupLayout,
  openCgroupSupport,
  releaseCgroupSupport,
  SANDBOX_CPU_WEIGHT,
  type CgroupSupport,
  type RunCgroup,
} from './cgroup.js';
import { spawnHelper, type SpawnedProcess } from './spawn-helper.js';

const layout = detectCgroupLayout();
const paths = defaultHostPaths();
const LIMITS = { memoryBytes: 64 * 1024 * 1024, maxProcesses: 8 };
let support: CgroupSupport;

before(() => {
  // The group outlives servers (it is shared): one left at the default weight must get the low one.
  for (const [parent, file, value] of [
    [layout.v1.cpu, 'cpu.shares', '1024'],
    [layout.v2, 'cpu.weight', '100'],
  ] as const) {
    if (parent && existsSync(join(parent, 'mcpworks-sandbox', file))) writeFileSync(join(parent, 'mcpworks-sandbox', file), value);
  }
  support = openCgroupSupport(layout);
});

after(async () => {
  await releaseCgroupSupport(support);
});

type Cpu = NonNullable<CgroupSupport['cpu']>;
const weightOf = (cpu: Cpu) => readFileSync(join(cpu.dir, cpu.version === 1 ? 'cpu.shares' : 'cpu.weight'), 'utf8').trim();

/** The helper in a run's groups (and the CPU group), running `sleep 60` until killed; `deadlineMs`: its own wall clock. */
function helperIn(run: RunCgroup, deadlineMs?: number): SpawnedProcess {
  const args = ['exec', ...run.procsFiles.flatMap((file) => ['--cgroup', file])];
  if (run.cpuProcsFile) args.push('--cpu-cgroup', run.cpuProcsFile);
  if (deadlineMs !== undefined) args.push('--deadline-ms', String(deadlineMs));
  return spawnHelper(paths.helper, [...args, '--', '/bin/sleep', '60'], {
    seccompProgram: paths.seccompProgram,
    env: sandboxEnvironment(),
  });
}

/** Waits (bounded by count, not time) until `run`'s first group holds `count` processes. */
async function populated(run: RunCgroup, count: number): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (readFileSync(run.procsFiles[0]!, 'utf8').split('\n').filter(Boolean).length >= count) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail('the helper and its program never joined the run group');
}

/** Alive and not being killed: no SIGKILL pending (the kill is queued before its sender exits), not a zombie. */
function untouched(pid: string): boolean {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false;
  }
  const field = (name: string) => /^(\S+):\s*(.*)$/m.exec(status.split('\n').find((line) => line.startsWith(`${name}:`)) ?? '')?.[2] ?? '';
  const sigkill = (mask: string) => (BigInt(`0x${mask || '0'}`) & 0x100n) !== 0n;
  return !/^[ZX]/.test(field('State')) && !sigkill(field('SigPnd')) && !sigkill(field('ShdPnd'));
}

const cpuGroupOf = (pid: number) => /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1];

test("the sandboxes' CPU group: a child of this process's own group at a quarter of a default weight; one run's kill spares the others in it", async (t) => {
  const cpu = support.cpu;
  if (!cpu) return t.skip('no cpu controller of ours on this host (not root, or not delegated)');
  const own = cpu.version === 1 ? layout.v1.cpu : layout.v2;
  assert.equal(dirname(cpu.dir), own?.replace(/\/$/, ''));
  assert.equal(weightOf(cpu), SANDBOX_CPU_WEIGHT[cpu.version]);
  if (cpu.version === 2) return;
  const first = createRunCgroup(support, `cpu-a-${process.pid}`, LIMITS)!;
  const second = createRunCgroup(support, `cpu-b-${process.pid}`, LIMITS)!;
  assert.equal(first.cpuProcsFile, join(cpu.dir, 'cgroup.procs'));
  const running = helperIn(first);
  // The second run's helper ends at its own deadline, killing everything in its run's groups.
  const ending = helperIn(second, 1);
  try {
    await populated(first, 2);
    assert.equal(join(dirname(cpu.dir), cpuGroupOf(running.child.pid!) ?? ''), cpu.dir);
    await ending.exited;
    const others = readFileSync(first.procsFiles[0]!, 'utf8').split('\n').filter(Boolean);
    assert.equal(others.length, 2);
    for (const pid of others) assert.ok(untouched(pid), `the other run's process ${pid} in the CPU group was not killed`);
  } finally {
    running.child.kill('SIGTERM');
    await running.exited;
    await first.remove();
    await second.remove();
  }
});

test('a reap before the answer gives the group its default weight while processes are left, and the low weight after', async (t) => {
  const cpu = support.cpu;
  if (!cpu) return t.skip('no cpu controller of ours on this host (not root, or not delegated)');
  const run = createRunCgroup(support, `reap-${process.pid}`, LIMITS)!;
  try {
    let helper = helperIn(run);
    await populated(run, 2);
    // The reap's first look runs before its first await: processes are there, so it boosts.
    const reaped = run.killUntilEmpty(2000, { boost: true });
    assert.equal(weightOf(cpu), cpu.version === 1 ? '1024' : '100');
    assert.equal(await reaped, true);
    assert.equal(weightOf(cpu), SANDBOX_CPU_WEIGHT[cpu.version]);
    await helper.exited;
    // A finished run's leftovers (the zygote's recycling) are reaped at the low weight.
    helper = helperIn(run);
    await populated(run, 2);
    const recycled = run.killUntilEmpty(2000);
    assert.equal(weightOf(cpu), SANDBOX_CPU_WEIGHT[cpu.version]);
    await recycled;
    await helper.exited;
  } finally {
    await run.remove();
  }
});
